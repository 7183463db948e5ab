-- The public half of the site's session key (end-to-end encrypted sessions), from its registration.
ALTER TABLE sites ADD COLUMN session_key TEXT;
