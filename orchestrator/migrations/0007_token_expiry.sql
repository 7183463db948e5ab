-- Every token made from now on expires (Unix milliseconds); tokens made before keep NULL.
ALTER TABLE tokens ADD COLUMN expires_at INTEGER;
