-- The edge domain each edge node serves subdomain routing under, from its heartbeat, so the
-- control plane's connect answer carries `subdomain_url` as the edge's own answer does.

ALTER TABLE edge_nodes ADD COLUMN edge_domain text;
COMMENT ON COLUMN edge_nodes.edge_domain IS 'The node''s domain for subdomain routing (<backend-id>.<edge_domain>), from its heartbeat; null = path routing only (liveness data: not replicated).';
