-- A request for an identifier that names nobody recorded it as `related_object_id`: personal
-- data of someone who may not even be a customer, kept for good. The keyed hash of the
-- identifier (`requested_id_hash`) is all the service keeps of it now; the clear values go.
UPDATE erasure.deletions SET related_object_id = NULL
WHERE status = 'FAILED' AND error_key = 'not_found' AND related_object_id IS NOT NULL;

-- The same values in the audit log, which is append-only and sealed: the rows are redacted
-- here, with the trigger that refuses changes set aside for this statement alone, and the
-- redaction is recorded so that the sealer seals it (a redaction seal names each row and its
-- new hash, and why) and `erasure audit verify` accepts the change and says what it was.
DO $$
DECLARE
    redacted bigint[];
BEGIN
    SELECT array_agg(a.id ORDER BY a.id) INTO redacted
    FROM erasure.audit_log a JOIN erasure.deletions d ON d.id = a.deletion_id
    WHERE d.status = 'FAILED' AND d.error_key = 'not_found' AND a.related_object_id IS NOT NULL;
    IF redacted IS NOT NULL THEN
        ALTER TABLE erasure.audit_log DISABLE TRIGGER USER;
        UPDATE erasure.audit_log SET related_object_id = NULL WHERE id = ANY (redacted);
        ALTER TABLE erasure.audit_log ENABLE TRIGGER USER;
        INSERT INTO erasure.audit_redactions (row_ids, reason)
        VALUES (redacted, 'identifiers of requests that named nobody, kept only as their keyed hash (requested_id_hash)');
    END IF;
END $$;
