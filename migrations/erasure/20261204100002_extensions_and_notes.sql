-- Deadlines: GDPR Art. 12(3) lets a controller extend the one-month deadline by two further
-- months for complex requests, telling the person why within the first month. `due_at` stays
-- what the contract says (one month after requested_at); an extension is recorded beside it, and
-- every "overdue" and "due soon" reads COALESCE(extended_due_at, due_at).
ALTER TABLE erasure.deletions ADD COLUMN extended_due_at timestamptz;
-- A request made to try a FAILED one again (the console's retry): the deletion it retries. One
-- retry a deletion: a retry that fails is retried in its turn. A FAILED deletion that was retried
-- is resolved: it no longer counts as owed to the data subject.
ALTER TABLE erasure.deletions ADD COLUMN retry_of text;
CREATE UNIQUE INDEX deletions_retry_of_idx ON erasure.deletions (retry_of) WHERE retry_of IS NOT NULL;
-- The console's deadline views: what is still owed, by its deadline.
CREATE INDEX deletions_owed_due_idx ON erasure.deletions ((COALESCE(extended_due_at, due_at)))
    WHERE status IN ('PENDING', 'IN_PROGRESS', 'FAILED');

-- Why staff acted on a deletion (extended its deadline, canceled it, retried it), in their own
-- words. Kept apart from the audit log, which holds no free text that could name a person: the
-- audit row of the action names the note and the SHA-256 of its reason, so that the sealed log
-- shows any later change to it. Append-only, like the audit log.
CREATE TABLE erasure.deletion_notes (
    id          bigserial PRIMARY KEY,
    deletion_id text NOT NULL,
    -- The audit action the note gives the reason for (erasure.extended, erasure.canceled, ...).
    action      text NOT NULL,
    reason      text NOT NULL CHECK (length(reason) BETWEEN 1 AND 1000),
    key_id      text,
    key_name    text,
    noted_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX deletion_notes_deletion_idx ON erasure.deletion_notes (deletion_id);
CREATE TRIGGER deletion_notes_append_only BEFORE UPDATE OR DELETE ON erasure.deletion_notes
    FOR EACH ROW EXECUTE FUNCTION erasure.reject_audit_change();
CREATE TRIGGER deletion_notes_no_truncate BEFORE TRUNCATE ON erasure.deletion_notes
    FOR EACH STATEMENT EXECUTE FUNCTION erasure.reject_audit_change();
