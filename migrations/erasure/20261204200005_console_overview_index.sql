-- The console's overview counts the last 30 days' deletions by status: read from this index
-- alone (an index-only scan of the range), never the table.
CREATE INDEX deletions_created_status_idx ON erasure.deletions (created_at, status);
