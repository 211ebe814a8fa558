-- A command's outcome as a long-running operation (AIP-151): the query
-- service serves it as operations/{name}, where the name (pkg/operation)
-- carries this id. It is written in the command's own statement (orderstore
-- Save), so it never disagrees with the order, and by the dead-letter path.
-- No row yet: the command is still queued.
CREATE TABLE operations (
    -- pkg/operation.Key: a hash of the principal, the request id and what
    -- the request asks for. A retry of the request has the same id; a
    -- reused key with a different request has another.
    id            bytea       PRIMARY KEY CHECK (length(id) = 16),
    principal     text        NOT NULL,
    command_id    text        NOT NULL,
    order_id      uuid        NOT NULL,
    command       text        NOT NULL,
    done          boolean     NOT NULL DEFAULT false,
    -- google.rpc.Code when done: 0 applied, else why not.
    code          integer     NOT NULL DEFAULT 0,
    message       text        NOT NULL DEFAULT '',
    -- The last failed attempt's error class while retrying.
    error_class   text        NOT NULL DEFAULT '',
    attempts      integer     NOT NULL DEFAULT 0,
    -- The order's version after the command (GetOrder min_version).
    order_version bigint      NOT NULL DEFAULT 0,
    accept_time   timestamptz NOT NULL,
    update_time   timestamptz NOT NULL,
    CHECK (done OR code = 0)
);
-- ListOperations filtered by order, oldest first, in keyset pages.
CREATE INDEX operations_order_idx ON operations (order_id, accept_time, id);
-- The retention purge of done operations.
CREATE INDEX operations_done_update_time_idx ON operations (update_time) WHERE done;
-- A done operation is announced on oms_operation_done by migration 10's
-- trigger, only while someone waits on its order.
