//! Turns a plan into the erasure statement: one SQL statement of data-modifying CTEs that
//! locks the customer, evaluates the guards, runs every step, and writes the deletion object and
//! its audit row. One round trip, atomic by itself (no BEGIN/COMMIT needed).
//!
//! How it stays correct under concurrency:
//! - `target` locks the customer row (`FOR UPDATE`). A second erasure of the same customer waits
//!   there; when the first commits, the row is gone, `target` is empty and nothing is touched.
//!   The caller then looks again with a fresh snapshot (already erased, not found, duplicate).
//! - `target` is empty when the request id already has a final outcome: a redelivery never
//!   erases again.
//! - The deletion row is written with `ON CONFLICT (request_id) DO UPDATE ... WHERE` the row is
//!   still open and names the same customer. When that condition fails (a concurrent delivery of
//!   the same request finished first), no row comes back, the audit insert violates
//!   `audit_log_outcome_has_deletion`, and the whole statement, erasure included, rolls back.
//! - Foreign keys are checked at the end of the statement, so steps may run in any order.
//! - `oversized` probes each step's table past the chunk threshold; a customer that large is
//!   left alone (no outcome row, no audit row) and the caller erases it in chunks
//!   ([`chunk_statements`]) before running this statement again for the rest. A customer
//!   claimed by another request's chunked erasure (`erasure.claims`) is not a target.
//!
//! Parameters: see [`Params`].

use std::fmt::Write;

use super::{Action, Plan, Step, ident};
use crate::deletion::COLUMNS;
use crate::deletion::statement::{self, StatementParams};
use crate::keyed_hash::KeyedHash;

/// Parameter numbers of the erasure statement. Guards follow, two each (values, message).
pub struct Params;

impl Params {
    /// text: the identifier the request named (the subject's key or lookup).
    pub const CUSTOMER: u32 = 1;
    /// uuid: the request id.
    pub const REQUEST_ID: u32 = 2;
    /// text: the id of a new deletion object.
    pub const DELETION_ID: u32 = 3;
    /// bytea: keyed hash of the identifier the request named.
    pub const REQUESTED_ID_HASH: u32 = 4;
    /// text
    pub const REQUESTED_BY: u32 = 5;
    /// text
    pub const REASON: u32 = 6;
    /// timestamptz
    pub const REQUESTED_AT: u32 = 7;
    /// timestamptz
    pub const DUE_AT: u32 = 8;
    /// text: amqp, http or cli.
    pub const CHANNEL: u32 = 9;
    /// timestamptz: when the worker received the request.
    pub const RECEIVED_AT: u32 = 10;
    /// bytea: inner and outer key pads of the keyed hash.
    pub const INNER_PAD: u32 = 11;
    pub const OUTER_PAD: u32 = 12;
    /// bigint: a customer with more rows than this in one table is erased in chunks.
    pub const CHUNK_THRESHOLD: u32 = 13;
    /// The first guard's values (text[]); its message (text) is the next one.
    pub const FIRST_GUARD: u32 = 14;

    /// The SQL type of parameter `n`.
    pub fn sql_type(n: u32) -> &'static str {
        match n {
            Self::REQUEST_ID => "uuid",
            Self::REQUESTED_ID_HASH | Self::INNER_PAD | Self::OUTER_PAD => "bytea",
            Self::REQUESTED_AT | Self::DUE_AT | Self::RECEIVED_AT => "timestamptz",
            Self::CHUNK_THRESHOLD => "bigint",
            n if n >= Self::FIRST_GUARD && (n - Self::FIRST_GUARD) % 2 == 0 => "text[]",
            _ => "text",
        }
    }
}

/// A scalar subquery giving the subject's key for the identifier in parameter `param` (its key
/// or, failing that, its lookup value), or NULL when no subject matches. Locks nothing.
pub fn subject_key_of(plan: &Plan, param: u32) -> String {
    let subject = &plan.subject;
    let table = format!("{}.{}", ident(&plan.schema), ident(&subject.table));
    let key = ident(&subject.key);
    match &subject.lookup {
        Some(lookup) => format!(
            "(SELECT k FROM (SELECT s.{key}::text AS k, 0 AS o FROM {table} s WHERE s.{key} = ${param} \
             UNION ALL SELECT s.{key}::text, 1 FROM {table} s WHERE s.{lookup} = ${param}) m ORDER BY o LIMIT 1)",
            lookup = ident(lookup),
        ),
        None => format!("(SELECT s.{key}::text FROM {table} s WHERE s.{key} = ${param})"),
    }
}

