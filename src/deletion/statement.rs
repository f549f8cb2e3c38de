//! What the erasure statement (generated from the plan in [`crate::plan::sql`]) writes to the
//! worker's tables, as SQL fragments: its deletion row, its audit row, and the conditions on a
//! request's deletion it checks. They live here, beside [`super::store`] and [`super::audit`],
//! so that one module holds every write to those tables.
//!
//! The fragments read the statement's own steps: `target` (`subject_id`), `counts`
//! (`data_json`), `blocked` (`error_key`, `error_message`), `oversized`, and `outcome`.

use super::DeletionStatus;
use super::audit::AuditAction;

/// Where the erasure statement keeps each value it writes: parameter placeholders (typed
/// where the statement's context gives them no type), in the statement's own numbering.
pub struct StatementParams {
    pub deletion_id: String,
    pub request_id: String,
    pub requested_hash: String,
    pub requested_by: String,
    pub reason: String,
    pub requested_at: String,
    pub due_at: String,
    pub channel: String,
    pub received_at: String,
}

/// The erasure statement's `outcome` step: the deletion row, DONE with the counts or FAILED
/// with the guard that holds. It reads the statement's steps `target` (`subject_id`), `counts`
/// (`data_json`), `blocked` (`error_key`, `error_message`) and `oversized`, and writes nothing
/// when the customer is too large for one statement. `source_hash` and `lookup_hashes` are the
/// SQL of the keyed hashes of the customer's lookup values (the first, and all), and
/// `already_erased` whether there was nothing left to erase. When its conflict condition fails
/// (the request has a final outcome, or its id belongs to another customer), it returns no
/// row.
pub fn outcome(
    p: &StatementParams,
    source_hash: &str,
    lookup_hashes: &str,
    already_erased: &str,
) -> String {
    format!(
        "outcome AS (\n  INSERT INTO erasure.deletions AS d (id, request_id, related_object_id, requested_id_hash, \
         source_id_hash, lookup_hashes, status, data_json, already_erased, error_key, error_message, requested_by, \
         reason, requested_at, due_at, channel, completed_at, attempts)\n  \
         SELECT {del}, {req}, t.subject_id, {rh}, {source_hash}, {lookup_hashes},\n    \
         CASE WHEN b.error_key IS NULL THEN '{done}' ELSE '{failed}' END, c.data_json,\n    \
         b.error_key IS NULL AND {already_erased}, b.error_key, b.error_message,\n    \
         {by}, {reason}, {at}, {due}, {channel}, clock_timestamp(), 1\n  \
         FROM target t CROSS JOIN counts c LEFT JOIN blocked b ON true\n  \
         WHERE NOT EXISTS (SELECT 1 FROM oversized)\n  \
         ON CONFLICT (request_id) DO UPDATE SET related_object_id = EXCLUDED.related_object_id,\n    \
         source_id_hash = EXCLUDED.source_id_hash, lookup_hashes = EXCLUDED.lookup_hashes, status = EXCLUDED.status,\n    \
         data_json = (SELECT jsonb_object_agg(k, COALESCE((d.data_json ->> k)::bigint, 0) + (EXCLUDED.data_json ->> k)::bigint)\n      \
           FROM jsonb_object_keys(EXCLUDED.data_json) k),\n    \
         already_erased = EXCLUDED.already_erased, error_key = EXCLUDED.error_key, error_message = EXCLUDED.error_message,\n    \
         completed_at = EXCLUDED.completed_at, attempts = d.attempts + 1, pending_message = NULL\n  \
         WHERE d.status IN {open} AND d.requested_id_hash = EXCLUDED.requested_id_hash\n  \
         RETURNING d.*\n),",
        del = p.deletion_id,
        req = p.request_id,
        rh = p.requested_hash,
        by = p.requested_by,
        reason = p.reason,
        at = p.requested_at,
        due = p.due_at,
        channel = p.channel,
        done = DeletionStatus::Done,
        failed = DeletionStatus::Failed,
        open = DeletionStatus::sql_list(DeletionStatus::OPEN),
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

/// The erasure statement's `audit` step: the outcome's audit row, in the same statement. It
/// reads the statement's `target`, `blocked`, `oversized` and `outcome` steps. When `outcome`
/// wrote no row (another delivery of the request finished first), the row it inserts has no
/// deletion id and violates `audit_log_outcome_has_deletion`: the whole statement rolls back.
pub fn audit(p: &StatementParams) -> String {
    format!(
        "audit AS (\n  INSERT INTO erasure.audit_log (received_at, action, request_id, deletion_id, related_object_id, \
         channel, requested_by, error_key, detail)\n  \
         SELECT {received}, CASE WHEN b.error_key IS NULL THEN '{done}' ELSE '{failed}' END, {req},\n    \
         (SELECT o.id FROM outcome o), t.subject_id, {channel}, {by}, b.error_key,\n    \
         jsonb_build_object('counts', (SELECT o.data_json FROM outcome o))\n  \
         FROM target t LEFT JOIN blocked b ON true\n  WHERE NOT EXISTS (SELECT 1 FROM oversized)\n),",
        received = p.received_at,
        req = p.request_id,
        channel = p.channel,
        by = p.requested_by,
        done = AuditAction::ErasureDone,
        failed = AuditAction::ErasureFailed,
    )
}
