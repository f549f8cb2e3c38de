//! The statements beside the erasure statement: whether a customer is too large for it, the
//! chunks that erase such a customer a short transaction at a time, and finding the customer
//! an identifier names.

use super::reach::{anonymize, change, lookup_hash_columns, lookup_hashes, mine, reach};
use super::{Params, Statement, Value};
use crate::deletion::statement;
use crate::plan::{Action, Plan, Step, ident};

pub use super::reach::subject_by_identifier;

/// The live customer the identifier names, by the rule of [`crate::identity`]: its key (as
/// text) when it names one, and whether it names several.
pub fn find_subject_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    let customer = params.of(Value::Customer, "text");
    let key = params.of(Value::Key, plan.facts.key_type.sql());
    let kind = params.typed(Value::Kind, "text");
    let inner = params.of(Value::InnerPad, "bytea");
    let outer = params.of(Value::OuterPad, "bytea");
    let sql = format!(
        "SELECT i.key, i.ambiguous FROM {} i",
        subject_by_identifier(plan, &customer, &key, &kind, Some((&inner, &outer)))
    );
    params.finish(sql)
}

/// The keyed hashes of the lookup values of the live customer with key `subject_id` (as
/// deletions keep them), or no row: what a ledger replay compares with the hashes its line
/// kept of the customer erased under that key.
pub fn subject_digests_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    let subject = subject_from_text(plan, &mut params);
    let sql = format!(
        "SELECT {} FROM (SELECT 1 AS found{} FROM {} s WHERE s.{} = ANY ({subject})) t",
        lookup_hashes(plan, "t"),
        lookup_hash_columns(plan, "s", &mut params),
        plan.subject.table.sql(),
        ident(&plan.subject.key),
    );
    params.finish(sql)
}

/// `EXISTS` probes, OR-ed: does any step's table hold more than `threshold` rows of the
/// customers whose keys the array `subjects` holds? Each probe selects the column its first path
/// starts from, so that the index on it can answer alone (an index-only scan).
pub fn oversized_probes(plan: &Plan, subjects: &str, threshold: &str) -> String {
    if plan.steps.is_empty() {
        // A plan that only anonymizes the subject: nobody is too large for one statement.
        return "false".into();
    }
    plan.steps
        .iter()
        .map(|step| {
            format!(
                "EXISTS (SELECT x.{column} FROM {table} x WHERE {reach} OFFSET {threshold} LIMIT 1)",
                column = ident(&step.paths[0][0].column),
                table = step.table.sql(),
                reach = reach(plan, &step.paths, "x", 0, subjects),
            )
        })
        .collect::<Vec<_>>()
        .join("\n    OR ")
}

/// The customer's key, from its text form in a parameter, as an array of one: the parameter is
/// cast, never the column.
fn subject_from_text(plan: &Plan, params: &mut Params) -> String {
    format!(
        "ARRAY[CAST({} AS {})]",
        params.typed(Value::SubjectId, "text"),
        plan.facts.key_type.sql()
    )
}

/// Whether the customer with key `subject_id` has more than `chunk_threshold` rows in some
/// step's table.
pub fn oversized_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    let subjects = subject_from_text(plan, &mut params);
    let threshold = params.typed(Value::ChunkThreshold, "bigint");
    let sql = format!("SELECT {}", oversized_probes(plan, &subjects, &threshold));
    params.finish(sql)
}

/// One chunk of a step of a chunked erasure (run in its own short transaction, followed by
/// the count it adds to the deletion): erases at most `chunk_rows` of the rows that belong to
/// customer `subject_id`, and nothing once the deletion of request `request_id` is no longer
/// IN_PROGRESS. How many it erased is the command's row count: a `RETURNING` clause would
/// fetch every erased row once more.
/// The chunk is not locked ahead (that would write every row twice): the DELETE or UPDATE locks
/// what it changes, and a row another delivery of the request changed first is skipped here
/// and counted there.
pub struct ChunkStatement {
    pub table: String,
    pub counted_as: String,
    pub statement: Statement,
    /// The statement answers the rows it changed as a count, instead of its row count: an
    /// anonymizing chunk records the rows it kept (`erasure.chunk_kept`, for the check after
    /// commit) in the same statement.
    pub selects_count: bool,
}

/// The chunk statements in the order they must run: a step reached through another step's
/// table runs before that table's rows are anonymized or deleted (they would no longer lead to
/// the customer).
pub fn chunk_statements(plan: &Plan) -> Vec<ChunkStatement> {
    let mut steps: Vec<&Step> = plan.steps.iter().collect();
    steps.sort_by_key(|step| std::cmp::Reverse(plan.depth(step)));
    steps
        .into_iter()
        .map(|step| {
            let mut params = Params::default();
            let subjects = subject_from_text(plan, &mut params);
            let rows = params.of(Value::ChunkRows, "bigint");
            let request_id = params.typed(Value::RequestId, "uuid");
            let subject_id = params.typed(Value::SubjectId, "text");
            // An anonymizing chunk takes only rows with something left to clear, so that a
            // short chunk still means the step is done.
            let left = match &step.action {
                Action::Delete => String::new(),
                Action::Anonymize(a) => {
                    let (_, changes) =
                        anonymize(plan, &step.table, a, "y", &subject_id, &mut params);
                    format!(" AND {changes}")
                }
            };
            let condition = format!(
                "(x.tableoid, x.ctid) IN (\n  SELECT y.tableoid, y.ctid FROM {table} y WHERE {mine}{left}\n    AND {in_progress}\n  LIMIT {rows}\n)",
                table = step.table.sql(),
                mine = mine(plan, step, "y", &subjects),
                in_progress = statement::in_progress(&request_id),
            );
            let row_key = match &step.action {
                Action::Anonymize(_) => plan.facts.row_keys.get(&step.table),
                Action::Delete => None,
            };
            let returning = row_key.map(|(key, _)| format!("x.{}::text AS row_key", ident(key)));
            let mut sql = change(
                plan,
                &step.table,
                &step.action,
                None,
                &condition,
                &subject_id,
                returning.as_deref(),
                &mut params,
            );
            if row_key.is_some() {
                sql = format!(
                    "WITH changed AS (\n  {sql}\n),\nrecorded AS (\n  {}\n)\nSELECT count(*) FROM changed",
                    statement::chunk_kept(&request_id, &step.table.to_string(), "changed")
                );
            }
            ChunkStatement {
                table: step.table.to_string(),
                counted_as: step.counted_as.clone(),
                statement: params.finish(sql),
                selects_count: row_key.is_some(),
            }
        })
        .collect()
}
