DROP TRIGGER watermill_outbox_unwrap ON watermill_outbox;
CREATE TRIGGER watermill_outbox_unwrap BEFORE INSERT ON watermill_outbox
    FOR EACH ROW EXECUTE FUNCTION watermill_outbox_unwrap();
