-- The leader reads only what joined the queue since its last pass (`seq` above the last it saw).
CREATE INDEX workspace_queue_seq ON workspace_queue (seq);
