-- The relay's claim walks the outbox in "offset" order. Relayed rows are
-- deleted, and until VACUUM reclaims them their index entries stay. With
-- no statistics (a new table, or autovacuum off or behind) the planner
-- takes a bitmap scan of watermill_outbox_group_idx plus a sort: it visits
-- every dead row on every claim and, unlike a plain index scan, never marks
-- their index entries dead, so each claim costs more than the last (20,000
-- relayed rows: 700 buffers and 2.3 ms a claim; with a backlog, 50 ms).
--
-- An index in claim order, walked by a plain index scan, stops at the
-- first batch of claimable rows and marks the dead entries it passes, so
-- the next claim skips them.
CREATE INDEX watermill_outbox_ready_idx ON watermill_outbox ("offset") WHERE parked_at IS NULL;

-- The claim statement itself, unchanged but for its planner settings: a
-- function is the one place PostgreSQL lets a statement carry them without
-- a transaction around it. The relay (pkg/outbox) decides what to claim and
-- what to do with it; this only leases rows.
CREATE FUNCTION watermill_outbox_claim(batch integer, lease_ms bigint, relay text)
RETURNS TABLE ("offset" bigint, uuid text, destination text, group_id text, body bytea, metadata json, attempts integer)
LANGUAGE sql VOLATILE
SET enable_bitmapscan = off
SET enable_seqscan = off
SET enable_sort = off
AS $$
WITH claimable AS (
    SELECT o."offset" FROM watermill_outbox o
    WHERE o.parked_at IS NULL
      AND (o.leased_until IS NULL OR o.leased_until < now())
      AND (o.next_attempt_at IS NULL OR o.next_attempt_at <= now())
      AND (o.group_id IS NULL OR NOT EXISTS (
            SELECT 1 FROM watermill_outbox p
            WHERE p.group_id = o.group_id AND p.parked_at IS NULL AND p."offset" <> o."offset"
              AND (p."offset" < o."offset" OR p.leased_until >= now())))
    ORDER BY o."offset"
    LIMIT batch
    FOR UPDATE OF o SKIP LOCKED
)
UPDATE watermill_outbox o
SET attempts = o.attempts + 1, leased_until = now() + lease_ms * interval '1 millisecond', leased_by = relay
FROM claimable c
WHERE o."offset" = c."offset"
RETURNING o."offset", o.uuid, o.destination, o.group_id, o.body, o.metadata, o.attempts
$$;

-- Where autovacuum runs (as in production), reclaim relayed rows early
-- rather than at the default 20 % of the table.
ALTER TABLE watermill_outbox SET (
    autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 5000,
    autovacuum_analyze_scale_factor = 0, autovacuum_analyze_threshold = 5000);
