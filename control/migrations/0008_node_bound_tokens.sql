-- Node-bound edge tokens: a token with a node_id speaks (heartbeats, status reports, journal
-- replays) only for that node, and once a node has one, no other edge token speaks for it.

ALTER TABLE api_tokens ADD COLUMN node_id text;
COMMENT ON COLUMN api_tokens.node_id IS 'Edge tokens only: the one edge node this token may speak for (heartbeat, status, journal); null = unbound (it may enrol nodes that have no bound token yet).';

CREATE INDEX api_tokens_node ON api_tokens (node_id) WHERE node_id IS NOT NULL AND revoked_at IS NULL;
