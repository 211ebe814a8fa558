-- Orders, their lines and their history. Times are microseconds (timestamptz);
-- money is bigint minor units of the order's currency.
CREATE TABLE orders (
    id                   uuid PRIMARY KEY,
    customer_id          text        NOT NULL,
    state                text        NOT NULL,
    currency_code        text        NOT NULL,
    subtotal_minor       bigint      NOT NULL DEFAULT 0,
    total_minor          bigint      NOT NULL DEFAULT 0,
    shipping_address     jsonb,
    payment_reference    text,
    payment_amount_minor bigint,
    pay_time             timestamptz,
    carrier              text,
    tracking_number      text,
    ship_time            timestamptz,
    deliver_time         timestamptz,
    cancel_reason        text,
    cancel_time          timestamptz,
    refund_due           boolean     NOT NULL DEFAULT false,
    rejection_reason     text,
    -- Applied commands so far; every UPDATE is guarded by the old value.
    version              bigint      NOT NULL CHECK (version > 0),
    -- Length of the order's history (rejections included), so the next
    -- event's sequence is known without scanning order_events.
    last_event_seq       bigint      NOT NULL DEFAULT 0,
    create_time          timestamptz NOT NULL,
    update_time          timestamptz NOT NULL
);

-- ListOrders with no filter: ORDER BY create_time, id with the keyset
-- predicate (create_time, id) < ($1, $2), read forwards or backwards.
CREATE INDEX orders_create_time_id_idx ON orders (create_time DESC, id DESC);
-- ListOrders filtered by customer_id = $1, same keyset.
CREATE INDEX orders_customer_create_time_idx ON orders (customer_id, create_time DESC, id DESC);
-- ListOrders filtered by state = $1 (e.g. every PAID order to ship).
CREATE INDEX orders_state_create_time_idx ON orders (state, create_time DESC, id DESC);

CREATE TABLE order_line_items (
    order_id         uuid   NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    line_no          int    NOT NULL,
    sku              text   NOT NULL,
    name             text   NOT NULL,
    quantity         int    NOT NULL CHECK (quantity BETWEEN 1 AND 10000),
    unit_price_minor bigint NOT NULL CHECK (unit_price_minor >= 0),
    -- GetOrder/ListOrders load lines by order_id in line order.
    PRIMARY KEY (order_id, line_no)
);

CREATE TABLE order_events (
    order_id      uuid        NOT NULL REFERENCES orders (id) ON DELETE CASCADE,
    seq           bigint      NOT NULL CHECK (seq > 0),
    type          text        NOT NULL,
    from_state    text        NOT NULL,
    to_state      text        NOT NULL,
    command_id    text        NOT NULL,
    command       text        NOT NULL,
    reason        text        NOT NULL DEFAULT '',
    payload       jsonb       NOT NULL DEFAULT '{}',
    order_version bigint      NOT NULL,
    occur_time    timestamptz NOT NULL,
    -- ListOrderEvents reads an order's history in seq order; the key also
    -- makes a second writer of the same seq fail instead of forking history.
    PRIMARY KEY (order_id, seq)
);

-- History is append-only.
CREATE FUNCTION order_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'order_events is append-only';
END
$$;
CREATE TRIGGER order_events_append_only BEFORE UPDATE ON order_events
    FOR EACH ROW EXECUTE FUNCTION order_events_append_only();

-- The idempotency record: one row per command id, written in the same
-- transaction as the change it caused. Looked up only by command_id.
CREATE TABLE processed_commands (
    command_id   text        PRIMARY KEY,
    order_id     uuid        NOT NULL,
    command      text        NOT NULL,
    outcome      text        NOT NULL CHECK (outcome IN ('applied', 'rejected')),
    reason       text        NOT NULL DEFAULT '',
    -- sha256 of what the command asked for; a reused key with another
    -- request is reported, not applied.
    fingerprint  bytea       NOT NULL,
    processed_at timestamptz NOT NULL
);
