//! The erasure statement: one SQL statement of data-modifying CTEs that locks the customer,
//! evaluates the guards, runs every step, clears the rows the customer references, deletes (or
//! anonymizes) the customer, and writes the deletion object and its audit row. One round trip,
//! atomic by itself (no BEGIN/COMMIT needed).
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
//! - Every step reads the snapshot the statement started with, and foreign keys are checked at
//!   its end: steps may run in any order, and a path through rows another step deletes or
//!   anonymizes still leads to the customer.
//! - `oversized` probes each step's table past the chunk threshold; a customer that large is
//!   left alone (no outcome row, no audit row) and the caller erases it in chunks
//!   ([`super::chunk_statements`]) before running this statement again for the rest. A customer
//!   claimed by another request's chunked erasure (`erasure.claims`) is not a target.

use std::fmt::Write;

use super::reach::{change, lookup_hash_columns, lookup_hashes, reach, subject_matches};
use super::{Params, Statement, Value};
use crate::deletion::COLUMNS;
use crate::deletion::statement::{self, StatementParams};
use crate::plan::{Action, Plan, Referenced, ident};

/// The erasure statement for `plan` (its facts filled by the live-schema check).
pub fn erase_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    // The request's values come first, in a fixed order, so that their numbers stay put as
    // plans change.
    let customer = params.of(Value::Customer, "text");
    let request = StatementParams {
        request_id: params.typed(Value::RequestId, "uuid"),
        deletion_id: params.typed(Value::DeletionId, "text"),
        requested_hash: params.typed(Value::RequestedHash, "bytea"),
        requested_by: params.typed(Value::RequestedBy, "text"),
        reason: params.typed(Value::Reason, "text"),
        requested_at: params.typed(Value::RequestedAt, "timestamptz"),
        due_at: params.typed(Value::DueAt, "timestamptz"),
        channel: params.typed(Value::Channel, "text"),
        received_at: params.typed(Value::ReceivedAt, "timestamptz"),
    };
    params.typed(Value::InnerPad, "bytea");
    params.typed(Value::OuterPad, "bytea");
    let threshold = params.typed(Value::ChunkThreshold, "bigint");
    let key = params.of(Value::Key, plan.facts.key_type.sql());

    let subject = &plan.subject;
    let key_column = ident(&subject.key);
    let mut sql = String::from("WITH\n");

    // The customer, locked, with the hashes of its lookup values.
    let lookups = lookup_hash_columns(plan, "s", &mut params);
    let _ = writeln!(
        sql,
        "target AS MATERIALIZED (\n  SELECT s.{key_column} AS subject_key, s.{key_column}::text AS subject_id{lookups}\n  \
         FROM {table} s\n  WHERE {matches}\n    AND {not_ended}\n    \
         AND NOT EXISTS (SELECT 1 FROM erasure.claims k WHERE k.subject_id = s.{key_column}::text AND k.request_id <> {r})\n  \
         FOR UPDATE OF s\n),",
        table = subject.table.sql(),
        matches = subject_matches(plan, "s", &customer, &key),
        not_ended = statement::not_ended(&request.request_id),
        r = request.request_id,
    );

    // The first guard that holds, if any.
    let mut guards = Vec::new();
    for (i, guard) in plan.guards.iter().enumerate() {
        let values = params.typed(Value::TextList(guard.when_in.clone()), "text[]");
        let message = params.typed(Value::Text(guard.message.clone()), "text");
        guards.push(format!(
            "  SELECT {i} AS ord, 'conflict'::text AS error_key, {message} AS error_message\n  \
             WHERE EXISTS (SELECT 1 FROM {table} g WHERE {reach}\n    AND g.{when}::text = ANY({values}))",
            table = guard.table.sql(),
            reach = reach(plan, &guard.paths, "g", 0, "SELECT subject_key FROM target"),
            when = ident(&guard.when_column),
        ));
    }
    if guards.is_empty() {
        sql.push_str(
            "blocked AS MATERIALIZED (\n  SELECT NULL::text AS error_key, NULL::text AS error_message WHERE false\n),\n",
        );
    } else {
        let _ = writeln!(
            sql,
            "blocked AS MATERIALIZED (\n  SELECT error_key, error_message FROM (\n{}\n  ) g ORDER BY ord LIMIT 1\n),",
            guards.join("\n  UNION ALL\n")
        );
    }
    // Too many rows for one short statement: this statement does nothing and the caller
    // erases in chunks. Probing past the threshold in an index costs a typical customer nothing.
    let _ = writeln!(
        sql,
        "oversized AS MATERIALIZED (\n  SELECT 1 WHERE NOT EXISTS (SELECT 1 FROM blocked) AND ({})\n),",
        super::companions::oversized_probes(plan, "SELECT subject_key FROM target", &threshold)
    );
    sql.push_str(
        "go AS MATERIALIZED (\n  SELECT subject_key, subject_id FROM target \
         WHERE NOT EXISTS (SELECT 1 FROM blocked) AND NOT EXISTS (SELECT 1 FROM oversized)\n),\n",
    );

    // The steps, the rows the customer references, then the customer itself.
    let subjects = "SELECT subject_key FROM go";
    let subject_id = "(SELECT subject_id FROM go)";
    for (i, step) in plan.steps.iter().enumerate() {
        let condition = reach(plan, &step.paths, "x", 0, subjects);
        let statement = change(
            plan,
            &step.table,
            &step.action,
            &condition,
            subject_id,
            &mut params,
        );
        let _ = writeln!(sql, "step_{i} AS (\n  {statement}\n  RETURNING 1\n),");
    }
    for (i, r) in plan.referenced.iter().enumerate() {
        let referenced_rows = format!(
            "x.{key} IN (SELECT s.{from} FROM {subject} s WHERE s.{key_column} IN ({subjects}))",
            key = ident(&r.key),
            from = ident(&r.from),
            subject = subject.table.sql(),
        );
        let shared = still_referenced(plan, r, "x", subjects);
        let condition = format!("{referenced_rows} AND NOT {shared}");
        let statement = change(
            plan,
            &r.table,
            &r.action,
            &condition,
            subject_id,
            &mut params,
        );
        let _ = writeln!(
            sql,
            "referenced_{i} AS (\n  {statement}\n  RETURNING 1\n),\n\
             referenced_{i}_kept AS (\n  SELECT count(*) AS n FROM {table} x WHERE {referenced_rows} AND {shared}\n),",
            table = r.table.sql(),
        );
    }
    let condition = format!("x.{key_column} IN ({subjects})");
    let statement = change(
        plan,
        &subject.table,
        &subject.action,
        &condition,
        subject_id,
        &mut params,
    );
    let _ = writeln!(sql, "subject AS (\n  {statement}\n  RETURNING 1\n),");

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
        for (i, r) in plan.referenced.iter().enumerate() {
            if r.counted_as == count_key {
                sources.push(format!("(SELECT count(*) FROM referenced_{i})"));
            }
            if r.kept_as == count_key {
                sources.push(format!("(SELECT n FROM referenced_{i}_kept)"));
            }
        }
        if subject.counted_as == count_key {
            sources.push("(SELECT count(*) FROM subject)".into());
        }
        pairs.push(format!(
            "'{}', {}",
            count_key.replace('\'', "''"),
            sources.join(" + ")
        ));
    }
    let _ = writeln!(
        sql,
        "counts AS (\n  SELECT jsonb_build_object({}) AS data_json\n),",
        pairs.join(", ")
    );

    let (hashes, first_hash) = lookup_hashes(plan, "t");
    let _ = writeln!(
        sql,
        "{}",
        statement::outcome(&request, &first_hash, &hashes, &already_erased(plan))
    );
    let _ = writeln!(sql, "{}", statement::audit(&request));
    let _ = writeln!(
        sql,
        "unclaim AS (\n  DELETE FROM erasure.claims WHERE request_id = {req} AND EXISTS (SELECT 1 FROM outcome)\n)",
        req = request.request_id,
    );
    let _ = write!(sql, "SELECT {COLUMNS} FROM outcome");
    params.finish(sql)
}

