//! Store tests on in-memory SQLite.
