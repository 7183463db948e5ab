-- Each site's consent state as its agent last reported it (JSON): its datasets' releases, the
-- withdrawals it applied and which release each running workspace mounts. Counts and digests
-- only; participant IDs never leave the site.
CREATE TABLE site_consent (
    site TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    reported_at BIGINT NOT NULL
);
