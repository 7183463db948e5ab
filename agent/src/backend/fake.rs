//! fake backend (being written)
