-- The ledger export reads the final deletions in the order they ended, from a point on: by
-- this index, a page at a time, never the whole table.
CREATE INDEX deletions_final_completed_idx ON erasure.deletions (completed_at, id)
    WHERE status IN ('DONE', 'FAILED', 'CANCELED');
