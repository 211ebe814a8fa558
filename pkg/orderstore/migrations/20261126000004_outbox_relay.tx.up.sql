-- The outbox relay (pkg/outbox) claims rows with short leases instead of
-- holding row locks across the send to SQS, and parks a row that cannot be
-- sent so it stops blocking its group. The table keeps its name, so the
-- privilege check and the release still running (see below) keep working.
ALTER TABLE watermill_outbox
    ALTER COLUMN uuid TYPE text,
    -- The queue the message goes to.
    ADD COLUMN destination     text,
    -- The FIFO group id (queue.MetaGroupID); rows of one group are relayed
    -- one at a time in "offset" order. NULL: no order to keep.
    ADD COLUMN group_id        text,
    -- The message payload, as is. payload (json) is now only the envelope
    -- an older release writes; the trigger below unwraps it.
    ADD COLUMN body            bytea,
    -- Claims so far, failed or not; a claim increments it, so it also
    -- fences a relay whose lease expired from overwriting a newer claim.
    ADD COLUMN attempts        integer NOT NULL DEFAULT 0,
    -- Backoff after a failed send.
    ADD COLUMN next_attempt_at timestamptz,
    -- A relay is sending the row until then; after it, another may.
    ADD COLUMN leased_until    timestamptz,
    ADD COLUMN leased_by       text,
    -- Set aside: the row is no longer relayed and no longer blocks its
    -- group. Clearing it re-drives the row (docs/operations.md, Outbox).
    ADD COLUMN parked_at       timestamptz,
    ADD COLUMN last_error      text;

-- Rows written by the forwarder: unwrap its envelope. The queue schema
-- deleted rows on ack, so acked rows are gone already; drop any anyway.
DELETE FROM watermill_outbox WHERE acked;
UPDATE watermill_outbox SET
    destination = COALESCE(payload->>'destination_topic', ''),
    uuid        = COALESCE(payload->>'uuid', uuid),
    body        = COALESCE(decode(payload->>'payload', 'base64'), ''::bytea),
    metadata    = COALESCE(payload->'metadata', '{}'::json),
    group_id    = CASE WHEN json_typeof(payload->'metadata') = 'object'
                       THEN payload->'metadata'->>'oms_group_id' END,
    parked_at   = CASE WHEN COALESCE(payload->>'destination_topic', '') = '' THEN now() END,
    last_error  = CASE WHEN COALESCE(payload->>'destination_topic', '') = ''
                       THEN 'migration: not a forwarder envelope' END,
    payload     = NULL;

-- Dropping acked also stops a forwarder of the release still running: its
-- SELECT ... WHERE acked = false fails (it logs and backs off) instead of
-- taking rows it can no longer read and acknowledging them unsent.
ALTER TABLE watermill_outbox
    DROP COLUMN acked,
    ALTER COLUMN destination SET NOT NULL,
    ALTER COLUMN body SET NOT NULL,
    ALTER COLUMN body SET DEFAULT ''::bytea;

-- The release still running writes the forwarder's envelope
-- (uuid, payload, metadata) until it is replaced: unwrap it on insert.
-- A later migration may drop this once no such release can run.
CREATE FUNCTION watermill_outbox_unwrap() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.destination IS NULL AND NEW.payload IS NOT NULL THEN
        NEW.destination := NEW.payload->>'destination_topic';
        NEW.uuid        := COALESCE(NEW.payload->>'uuid', NEW.uuid);
        NEW.body        := COALESCE(decode(NEW.payload->>'payload', 'base64'), ''::bytea);
        NEW.metadata    := COALESCE(NEW.payload->'metadata', '{}'::json);
        IF json_typeof(NEW.metadata) = 'object' THEN
            NEW.group_id := NEW.metadata->>'oms_group_id';
        END IF;
        NEW.payload     := NULL;
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER watermill_outbox_unwrap BEFORE INSERT ON watermill_outbox
    FOR EACH ROW EXECUTE FUNCTION watermill_outbox_unwrap();

-- The claim: is a row the oldest unparked one of its group, and is any row
-- of the group leased?
CREATE INDEX watermill_outbox_group_idx ON watermill_outbox (group_id, "offset") WHERE parked_at IS NULL;
-- outbox.Parked, oldest first.
CREATE INDEX watermill_outbox_parked_idx ON watermill_outbox ("offset") WHERE parked_at IS NOT NULL;
