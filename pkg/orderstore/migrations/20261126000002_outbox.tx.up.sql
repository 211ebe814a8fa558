-- The transactional outbox, in the layout of watermill-sql's
-- PostgreSQLQueueSchema for the topic "outbox" (so the processor's forwarder
-- reads it as is). The processor inserts into it in each command's own
-- transaction; the forwarder relays rows to SQS and deletes them on ack.
CREATE TABLE watermill_outbox (
    "offset"   bigserial PRIMARY KEY,
    uuid       varchar(36) NOT NULL,
    payload    json DEFAULT NULL,
    metadata   json DEFAULT NULL,
    acked      boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT CURRENT_TIMESTAMP
);
