-- The retention purge removes old FAILED and CANCELED deletions; the notes giving the reasons
-- staff acted on them (a cancel's reason, in their own words) were left behind for ever, naming
-- deletions that no longer exist. The notes stay append-only; the purge, in its transaction with
-- erasure.purging set, removes the notes of the deletions it removes, as it removes audit rows.
CREATE OR REPLACE FUNCTION erasure.reject_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND TG_TABLE_NAME IN ('audit_log', 'deletion_notes')
        AND current_setting('erasure.purging', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'erasure.% is append-only', TG_TABLE_NAME;
END
$$;

-- The notes of deletions purged before this version.
SET LOCAL erasure.purging = on;
DELETE FROM erasure.deletion_notes n
 WHERE NOT EXISTS (SELECT 1 FROM erasure.deletions d WHERE d.id = n.deletion_id);
SET LOCAL erasure.purging = off;
