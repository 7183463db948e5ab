-- Usage ledger and project quotas. Timestamps are Unix milliseconds (UTC).

-- One row per (site, seq) an agent sent, stored once: a repeat of a stored pair is ignored.
-- `project` is the project the orchestrator holds for the workspace, not the agent's claim;
-- `counted` is 0 for records about a workspace that is not the site's (kept, never counted).
CREATE TABLE usage (
    site                          TEXT    NOT NULL,
    seq                           INTEGER NOT NULL,
    workspace                     TEXT    NOT NULL,
    project                       TEXT    NOT NULL,
    from_ms                       INTEGER NOT NULL,
    to_ms                         INTEGER NOT NULL,
    allocated_core_seconds        REAL    NOT NULL,
    used_cpu_seconds              REAL    NOT NULL,
    allocated_memory_gib_seconds  REAL    NOT NULL,
    used_memory_gib_seconds       REAL    NOT NULL,
    peak_memory_bytes             INTEGER NOT NULL,
    gpu_seconds                   REAL    NOT NULL,
    counted                       INTEGER NOT NULL,
    received_ms                   INTEGER NOT NULL,
    PRIMARY KEY (site, seq)
);
CREATE INDEX usage_project_to ON usage (project, to_ms);

-- The highest seq per site below which nothing is missing: what agents are told is stored.
CREATE TABLE usage_acks (
    site           TEXT PRIMARY KEY,
    acked_through  INTEGER NOT NULL
);

-- Budgets per project; NULL means no limit on that resource.
CREATE TABLE quotas (
    project     TEXT PRIMARY KEY,
    core_hours  REAL,
    gpu_hours   REAL,
    updated_ms  INTEGER NOT NULL
);
