-- WatchOrder, GetOrder's min_version and WaitOperation: a committed change
-- of an order is announced on the channel oms_order_changed as
-- "{id}:{version}", and a done operation on oms_operation_done as the hex
-- of its id, but only while some query process waits on that order. Each
-- query process LISTENs once and fans the announcements out to its
-- waiters, who then read. NOTIFY is delivered at commit, in commit order,
-- and only if the transaction commits.
--
-- Why only watched orders: PostgreSQL serialises the commits of every
-- transaction that has notified on one global lock, held through the
-- commit's WAL flush. Notifying in every command's transaction took the
-- processor's create statement under pgbench at 8 clients from about
-- 3,100 to 2,050 tps, and the drain from 1,877 to 1,194 orders/s, though
-- almost no order is watched at any moment.
--
-- A waiter registers itself here (orderstore.WatchOrder) before it reads.
-- UNLOGGED: a watch lives for seconds, its owner renews it, and a crash
-- that empties the table drops the waiters' LISTEN connections too, so
-- they re-read and register again; the table costs no WAL.
CREATE UNLOGGED TABLE order_watches (
    order_id   uuid        NOT NULL,
    -- Who waits: a query process's random id and a counter of its own.
    watcher    text        NOT NULL,
    -- A watch whose owner died lapses; the query processes purge it.
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, watcher)
);

-- The triggers run at the end of the command's statement, after it holds
-- the order's row lock, and their lookup takes a fresh snapshot: a watch
-- registered before the command got the lock is seen, and the
-- registration waits for a command that holds it (orderstore.WatchOrder).
CREATE FUNCTION oms_order_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM order_watches WHERE order_id = NEW.id AND expires_at > now()) THEN
        PERFORM pg_notify('oms_order_changed', NEW.id::text || ':' || NEW.version::text);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER oms_order_changed AFTER INSERT OR UPDATE OF version ON orders
    FOR EACH ROW EXECUTE FUNCTION oms_order_changed();

CREATE FUNCTION oms_operation_done() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM order_watches WHERE order_id = NEW.order_id AND expires_at > now()) THEN
        PERFORM pg_notify('oms_operation_done', encode(NEW.id, 'hex'));
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER oms_operation_done AFTER INSERT OR UPDATE OF done ON operations
    FOR EACH ROW WHEN (NEW.done) EXECUTE FUNCTION oms_operation_done();
