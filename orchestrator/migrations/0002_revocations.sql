-- Revocations: the deny-list every agent receives. A row is never changed or removed. Timestamps
-- are Unix milliseconds (UTC).

CREATE TABLE revocations (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    dataset   TEXT,
    subject   TEXT,
    project   TEXT,
    visa_jti  TEXT,
    reason    TEXT NOT NULL,
    at        INTEGER NOT NULL,
    -- The revision it took: a new revocation wakes every site's long-poll.
    revision  INTEGER NOT NULL
);
