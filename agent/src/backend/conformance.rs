//! The conformance suite every backend passes (being written).
