//! What the erasure statement (generated from the plan in [`crate::plan::sql`]) writes to the
//! worker's tables, as SQL fragments: its deletion row, its audit row, and the conditions on a
//! request's deletion it checks. They live here, beside [`super::store`] and [`super::audit`],
//! so that one module holds every write to those tables.
//!
//! The fragments read the statement's own steps: `requests` (each request's values), `target`
//! (the customer each request names), `counts`, `blocked`, `oversized`, and `outcome`.

use super::DeletionStatus;
use super::audit::AuditAction;

/// The erasure statement's `outcome` step: a deletion row for each request of `target` (the
/// first request naming each customer) whose customer is not too large for one statement:
/// DONE with its customer's counts, or FAILED with the guard that holds. It reads the
/// statement's `requests r` (each request's values), `target t` (`n`, `subject_id`, the lookup
/// hashes), `counts c` (`data_json`, `unchanged`), `blocked b` and `oversized o`, each by the
/// customer's key `subject_key`. `lookup_digests` is the SQL of the keyed hashes of the
/// customer's lookup values ([`crate::identity`]), `zero_counts` the counts of a refused
/// request, and `already_erased` whether there was nothing left to erase. A request whose
/// conflict condition fails (it has a final outcome, or its id belongs to another customer)
/// gets no row. `plan_hash` is the SQL of the plan's hash.
pub fn outcome(
    lookup_digests: &str,
    zero_counts: &str,
    already_erased: &str,
    plan_hash: &str,
) -> String {
    format!(
        "outcome AS (\n  INSERT INTO erasure.deletions AS d (id, request_id, related_object_id, requested_id_hash, \
         lookup_digests, status, data_json, already_erased, error_key, error_message, requested_by, \
         reason, requested_at, due_at, channel, completed_at, attempts, plan_hash, started_at)\n  \
         SELECT r.deletion_id, r.request_id, t.subject_id, r.requested_hash, {lookup_digests},\n    \
         CASE WHEN b.error_key IS NULL THEN '{done}' ELSE '{failed}' END, COALESCE(c.data_json, {zero_counts}),\n    \
         b.error_key IS NULL AND {already_erased}, b.error_key, b.error_message,\n    \
         r.requested_by, r.reason, r.requested_at, r.due_at, r.channel, clock_timestamp(), 1, {plan_hash}, now()\n  \
         FROM target t JOIN requests r ON r.n = t.n\n    \
         LEFT JOIN counts c ON c.subject_key = t.subject_key LEFT JOIN blocked b ON b.subject_key = t.subject_key\n  \
         WHERE NOT EXISTS (SELECT 1 FROM oversized o WHERE o.subject_key = t.subject_key)\n  \
         ON CONFLICT (request_id) DO UPDATE SET related_object_id = EXCLUDED.related_object_id,\n    \
         lookup_digests = EXCLUDED.lookup_digests, status = EXCLUDED.status,\n    \
         data_json = (SELECT jsonb_object_agg(k, COALESCE((d.data_json ->> k)::bigint, 0) + (EXCLUDED.data_json ->> k)::bigint)\n      \
           FROM jsonb_object_keys(EXCLUDED.data_json) k),\n    \
         already_erased = EXCLUDED.already_erased, error_key = EXCLUDED.error_key, error_message = EXCLUDED.error_message,\n    \
         completed_at = EXCLUDED.completed_at, attempts = d.attempts + 1, pending_message = NULL,\n    \
         plan_hash = EXCLUDED.plan_hash, started_at = COALESCE(d.started_at, EXCLUDED.started_at)\n  \
         WHERE d.status IN {open} AND d.requested_id_hash = EXCLUDED.requested_id_hash\n  \
         RETURNING d.*\n),",
        done = DeletionStatus::Done,
        failed = DeletionStatus::Failed,
        open = DeletionStatus::sql_list(DeletionStatus::OPEN),
    )
}

/// The erasure statement's `owed` step: the outcome event of each deletion it ended, owed to
/// the broker until the outbox publishes it ([`crate::outbox`]).
pub fn owed() -> &'static str {
    "owed AS (\n  INSERT INTO erasure.event_outbox (deletion_id) SELECT id FROM outcome\n),"
}

