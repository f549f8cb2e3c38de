-- Retention of the service's own records. A purge removes the audit rows of old seals and
-- records it in the sealed chain itself: a purge seal, signed like the others, saying through
-- which seal the rows were removed, how many, and why. `erasure audit verify` then checks those
-- seals (whole, signed, linked) but not their rows.
ALTER TABLE erasure.audit_seals ADD COLUMN purged_through bigint;
ALTER TABLE erasure.audit_seals ADD COLUMN purged_rows bigint
    CHECK ((purged_through IS NULL) = (purged_rows IS NULL));
ALTER TABLE erasure.audit_seals DROP CONSTRAINT audit_seals_covers_transactions;
ALTER TABLE erasure.audit_seals ADD CONSTRAINT audit_seals_covers_transactions
    CHECK (xid_from < xid_to
        OR ((redaction_id IS NOT NULL OR purged_through IS NOT NULL) AND xid_from = xid_to));

-- The audit log stays append-only; only the purge, in its own transaction with
-- erasure.purging set, may remove rows (and its purge seal says so).
CREATE OR REPLACE FUNCTION erasure.reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME = 'audit_log'
        AND current_setting('erasure.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'erasure.audit_log is append-only';
END
$$;

-- Final deletions in the order they ended (the purge of old ones reads them so too).
CREATE INDEX deletions_final_status_completed_idx ON erasure.deletions (status, completed_at)
    WHERE status IN ('FAILED', 'CANCELED');
