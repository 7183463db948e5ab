-- A batch workspace's working directory and environment (JSON); NULL for interactive ones.
ALTER TABLE workspaces ADD COLUMN launch TEXT;

-- GA4GH TES tasks. Each is a batch workspace with the same id, written in the same
-- transaction; `body` is the task as accepted (no visas), `seq` orders pages newest first.
CREATE TABLE tes_tasks (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    body TEXT NOT NULL,
    warnings TEXT NOT NULL,
    canceled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);
CREATE INDEX tes_tasks_owner ON tes_tasks (owner, seq);
CREATE INDEX tes_tasks_name ON tes_tasks (name, seq);

-- A task's tags, for `tag_key` / `tag_value` filters.
CREATE TABLE tes_task_tags (
    seq BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (seq, key)
);
CREATE INDEX tes_task_tags_key ON tes_task_tags (key, value, seq);
