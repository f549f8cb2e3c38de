-- Outcome events owed to the broker: one row per final deletion, written in the transaction that
-- ends the deletion and deleted once the broker confirms the event. Marking the deletion itself
-- as published rewrote its row and every one of its indexes (the partial index on
-- event_published_at made each such update a new row version); a row here costs one small
-- insert and one delete. No foreign key: both rows are written by the same statement, and the
-- check would lock the new deletion row once more for nothing.
CREATE TABLE erasure.event_outbox (
    id          bigserial PRIMARY KEY,
    deletion_id text NOT NULL,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
INSERT INTO erasure.event_outbox (deletion_id, queued_at)
SELECT id, completed_at FROM erasure.deletions
WHERE event_published_at IS NULL AND status IN ('DONE', 'FAILED')
ORDER BY completed_at;
DROP INDEX erasure.deletions_unpublished_idx;
ALTER TABLE erasure.deletions DROP COLUMN event_published_at;