/// The erasure statement for `plan`.
pub fn erase_statement(plan: &Plan) -> String {
    let schema = ident(&plan.schema);
    let subject = &plan.subject;
    let table = |name: &str| format!("{schema}.{}", ident(name));
    let p = |n: u32| format!("${n}");
    // Where nothing around a parameter gives it a type, the statement names it, so that the
    // statement prepares as printed with drivers that leave parameter types to the server.
    let typed = |n: u32| format!("${n}::{}", Params::sql_type(n));
    let key = ident(&subject.key);
    let mut sql = String::from("WITH\n");

    // The customer, locked. A request naming an id wins over one naming a lookup value.
    let (lookup_select, lookup_match) = match &subject.lookup {
        Some(lookup) => (
            format!("s.{}", ident(lookup)),
            format!(
                " OR (s.{lookup} = {c} AND NOT EXISTS (SELECT 1 FROM {t} k WHERE k.{key} = {c}))",
                lookup = ident(lookup),
                c = p(Params::CUSTOMER),
                t = table(&subject.table),
            ),
        ),
        None => ("NULL::text".to_string(), String::new()),
    };
    writeln!(
        sql,
        "target AS MATERIALIZED (\n  SELECT s.{key}::text AS subject_id, {lookup_select}::text AS lookup_value\n  \
         FROM {t} s\n  WHERE (s.{key} = {c}{lookup_match})\n    AND {not_ended}\n    \
         AND NOT EXISTS (SELECT 1 FROM erasure.claims k WHERE k.subject_id = s.{key}::text AND k.request_id <> {r})\n  \
         FOR UPDATE OF s\n),",
        t = table(&subject.table),
        c = p(Params::CUSTOMER),
        r = p(Params::REQUEST_ID),
        not_ended = statement::not_ended(&p(Params::REQUEST_ID)),
    )
    .unwrap();

    // The first guard that holds, if any.
    let mut guards = Vec::new();
    for (i, guard) in plan.guards.iter().enumerate() {
        let values = Params::FIRST_GUARD + 2 * i as u32;
        guards.push(format!(
            "  SELECT {i} AS ord, '{key}'::text AS error_key, {message}::text AS error_message\n  \
             WHERE EXISTS (SELECT 1 FROM target t JOIN {table} g ON g.{column} = t.subject_id\n    \
             WHERE g.{when}::text = ANY({values_p}::text[]))",
            key = guard.error.key(),
            message = p(values + 1),
            table = table(&guard.table),
            column = ident(&guard.column),
            when = ident(&guard.when.column),
            values_p = p(values),
        ));
    }
    if guards.is_empty() {
        sql.push_str(
            "blocked AS MATERIALIZED (\n  SELECT NULL::text AS error_key, NULL::text AS error_message WHERE false\n),\n",
        );
    } else {
        writeln!(
            sql,
            "blocked AS MATERIALIZED (\n  SELECT error_key, error_message FROM (\n{}\n  ) g ORDER BY ord LIMIT 1\n),",
            guards.join("\n  UNION ALL\n")
        )
        .unwrap();
    }
    // Too many rows for one short statement: this statement does nothing and the caller
    // erases in chunks. Probing past the threshold in an index costs a typical customer nothing.
    writeln!(
        sql,
        "oversized AS MATERIALIZED (\n  SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM blocked) AND ({})\n),",
        oversized_probes(plan, "SELECT subject_id FROM target", &p(Params::CHUNK_THRESHOLD))
    )
    .unwrap();
    sql.push_str(
        "go AS MATERIALIZED (\n  SELECT subject_id FROM target \
         WHERE NOT EXISTS (SELECT 1 FROM blocked) AND NOT EXISTS (SELECT 1 FROM oversized)\n),\n",
    );

    // The steps, then the subject itself.
    for (i, step) in plan.steps.iter().enumerate() {
        let reach = reach(plan, step, "x", 0);
        let statement = match step.action {
            Action::Delete => format!("DELETE FROM {} x WHERE {reach}", table(&step.table)),
            Action::Anonymize => format!(
                "UPDATE {} x SET {} WHERE {reach}",
                table(&step.table),
                anonymize_sets(step)
            ),
        };
        writeln!(sql, "step_{i} AS (\n  {statement}\n  RETURNING 1\n),").unwrap();
    }
    writeln!(
        sql,
        "subject AS (\n  DELETE FROM {} x WHERE x.{key}::text IN (SELECT subject_id FROM go)\n  RETURNING 1\n),",
        table(&subject.table)
    )
    .unwrap();

    // Counts, in the plan's order.
    let mut pairs = Vec::new();
    for count_key in plan.count_keys() {
        let mut sources: Vec<String> = plan
            .steps
            .iter()
            .enumerate()
            .filter(|(_, s)| s.counted_as == count_key)
            .map(|(i, _)| format!("(SELECT count(*) FROM step_{i})"))
            .collect();
        if subject.counted_as == count_key {
            sources.push("(SELECT count(*) FROM subject)".into());
        }
        pairs.push(format!(
            "'{}', {}",
            sql_string(&count_key),
            sources.join(" + ")
        ));
    }
    writeln!(
        sql,
        "counts AS (\n  SELECT jsonb_build_object({}) AS data_json\n),",
        pairs.join(", ")
    )
    .unwrap();

    let source_hash = KeyedHash::sql(
        "t.lookup_value",
        &p(Params::INNER_PAD),
        &p(Params::OUTER_PAD),
    );
    let params = StatementParams {
        deletion_id: typed(Params::DELETION_ID),
        request_id: typed(Params::REQUEST_ID),
        requested_hash: typed(Params::REQUESTED_ID_HASH),
        requested_by: typed(Params::REQUESTED_BY),
        reason: typed(Params::REASON),
        requested_at: typed(Params::REQUESTED_AT),
        due_at: typed(Params::DUE_AT),
        channel: typed(Params::CHANNEL),
        received_at: typed(Params::RECEIVED_AT),
    };
    writeln!(sql, "{}", statement::outcome(&params, &source_hash)).unwrap();
    writeln!(sql, "{}", statement::audit(&params)).unwrap();
    writeln!(
        sql,
        "unclaim AS (\n  DELETE FROM erasure.claims WHERE request_id = {req} AND EXISTS (SELECT 1 FROM outcome)\n)",
        req = params.request_id,
    )
    .unwrap();
    write!(sql, "SELECT {COLUMNS} FROM outcome").unwrap();
    sql
}