/// The erasure statement's `to_verify` step: each deletion it ended DONE is queued for the
/// check after commit ([`crate::proof::verification`]), with the rows its erasure kept
/// (`kept`, by customer in the step `counts`, joined by `subject_id`) and those its chunks
/// kept before (`erasure.chunk_kept`, moved here).
pub fn to_verify(counts: &str) -> String {
    format!(
        "to_verify AS (\n  INSERT INTO erasure.verification_queue (deletion_id, kept, chunk_kept)\n  \
         SELECT o.id, c.kept, (SELECT jsonb_agg(k.kept) FROM erasure.chunk_kept k WHERE k.request_id = o.request_id)\n  \
         FROM outcome o LEFT JOIN {counts} c ON c.subject_id = o.related_object_id WHERE o.status = '{}'\n),\n\
         chunks_kept AS (\n  DELETE FROM erasure.chunk_kept WHERE request_id = ANY (ARRAY(SELECT request_id FROM outcome))\n),",
        DeletionStatus::Done
    )
}

/// The erasure statement's `audit` step: each outcome's audit row, in the same statement. It
/// reads `target`, `requests`, `blocked`, `oversized` and `outcome`. When `outcome` wrote no row
/// for a request (another delivery of it finished first), its audit row has no deletion id and
/// violates `audit_log_outcome_has_deletion`: the whole statement rolls back, and each request
/// is carried out on its own.
pub fn audit() -> String {
    format!(
        "audit AS (\n  INSERT INTO erasure.audit_log (received_at, action, request_id, deletion_id, related_object_id, \
         channel, requested_by, error_key, detail, key_id, key_name)\n  \
         SELECT r.received_at, CASE WHEN b.error_key IS NULL THEN '{done}' ELSE '{failed}' END, r.request_id,\n    \
         o.id, t.subject_id, r.channel, r.requested_by, b.error_key, jsonb_build_object('counts', o.data_json),\n    \
         o.requested_by_key_id, o.requested_by_key_name\n  \
         FROM target t JOIN requests r ON r.n = t.n\n    \
         LEFT JOIN outcome o ON o.request_id = r.request_id LEFT JOIN blocked b ON b.subject_key = t.subject_key\n  \
         WHERE NOT EXISTS (SELECT 1 FROM oversized v WHERE v.subject_key = t.subject_key)\n),",
        done = AuditAction::ErasureDone,
        failed = AuditAction::ErasureFailed,
    )
}

/// The condition that a request id has no final outcome yet, for the erasure statement.
pub fn not_ended(request_id: &str) -> String {
    format!(
        "NOT EXISTS (SELECT 1 FROM erasure.deletions d WHERE d.request_id = {request_id} AND d.status IN {})",
        DeletionStatus::sql_list(DeletionStatus::FINAL)
    )
}

/// The condition, for a chunk, that request `request_id`'s erasure is still in progress.
pub fn in_progress(request_id: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM erasure.deletions d WHERE d.request_id = {request_id} AND d.status = '{}')",
        DeletionStatus::InProgress
    )
}

/// The condition that the customer whose key (as text) `subject_id` gives was erased by a DONE
/// deletion: for a plan that keeps subject rows, whose erased rows stay in place. Their own
/// links then no longer count as a use of a row they share, nor as an owner of another's.
pub fn erased_subject(subject_id: &str) -> String {
    format!(
        "EXISTS (SELECT 1 FROM erasure.deletions d WHERE d.related_object_id = {subject_id} AND d.status = '{}')",
        DeletionStatus::Done
    )
}

/// A chunk's record of the rows it anonymized (the `row_key`s of the step `changed`) for
/// request `request_id`, in `erasure.chunk_kept`, until the statement that ends the erasure
/// moves them to its check after commit ([`to_verify`]).
pub fn chunk_kept(request_id: &str, table: &str, changed: &str) -> String {
    format!(
        "INSERT INTO erasure.chunk_kept (request_id, kept)\n  \
         SELECT {request_id}, jsonb_build_object('rows', jsonb_build_object('{}', jsonb_agg(c.row_key)))\n  \
         FROM {changed} c HAVING count(*) > 0",
        table.replace('\'', "''")
    )
}

/// The condition that the key whose text `key_text` gives is, or was, a customer's: a deletion
/// recorded it. Such an identifier names that customer only, also once it is erased
/// ([`crate::identity`]).
pub fn was_key(key_text: &str) -> String {
    format!("EXISTS (SELECT 1 FROM erasure.deletions d WHERE d.related_object_id = {key_text})")
}
