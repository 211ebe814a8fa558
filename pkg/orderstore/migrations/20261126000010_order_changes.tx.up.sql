-- WatchOrder and GetOrder's min_version: every committed change of an
-- order is announced on the channel oms_order_changed as "{id}:{version}".
-- Each query process LISTENs once and fans the announcements out to its
-- watchers, who then read the order; nobody polls. NOTIFY is delivered at
-- commit, in commit order, and only if the transaction commits.
CREATE FUNCTION oms_order_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('oms_order_changed', NEW.id::text || ':' || NEW.version::text);
    RETURN NULL;
END
$$;
CREATE TRIGGER oms_order_changed AFTER INSERT OR UPDATE OF version ON orders
    FOR EACH ROW EXECUTE FUNCTION oms_order_changed();
