-- The site's start timeout (`[reconcile] start_timeout_s`), sent in its registration.
ALTER TABLE sites ADD COLUMN start_timeout_s INTEGER NOT NULL DEFAULT 120;
