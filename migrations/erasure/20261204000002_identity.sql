-- Who a request names, and no identifier that named nobody kept in clear.
--
-- A lookup value is kept as a keyed hash tagged with its lookup's column, folded to lower case
-- only for a lookup compared in any case: `lookup_digests`. The untagged hashes kept before
-- (`source_id_hash`, `lookup_hashes`) could not tell a lookup compared exactly from one compared
-- in any case, nor one lookup from another; new deletions leave them NULL, and deletions
-- recorded before this version are still matched by them, as before.
ALTER TABLE erasure.deletions ADD COLUMN lookup_digests bytea[];
CREATE INDEX deletions_lookup_digests_idx ON erasure.deletions USING gin (lookup_digests)
    WHERE lookup_digests IS NOT NULL;

-- A request for an identifier that names nobody recorded it as `related_object_id`: personal
-- data of someone who may not even be a customer, kept for good. The keyed hash of the
-- identifier (`requested_id_hash`) is all the service keeps of it now; the clear values go.
UPDATE erasure.deletions SET related_object_id = NULL
WHERE status = 'FAILED' AND error_key = 'not_found' AND related_object_id IS NOT NULL;

-- The same values in the audit log, which is append-only and sealed: the rows are redacted
-- here, with the trigger that refuses changes set aside for this statement alone, and the
-- redaction is recorded so that the sealer seals it (a redaction seal names each row and its
-- new hash, and why) and `erasure audit verify` accepts the change and says what it was.
CREATE TABLE erasure.audit_redactions (
    id          bigserial PRIMARY KEY,
    row_ids     bigint[] NOT NULL,
    reason      text NOT NULL,
    redacted_at timestamptz NOT NULL DEFAULT now(),
    -- The redaction seal that records it, once sealed.
    sealed_in   bigint
);
ALTER TABLE erasure.audit_seals ADD COLUMN redaction_id bigint REFERENCES erasure.audit_redactions (id);
ALTER TABLE erasure.audit_seals ADD COLUMN reason text;
-- A redaction seal covers no transactions of its own: it sits between two seals of rows.
ALTER TABLE erasure.audit_seals DROP CONSTRAINT audit_seals_check;
ALTER TABLE erasure.audit_seals ADD CONSTRAINT audit_seals_check
    CHECK (xid_from < xid_to OR (redaction_id IS NOT NULL AND xid_from = xid_to));

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
