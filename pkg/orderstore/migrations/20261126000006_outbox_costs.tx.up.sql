-- Only a row the previous release writes (its envelope, no destination)
-- needs unwrapping: test that in the trigger's WHEN, so the processor's own
-- inserts never enter PL/pgSQL.
DROP TRIGGER watermill_outbox_unwrap ON watermill_outbox;
CREATE TRIGGER watermill_outbox_unwrap BEFORE INSERT ON watermill_outbox
    FOR EACH ROW WHEN (NEW.destination IS NULL AND NEW.payload IS NOT NULL)
    EXECUTE FUNCTION watermill_outbox_unwrap();
