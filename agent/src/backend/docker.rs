//! docker backend (being written)
