-- Node drain: an operator takes an edge node out of placement before upgrading or removing it.

ALTER TABLE edge_nodes ADD COLUMN draining boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN edge_nodes.draining IS 'Set by POST /v1/nodes/{id}/drain: the node gets no new backends and stops its idle ones; cleared by a drain with draining=false.';

ALTER TABLE edge_nodes ADD COLUMN drain_requested_at timestamptz;
COMMENT ON COLUMN edge_nodes.drain_requested_at IS 'When the current drain was asked for (null while not draining).';

ALTER TABLE edge_nodes ADD COLUMN shutting_down boolean NOT NULL DEFAULT false;
COMMENT ON COLUMN edge_nodes.shutting_down IS 'The edge said in its last heartbeat that it is draining itself before it exits (SIGTERM): no new backends. Observation: the next start of the edge clears it.';

-- A drained node is empty once it runs no backend, live or still stopping: counted per node.
CREATE INDEX backends_draining_by_node ON backends (node_id) WHERE status = 'draining';
