-- The queue: one row per queued workspace (its record is in workspaces, state 'queued'), removed
-- in the transaction that places it, and left behind harmlessly when it ends unplaced.
CREATE TABLE workspace_queue (
    workspace TEXT PRIMARY KEY,
    -- The revision its create took: its place in arrival order.
    seq BIGINT NOT NULL,
    -- The site the request pinned, if it did.
    pinned TEXT,
    -- Each visa's value (grant URL), in the order of the workspace's visa_refs, as JSON.
    grants TEXT NOT NULL,
    -- Its lifetime once placed, and the earliest visa expiry (Unix milliseconds).
    duration_ms BIGINT NOT NULL,
    visa_exp_ms BIGINT NOT NULL
);

-- What the platform set per project: its priority and fair-share weight.
CREATE TABLE project_scheduling (
    project TEXT PRIMARY KEY,
    priority BIGINT NOT NULL,
    share BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL
);
