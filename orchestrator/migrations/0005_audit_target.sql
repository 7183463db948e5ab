-- Entries by what they are about: a replayed create looks up whether its creation is logged.
CREATE INDEX audit_target ON audit (target, action);
