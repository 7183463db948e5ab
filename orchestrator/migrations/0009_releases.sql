-- What a site's agent serves beyond sessions (the results airlock), from its registration.
ALTER TABLE sites ADD COLUMN features TEXT NOT NULL DEFAULT '[]';

-- Release requests of the results airlock: digests, checks and decisions. The files themselves
-- stay in the site's airlock store. `body` is the whole request as the API shows it; the other
-- columns are what lists filter on.
CREATE TABLE release_requests (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    project TEXT NOT NULL,
    site TEXT NOT NULL,
    requester TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX release_requests_workspace ON release_requests (workspace_id);
CREATE INDEX release_requests_state ON release_requests (state, created_at);
CREATE INDEX release_requests_owner ON release_requests (owner, created_at);
