-- The hash-chained audit log and the API tokens kept in the database (config tokens stay in the
-- config). Timestamps are Unix milliseconds (UTC).

-- One row per event; `hash` chains each row to the one before (see basho_core::audit).
CREATE TABLE audit (
    seq        INTEGER PRIMARY KEY NOT NULL,
    at         INTEGER NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

-- Only the SHA-256 of a token is kept; the token itself is shown once, when created.
CREATE TABLE tokens (
    id          TEXT PRIMARY KEY NOT NULL,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    subject     TEXT,
    site        TEXT,
    name        TEXT,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);