/// The condition that selects the rows of `step` (aliased `alias`) that belong to the customer.
/// `EXISTS` probes, OR-ed: does any step's table hold more than `threshold` rows of the
/// subjects `subjects` names?
fn oversized_probes(plan: &Plan, subjects: &str, threshold: &str) -> String {
    let schema = ident(&plan.schema);
    plan.steps
        .iter()
        .map(|step| {
            format!(
                "EXISTS (SELECT 1 FROM {schema}.{table} x WHERE {reach} OFFSET {threshold} LIMIT 1)",
                table = ident(&step.table),
                reach = reach_from(plan, step, "x", 0, subjects),
            )
        })
        .collect::<Vec<_>>()
        .join("\n    OR ")
}

/// Whether the subject with key `$1` has more than `$2` rows in some step's table.
pub fn oversized_statement(plan: &Plan) -> String {
    format!("SELECT {}", oversized_probes(plan, "SELECT $1::text", "$2"))
}

/// One chunk of a step of a chunked erasure (run in its own short transaction, followed by
/// the count it adds to the deletion): erases at most `$2` of the rows that belong to subject `$1`, and nothing
/// once the deletion of request `$3` is no longer IN_PROGRESS. How many it erased is the
/// command's row count: a `RETURNING` clause would fetch every erased row once more.
/// The chunk is not locked ahead (that would write every row twice): the DELETE or UPDATE locks
/// what it changes, and a row another delivery of the request changed first is skipped here
/// and counted there.
pub struct ChunkStatement {
    pub table: String,
    pub counted_as: String,
    pub sql: String,
}

