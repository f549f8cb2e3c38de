-- When the service started carrying a request out: the start of the transaction that erased it
-- (or, for a huge customer, of the first chunk's), shown on the console's timeline between
-- received and completed.
ALTER TABLE erasure.deletions ADD COLUMN started_at timestamptz;
