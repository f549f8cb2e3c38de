-- The audit rows of one deletion (the console's page of a deletion, its evidence pack) are
-- found by request id or by deletion id: the second had no index, and at 30 million audit rows
-- each page read the whole log (seconds).
CREATE INDEX audit_log_deletion_idx ON erasure.audit_log (deletion_id) WHERE deletion_id IS NOT NULL;
