-- basho orchestrator store, first schema. Timestamps are Unix milliseconds (UTC); lists and
-- structs are JSON text.

CREATE TABLE workspaces (
    id          TEXT PRIMARY KEY NOT NULL,
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
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revision    INTEGER NOT NULL
);

CREATE INDEX workspaces_site_state ON workspaces (site, state);
CREATE INDEX workspaces_site_revision ON workspaces (site, revision);
CREATE INDEX workspaces_project ON workspaces (project);
CREATE INDEX workspaces_state_expires ON workspaces (state, expires_at);

CREATE TABLE idempotency_keys (
    key           TEXT PRIMARY KEY NOT NULL,
    request_hash  TEXT NOT NULL,
    workspace_id  TEXT NOT NULL REFERENCES workspaces (id),
    created_at    INTEGER NOT NULL
);

CREATE TABLE sites (
    name          TEXT PRIMARY KEY NOT NULL,
    backend       TEXT NOT NULL,
    version       TEXT NOT NULL,
    datasets      TEXT NOT NULL,
    capacity      TEXT NOT NULL,
    images        TEXT NOT NULL,
    registered_at INTEGER NOT NULL,
    last_contact  INTEGER NOT NULL
);

-- One row: the last revision handed out. Every change to a workspace takes the next one, so a
-- site's revision is the highest revision among its workspaces.
CREATE TABLE revision (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    value  INTEGER NOT NULL
);
INSERT INTO revision (id, value) VALUES (1, 0);
