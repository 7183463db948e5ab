-- Which replica holds each site's session tunnel: another replica relays sessions to it.
CREATE TABLE tunnel_holders (
    site     TEXT PRIMARY KEY,
    url      TEXT   NOT NULL,
    replica  TEXT   NOT NULL,
    since    BIGINT NOT NULL
);
