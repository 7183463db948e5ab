-- basho orchestrator store on PostgreSQL: the same tables as the SQLite schema (migrations/), in
-- one step. Timestamps are Unix milliseconds (UTC); lists and structs are JSON text, as on SQLite,
-- so both stores share one row mapping.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY,
    project     TEXT NOT NULL,
    owner       TEXT NOT NULL,
    template    TEXT NOT NULL,
    site        TEXT NOT NULL,
    state       TEXT NOT NULL,
    message     TEXT,
    datasets    TEXT NOT NULL,
    resources   TEXT NOT NULL,
    visas       TEXT NOT NULL,
    visa_refs   TEXT NOT NULL,
    image       TEXT NOT NULL,
    command     TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revision    BIGINT NOT NULL
);

CREATE INDEX workspaces_site_state ON workspaces (site, state);
CREATE INDEX workspaces_site_revision ON workspaces (site, revision);
CREATE INDEX workspaces_project ON workspaces (project);
CREATE INDEX workspaces_state_expires ON workspaces (state, expires_at);

CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY,
    request_hash  TEXT NOT NULL,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    created_at    BIGINT NOT NULL
);

CREATE TABLE sites (
    name          TEXT PRIMARY KEY,
    backend       TEXT NOT NULL,
    version       TEXT NOT NULL,
    datasets      TEXT NOT NULL,
    capacity      TEXT NOT NULL,
    images        TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_contact  BIGINT NOT NULL
);

-- One row: the last revision handed out. Taking the next one locks the row until commit, which
-- also orders revocations (their seq is drawn after it) across replicas.
CREATE TABLE revision (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  BIGINT NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);

-- Revocations: never changed or removed.
CREATE TABLE revocations (
    seq       BIGSERIAL PRIMARY KEY,
    dataset   TEXT,
    subject   TEXT,
    project   TEXT,
    visa_jti  TEXT,
    reason    TEXT NOT NULL,
    at        BIGINT NOT NULL,
    revision  BIGINT NOT NULL
);

-- The hash-chained audit log; appends hold an advisory transaction lock so every replica
-- extends one linear chain.
CREATE TABLE audit (
    seq        BIGINT PRIMARY KEY,
    at         BIGINT NOT NULL,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    target     TEXT NOT NULL,
    detail     TEXT NOT NULL,
    prev_hash  TEXT NOT NULL,
    hash       TEXT NOT NULL
);

CREATE TABLE tokens (
    id          TEXT PRIMARY KEY,
    hash        TEXT NOT NULL UNIQUE,
    role        TEXT NOT NULL,
    subject     TEXT,
    site        TEXT,
    name        TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE usage (
    site                          TEXT             NOT NULL,
    seq                           BIGINT           NOT NULL,
    workspace                     TEXT             NOT NULL,
    project                       TEXT             NOT NULL,
    from_ms                       BIGINT           NOT NULL,
    to_ms                         BIGINT           NOT NULL,
    allocated_core_seconds        DOUBLE PRECISION NOT NULL,
    used_cpu_seconds              DOUBLE PRECISION NOT NULL,
    allocated_memory_gib_seconds  DOUBLE PRECISION NOT NULL,
    used_memory_gib_seconds       DOUBLE PRECISION NOT NULL,
    peak_memory_bytes             BIGINT           NOT NULL,
    gpu_seconds                   DOUBLE PRECISION NOT NULL,
    counted                       BOOLEAN          NOT NULL,
    received_ms                   BIGINT           NOT NULL,
    PRIMARY KEY (site, seq)
);
CREATE INDEX usage_project_to ON usage (project, to_ms);

CREATE TABLE usage_acks (
    site           TEXT PRIMARY KEY,
    acked_through  BIGINT NOT NULL
);

CREATE TABLE quotas (
    project     TEXT PRIMARY KEY,
    core_hours  DOUBLE PRECISION,
    gpu_hours   DOUBLE PRECISION,
    updated_ms  BIGINT NOT NULL
);
