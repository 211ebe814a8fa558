-- Principals: who created an order, who sent each command, and idempotency
-- keys scoped to the principal that sent them (as Stripe scopes them to the
-- account), so one caller's key never touches another caller's orders.

-- The Actor.ID that created the order ('' for orders from before
-- principals): a service client owns the orders it created.
ALTER TABLE orders ADD COLUMN created_by text NOT NULL DEFAULT '';
-- ListOrders for a service client without the staff scope.
CREATE INDEX orders_created_by_create_time_idx ON orders (created_by, create_time DESC, id DESC);

-- Who sent the command an entry records (audit; also scopes the lookup of
-- a recorded reused-key refusal).
ALTER TABLE order_events ADD COLUMN actor text NOT NULL DEFAULT '';
-- At most one rejection per (order version, command kind) is recorded, so
-- the bound check reads the order's history through its key.

ALTER TABLE processed_commands ADD COLUMN principal text NOT NULL DEFAULT '';
ALTER TABLE processed_commands DROP CONSTRAINT processed_commands_pkey;
ALTER TABLE processed_commands ADD PRIMARY KEY (principal, command_id);
-- refused: the principal may not touch the order; nothing else was written.
ALTER TABLE processed_commands DROP CONSTRAINT processed_commands_outcome_check;
ALTER TABLE processed_commands ADD CONSTRAINT processed_commands_outcome_check
    CHECK (outcome IN ('applied', 'rejected', 'refused'));