/// The chunk statements in the order they must run: a step reached through a parent runs
/// before the parent's rows are anonymized or deleted (they would no longer lead to the
/// subject).
pub fn chunk_statements(plan: &Plan) -> Vec<ChunkStatement> {
    let schema = ident(&plan.schema);
    let mut steps: Vec<&Step> = plan.steps.iter().collect();
    steps.sort_by_key(|step| std::cmp::Reverse(depth(plan, step)));
    steps
        .into_iter()
        .map(|step| {
            let table = format!("{schema}.{}", ident(&step.table));
            let reach = reach_from(plan, step, "x", 0, "SELECT $1::text");
            let change = match step.action {
                Action::Delete => format!("DELETE FROM {table} y"),
                Action::Anonymize => format!("UPDATE {table} y SET {}", anonymize_sets(step)),
            };
            let sql = format!(
                "{change} WHERE y.ctid = ANY (ARRAY(\n  SELECT x.ctid FROM {table} x WHERE {reach}\n    \
                 AND {in_progress}\n  LIMIT $2\n))",
                in_progress = statement::in_progress("$3"),
            );
            ChunkStatement {
                table: step.table.clone(),
                counted_as: step.counted_as.clone(),
                sql,
            }
        })
        .collect()
}

/// The SET list of an anonymizing step.
fn anonymize_sets(step: &Step) -> String {
    step.set_null
        .iter()
        .map(|c| format!("{} = NULL", ident(c)))
        .chain(step.set_now.iter().map(|c| format!("{} = now()", ident(c))))
        .collect::<Vec<_>>()
        .join(", ")
}

fn depth(plan: &Plan, step: &Step) -> usize {
    match &step.through {
        None => 0,
        Some(through) => plan
            .step(&through.table)
            .map_or(1, |parent| 1 + depth(plan, parent)),
    }
}

/// The condition on `alias` (a row of `step`'s table) that it belongs to one of the subjects
/// `subjects` (a subquery of subject keys as text) names, directly or through parents.
fn reach(plan: &Plan, step: &Step, alias: &str, depth: usize) -> String {
    reach_from(plan, step, alias, depth, "SELECT subject_id FROM go")
}

fn reach_from(plan: &Plan, step: &Step, alias: &str, depth: usize, subjects: &str) -> String {
    let column = format!("{alias}.{}", ident(&step.column));
    match &step.through {
        None => format!("{column}::text IN ({subjects})"),
        Some(through) => {
            let parent = plan
                .step(&through.table)
                .expect("plan consistency guarantees through tables have steps");
            let parent_alias = format!("p{depth}");
            format!(
                "{column} IN (SELECT {parent_alias}.{key} FROM {schema}.{table} {parent_alias} WHERE {inner})",
                key = ident(&through.key),
                schema = ident(&plan.schema),
                table = ident(&through.table),
                inner = reach_from(plan, parent, &parent_alias, depth + 1, subjects),
            )
        }
    }
}

/// `value` for use inside a single-quoted SQL literal.
fn sql_string(value: &str) -> String {
    value.replace('\'', "''")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BUILT_IN;

    #[test]
    fn the_statement_binds_values_and_quotes_identifiers() {
        let sql = erase_statement(&Plan::parse(BUILT_IN).unwrap());
        assert!(sql.contains(r#"DELETE FROM "public"."events" x"#), "{sql}");
        assert!(
            !sql.contains("'OPEN'"),
            "guard values are bound, not spliced"
        );
        assert!(sql.contains("ANY($14::text[])"));
        assert!(sql.contains(
            r#"x."order_id" IN (SELECT p0."id" FROM "public"."orders" p0 WHERE p0."customer_id"::text IN (SELECT subject_id FROM go))"#
        ));
    }

    #[test]
    fn hostile_names_stay_inside_their_quotes() {
        let text = BUILT_IN.replace(
            "table = \"events\"",
            "table = \"events\\\"; DROP TABLE customers; --\"",
        );
        let sql = erase_statement(&Plan::parse(&text).unwrap());
        assert!(
            sql.contains(r#""events""; DROP TABLE customers; --""#),
            "{sql}"
        );
    }
}
