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

-- Redactions of the audit log (see the next migration), sealed by the sealer.
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
-- A redaction seal covers no transactions of its own: it sits between two seals of rows. (The
-- check it replaces was declared without a name.)
DO $$
DECLARE
    old text;
BEGIN
    SELECT conname INTO old FROM pg_constraint
    WHERE conrelid = 'erasure.audit_seals'::regclass AND contype = 'c'
      AND pg_get_constraintdef(oid) = 'CHECK ((xid_from < xid_to))';
    EXECUTE format('ALTER TABLE erasure.audit_seals DROP CONSTRAINT %I', old);
END $$;
ALTER TABLE erasure.audit_seals ADD CONSTRAINT audit_seals_covers_transactions
    CHECK (xid_from < xid_to OR (redaction_id IS NOT NULL AND xid_from = xid_to));

