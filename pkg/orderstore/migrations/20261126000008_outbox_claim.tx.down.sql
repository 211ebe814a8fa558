ALTER TABLE watermill_outbox RESET (
    autovacuum_vacuum_scale_factor, autovacuum_vacuum_threshold,
    autovacuum_analyze_scale_factor, autovacuum_analyze_threshold);
DROP FUNCTION watermill_outbox_claim(integer, bigint, text);
DROP INDEX watermill_outbox_ready_idx;
