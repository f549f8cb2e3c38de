-- Who did what: the API key that submitted a deletion (over the API or the console), and the key
-- that each audit row's action was taken on the authority of (the submitting key for the
-- request's outcome, the acting key for a cancel, a preview, and the like). Its id, and its
-- name as it was then (a name can be given to a new key once the old one is revoked). Null
-- where no key was involved: requests from the queue, the command line and a ledger replay.
ALTER TABLE erasure.deletions
    ADD COLUMN requested_by_key_id text,
    ADD COLUMN requested_by_key_name text,
    ADD CONSTRAINT deletions_key_named_whole
        CHECK ((requested_by_key_id IS NULL) = (requested_by_key_name IS NULL));
-- Adding columns rewrites no row, so the append-only trigger is not involved and every sealed
-- row keeps its hash: a seal hashes the key only when a row has one.
ALTER TABLE erasure.audit_log
    ADD COLUMN key_id text,
    ADD COLUMN key_name text,
    ADD CONSTRAINT audit_log_key_named_whole CHECK ((key_id IS NULL) = (key_name IS NULL));
