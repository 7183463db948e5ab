-- Federated jobs: one question answered across several sites. The job as the API shows it and
-- its aggregation step's spec, as JSON; no visa is kept (each step's workspace holds its own).
CREATE TABLE federated_jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- The Idempotency-Key of the request that made it, and the SHA-256 of that request.
    idempotency_key TEXT UNIQUE,
    request_hash TEXT
);
CREATE INDEX federated_jobs_state ON federated_jobs (state);
