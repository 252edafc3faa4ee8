-- The ready warm-pool members each edge node reports in its heartbeat, by template id: placement's
-- tie-break between equally loaded nodes of a region ("this node can start this template fast").

ALTER TABLE edge_nodes ADD COLUMN warm_pools jsonb NOT NULL DEFAULT '{}';
COMMENT ON COLUMN edge_nodes.warm_pools IS 'Ready, unclaimed warm-pool members by template id ({"tp-…": n}), from the node''s last heartbeat; a tie-break in placement only (liveness data: not replicated).';
