DELETE FROM processed_commands WHERE outcome = 'refused';
ALTER TABLE processed_commands DROP CONSTRAINT processed_commands_outcome_check;
ALTER TABLE processed_commands ADD CONSTRAINT processed_commands_outcome_check
    CHECK (outcome IN ('applied', 'rejected'));
-- Keys were per principal; keep the first use of each key.
DELETE FROM processed_commands p USING processed_commands q
    WHERE p.command_id = q.command_id AND (p.processed_at, p.principal) > (q.processed_at, q.principal);
ALTER TABLE processed_commands DROP CONSTRAINT processed_commands_pkey;
ALTER TABLE processed_commands ADD PRIMARY KEY (command_id);
ALTER TABLE processed_commands DROP COLUMN principal;
ALTER TABLE order_events DROP COLUMN actor;
DROP INDEX orders_created_by_create_time_idx;
ALTER TABLE orders DROP COLUMN created_by;
