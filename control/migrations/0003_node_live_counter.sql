-- Each node's live-backend count kept by a trigger, so choosing a node does not count backends.

ALTER TABLE edge_nodes ADD COLUMN live_backends integer NOT NULL DEFAULT 0;
COMMENT ON COLUMN edge_nodes.live_backends IS 'Backends on the node that are scheduled, starting or ready; kept by a trigger on backends.';

UPDATE edge_nodes n SET live_backends = (
    SELECT count(*) FROM backends b
    WHERE b.node_id = n.id AND b.status IN ('scheduled', 'starting', 'ready'));

CREATE FUNCTION backends_count_live() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    was_live boolean := TG_OP = 'UPDATE' AND OLD.status IN ('scheduled', 'starting', 'ready');
    is_live boolean := NEW.status IN ('scheduled', 'starting', 'ready');
BEGIN
    IF is_live AND NOT was_live THEN
        UPDATE edge_nodes SET live_backends = live_backends + 1 WHERE id = NEW.node_id;
    ELSIF was_live AND NOT is_live THEN
        UPDATE edge_nodes SET live_backends = live_backends - 1 WHERE id = NEW.node_id;
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION backends_count_live() IS 'Keeps edge_nodes.live_backends equal to the node''s live backends.';

CREATE TRIGGER backends_live_count AFTER INSERT OR UPDATE OF status ON backends
    FOR EACH ROW EXECUTE FUNCTION backends_count_live();
