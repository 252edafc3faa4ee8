-- Status history written by the database itself, so no code path can change a status without it.

CREATE FUNCTION backends_record_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.status IS DISTINCT FROM OLD.status THEN
        INSERT INTO backend_status_history (backend_id, status, reason, at)
        VALUES (NEW.id, NEW.status,
                CASE WHEN NEW.status IN ('draining', 'terminated') THEN NEW.termination_reason END,
                NEW.status_changed_at);
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION backends_record_status() IS 'Appends a backend_status_history row for every new status of a backend.';

CREATE TRIGGER backends_status_history AFTER INSERT OR UPDATE OF status ON backends
    FOR EACH ROW EXECUTE FUNCTION backends_record_status();
