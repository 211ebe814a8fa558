-- Back to the forwarder's layout: every row, parked ones included (the
-- forwarder retries them like any other), becomes an envelope again.
DROP TRIGGER watermill_outbox_unwrap ON watermill_outbox;
DROP FUNCTION watermill_outbox_unwrap();
ALTER TABLE watermill_outbox ADD COLUMN acked boolean NOT NULL DEFAULT false;
UPDATE watermill_outbox SET
    payload  = json_build_object(
        'destination_topic', destination,
        'uuid', uuid,
        -- Go's encoding/json reads []byte as unbroken standard base64.
        'payload', replace(encode(body, 'base64'), E'\n', ''),
        'metadata', metadata),
    -- The envelope's own id; the message's is inside.
    uuid     = gen_random_uuid()::text,
    metadata = '{}'::json;
ALTER TABLE watermill_outbox
    DROP COLUMN destination,
    DROP COLUMN group_id,
    DROP COLUMN body,
    DROP COLUMN attempts,
    DROP COLUMN next_attempt_at,
    DROP COLUMN leased_until,
    DROP COLUMN leased_by,
    DROP COLUMN parked_at,
    DROP COLUMN last_error,
    ALTER COLUMN uuid TYPE varchar(36);
