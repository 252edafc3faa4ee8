-- The executors each edge node runs, from its heartbeat, so connect can refuse a template whose
-- executor the chosen region's nodes lack instead of leaving its backend `scheduled`.

ALTER TABLE edge_nodes ADD COLUMN executors text[] NOT NULL DEFAULT '{process}';
COMMENT ON COLUMN edge_nodes.executors IS 'Executors the node runs (process, nomad), from its heartbeat; an edge that does not say runs process only (liveness data: not replicated).';