/// Whether the customer had been erased already: only a kept (anonymized) customer can be
/// found again after its erasure, and it was if nothing was left to clear anywhere.
fn already_erased(plan: &Plan) -> String {
    if plan.subject.action == Action::Delete {
        return "false".into();
    }
    let mut nothing = vec!["NOT EXISTS (SELECT 1 FROM subject)".to_string()];
    nothing.extend((0..plan.steps.len()).map(|i| format!("NOT EXISTS (SELECT 1 FROM step_{i})")));
    nothing.extend(
        (0..plan.referenced.len()).map(|i| format!("NOT EXISTS (SELECT 1 FROM referenced_{i})")),
    );
    format!("({})", nothing.join(" AND "))
}

/// Whether row `alias` of a referenced table is still referenced by a row that stays: any row
/// pointing at it but the customer's own, and those the plan deletes, or anonymizes clearing
/// that very column.
fn still_referenced(plan: &Plan, r: &Referenced, alias: &str, subjects: &str) -> String {
    let subject = &plan.subject;
    let mut references: Vec<(crate::plan::TableName, String)> = plan
        .facts
        .references
        .get(&r.table)
        .cloned()
        .unwrap_or_default();
    if !references.contains(&(subject.table.clone(), r.from.clone())) {
        references.push((subject.table.clone(), r.from.clone()));
    }
    let others: Vec<String> = references
        .iter()
        .map(|(table, column)| {
            let erased = if table == &subject.table {
                Some(format!("o.{} IN ({subjects})", ident(&subject.key)))
            } else {
                plan.step(table).and_then(|step| match &step.action {
                    Action::Delete => Some(reach(plan, &step.paths, "o", 0, subjects)),
                    Action::Anonymize(a) if a.set_null.contains(column) => {
                        Some(reach(plan, &step.paths, "o", 0, subjects))
                    }
                    Action::Anonymize(_) => None,
                })
            };
            let stays = erased.map_or(String::new(), |e| format!(" AND NOT ({e})"));
            format!(
                "EXISTS (SELECT 1 FROM {} o WHERE o.{} = {alias}.{}{stays})",
                table.sql(),
                ident(column),
                ident(&r.key),
            )
        })
        .collect();
    format!("({})", others.join(" OR "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BUILT_IN;

    #[test]
    fn the_statement_binds_values_and_quotes_identifiers() {
        let statement = erase_statement(&Plan::parse(BUILT_IN).unwrap());
        let sql = &statement.sql;
        assert!(sql.contains(r#"DELETE FROM "public"."events" x"#), "{sql}");
        assert!(
            !sql.contains("'OPEN'"),
            "guard values are bound, not spliced"
        );
        assert!(sql.contains(
            r#"x."order_id" = ANY (ARRAY(SELECT p0."id" FROM "public"."orders" p0 WHERE p0."customer_id" = ANY (ARRAY(SELECT subject_key FROM go))))"#
        ), "{sql}");
        assert_eq!(statement.params[0].value, Value::Customer);
        assert!(
            statement
                .params
                .iter()
                .any(|p| p.value == Value::TextList(vec!["OPEN".into()]))
        );
    }

    #[test]
    fn no_path_column_is_cast() {
        let sql = erase_statement(&Plan::parse(BUILT_IN).unwrap()).sql;
        for column in ["customer_id", "order_id"] {
            assert!(!sql.contains(&format!("\"{column}\"::")), "{sql}");
        }
    }

    #[test]
    fn hostile_names_stay_inside_their_quotes() {
        let text = BUILT_IN.replace(
            "table = \"events\"",
            "table = \"events\\\"; DROP TABLE customers; --\"",
        );
        let sql = erase_statement(&Plan::parse(&text).unwrap()).sql;
        assert!(
            sql.contains(r#""events""; DROP TABLE customers; --""#),
            "{sql}"
        );
    }

    #[test]
    fn anonymizing_values_are_parameters_and_key_templates_use_the_key() {
        let text = format!(
            "{BUILT_IN}\n[[step]]\ntable = \"notes\"\ncolumn = \"customer_id\"\naction = \"anonymize\"\n\
             set_value = {{ author = \"erased-{{key}}\" }}\nremove_keys = {{ data = [\"email\"] }}\ncounted_as = \"notes\"\n"
        );
        let statement = erase_statement(&Plan::parse(&text).unwrap());
        assert!(
            statement
                .sql
                .contains("replace($17::text, '{key}', (SELECT subject_id FROM go))"),
            "{}",
            statement.sql
        );
        assert!(statement.sql.contains(r#""data" = "data" - $18::text[]"#));
        assert!(statement.sql.contains(r#"x."data" ?| $18::text[]"#));
        assert!(!statement.sql.contains("erased-"));
    }

    #[test]
    fn several_paths_are_any_of_them() {
        let text = BUILT_IN.replace(
            "table = \"events\"\ncolumn = \"customer_id\"",
            "table = \"events\"\npaths = [[\"customer_id -> customers.id\"], [\"order_id -> orders.id\"]]",
        );
        let sql = erase_statement(&Plan::parse(&text).unwrap()).sql;
        assert!(
            sql.contains(r#"(x."customer_id" = ANY (ARRAY(SELECT subject_key FROM go)) OR x."order_id" = ANY"#),
            "{sql}"
        );
    }
}
