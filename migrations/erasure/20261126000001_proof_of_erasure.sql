-- Proof of erasure (src/proof/): the plan each deletion applied, a check after commit that the
-- customer's rows are gone, the keys receipts and seals are signed with, and seals over the
-- audit log that show any later edit, deletion or reordering of its rows.

-- The hash of the plan a deletion applied (sha256: of the plan's canonical JSON), and the check
-- run after it committed: verified_at, and {"outcome": "passed"} or {"outcome": "failed",
-- "tables": [...]} naming each table where something of the customer was left.
ALTER TABLE erasure.deletions
    ADD COLUMN plan_hash text,
    ADD COLUMN verified_at timestamptz,
    ADD COLUMN verification jsonb;
-- The verification is written once on each DONE deletion, after it committed. No index reads
-- those columns, so with room left on the page the update stays on it and touches no index.
ALTER TABLE erasure.deletions SET (fillfactor = 90);

-- DONE deletions whose check after commit has not run: written by whatever ends a deletion
-- DONE, in its transaction, and deleted by the verifier with the outcome it records. No foreign
-- key, as for the event outbox: both rows are written by one statement.
CREATE TABLE erasure.verification_queue (
    deletion_id text PRIMARY KEY,
    queued_at   timestamptz NOT NULL DEFAULT clock_timestamp()
);
-- Deletions that ended before this version are checked too.
INSERT INTO erasure.verification_queue (deletion_id, queued_at)
SELECT id, completed_at FROM erasure.deletions WHERE status = 'DONE';

-- The public keys of every key that signed a receipt or a seal, so that old receipts still
-- check after a rotation (GET /v1/receipt-keys publishes them). The id is the key's RFC 7638
-- thumbprint. A private key is kept here only for the key the service generated itself, when
-- none is configured; a configured key's private half never reaches the database.
CREATE TABLE erasure.signing_keys (
    id          text PRIMARY KEY,
    public_key  bytea NOT NULL UNIQUE CHECK (length(public_key) = 32),
    private_key bytea CHECK (private_key IS NULL OR length(private_key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- At most one generated key: processes starting at once agree on it.
CREATE UNIQUE INDEX signing_keys_one_generated_idx ON erasure.signing_keys ((true))
    WHERE private_key IS NOT NULL;

-- Each audit row records the transaction that wrote it. A seal covers every row of the
-- transactions in a range that had all ended when it was made, so a row committed late (its id
-- taken before others' but committed after them) is never left out of a sealed range, and no
-- writer waits for another: erasures stay as parallel as they were.
ALTER TABLE erasure.audit_log ADD COLUMN xid xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX audit_log_xid_idx ON erasure.audit_log (xid);

-- The seals, a chain: each covers the audit rows of the transactions from xid_from up to (not
-- including) xid_to, lists each row's id and the SHA-256 of its canonical JSON (8 + 32 bytes a
-- row, in id order), links to the seal before by its digest, and is signed. Whoever edits,
-- deletes, adds or reorders sealed rows must also rewrite the seals, and cannot sign them
-- without the signing key.
CREATE TABLE erasure.audit_seals (
    seq         bigint PRIMARY KEY CHECK (seq >= 1),
    sealed_at   timestamptz NOT NULL,
    xid_from    xid8 NOT NULL,
    xid_to      xid8 NOT NULL,
    row_count   integer NOT NULL CHECK (row_count >= 0),
    row_hashes  bytea NOT NULL CHECK (length(row_hashes) = 40 * row_count),
    prev_digest bytea CHECK ((seq = 1) = (prev_digest IS NULL)),
    digest      bytea NOT NULL CHECK (length(digest) = 32),
    key_id      text NOT NULL,
    signature   bytea NOT NULL CHECK (length(signature) = 64),
    CHECK (xid_from < xid_to)
);
CREATE TRIGGER audit_seals_append_only BEFORE UPDATE OR DELETE ON erasure.audit_seals
    FOR EACH ROW EXECUTE FUNCTION erasure.reject_audit_change();
CREATE TRIGGER audit_seals_no_truncate BEFORE TRUNCATE ON erasure.audit_seals
    FOR EACH STATEMENT EXECUTE FUNCTION erasure.reject_audit_change();
