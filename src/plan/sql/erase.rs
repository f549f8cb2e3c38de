//! The erasure statement: one SQL statement of data-modifying CTEs that erases a batch of
//! requests, each customer on its own terms: it locks the customers, evaluates each one's
//! guards, runs every step, clears the rows they reference, deletes (or anonymizes) them, and
//! writes each request's deletion object and audit row. One round trip, atomic by itself (no
//! BEGIN/COMMIT needed); a batch of one is the request carried out alone.
//!
//! How each customer keeps its own outcome in a batch:
//! - `requests` holds each request's values (one array element each); `target` pairs each
//!   customer with the first request naming it. Another request naming the same customer, one
//!   that names nobody, or one already ended, gets no row here: the caller carries it out alone
//!   (it finds the customer erased, or not found, or its outcome recorded).
//! - Guards and the size probe are evaluated per customer; `go` is the customers to erase.
//! - Every step returns, for each row it changed, the key of the customer it belongs to
//!   ([`owner`]), so counts are per customer; so are the rows the customers reference.
//!
//! How it stays correct under concurrency:
//! - `locked` locks the customer rows (`FOR UPDATE`) in key order, so that two batches naming
//!   the same customers lock them in the same order and never deadlock. A second erasure of a
//!   customer waits there; when the first commits, the row is gone and nothing is touched.
//! - A request id that already has a final outcome is not a target: a redelivery never erases
//!   again.
//! - A deletion row is written with `ON CONFLICT (request_id) DO UPDATE ... WHERE` the row is
//!   still open and names the same customer. When that condition fails (a concurrent delivery
//!   of the same request finished first), no row comes back, its audit insert violates
//!   `audit_log_outcome_has_deletion`, and the whole statement rolls back.
//! - Every step reads the snapshot the statement started with, and foreign keys are checked at
//!   its end: steps may run in any order, and a path through rows another step deletes or
//!   anonymizes still leads to the customer.
//! - `oversized` probes each step's table past the chunk threshold, for the customers the
//!   statistics say may be that large ([`crate::plan::sizes`]); a customer that large is
//!   left alone (no outcome row, no audit row) and the caller erases it in chunks
//!   ([`super::chunk_statements`]) before running this statement again. A customer claimed by
//!   another request's chunked erasure (`erasure.claims`) is not a target.

use std::fmt::Write;

use super::reach::{
    change, clears_a_path, lookup_hash_columns, lookup_hashes, owner, reach, subject_matches,
};
use super::{Field, Params, Statement, Value};
use crate::deletion::COLUMNS;
use crate::deletion::statement;
use crate::plan::{Action, Plan, Referenced, ident};

/// The keys of the customers the statement erases.
const GO: &str = "ARRAY(SELECT subject_key FROM go)";

/// The erasure statement for `plan` (its facts filled by the live-schema check).
pub fn erase_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    let key_type = plan.facts.key_type.sql();
    let key_array: &'static str = match key_type {
        "integer" => "integer[]",
        "bigint" => "bigint[]",
        "uuid" => "uuid[]",
        _ => "text[]",
    };
    // The requests' values come first, in a fixed order, so that their numbers stay put as
    // plans change.
    let each: Vec<(Field, &'static str, &str)> = vec![
        (Field::Customer, "text[]", "customer"),
        (Field::RequestId, "uuid[]", "request_id"),
        (Field::DeletionId, "text[]", "deletion_id"),
        (Field::RequestedHash, "bytea[]", "requested_hash"),
        (Field::RequestedBy, "text[]", "requested_by"),
        (Field::Reason, "text[]", "reason"),
        (Field::RequestedAt, "timestamptz[]", "requested_at"),
        (Field::DueAt, "timestamptz[]", "due_at"),
        (Field::Channel, "text[]", "channel"),
        (Field::ReceivedAt, "timestamptz[]", "received_at"),
    ];
    let mut arrays = Vec::new();
    let mut columns = Vec::new();
    for (field, sql_type, column) in &each {
        arrays.push(params.typed(Value::Each(*field), sql_type));
        columns.push(*column);
    }
    params.typed(Value::InnerPad, "bytea");
    params.typed(Value::OuterPad, "bytea");
    let threshold = params.typed(Value::ChunkThreshold, "bigint");
    arrays.push(params.typed(Value::Each(Field::Key), key_array));
    columns.push("key");
    let probed = params.typed(Value::Probed, "text[]");

    let subject = &plan.subject;
    let table = subject.table.sql();
    let key_column = ident(&subject.key);
    let mut sql = String::from(
        "WITH
",
    );
    let _ = writeln!(
        sql,
        "requests AS MATERIALIZED (\n  SELECT * FROM unnest({}) WITH ORDINALITY AS r({}, n)\n),",
        arrays.join(", "),
        columns.join(", ")
    );
    // Each request with the customer it names; then those customers, locked in key order (so
    // that batches never deadlock), with their lookup values' hashes; then each customer with
    // the first request naming it that has not ended.
    let _ = writeln!(
        sql,
        "matched AS MATERIALIZED (\n  SELECT r.n, s.{key_column} AS subject_key FROM requests r JOIN {table} s\n    ON {matches}\n),\n\
         locked AS MATERIALIZED (\n  SELECT s.{key_column} AS subject_key, s.{key_column}::text AS subject_id{lookups}\n  \
         FROM {table} s WHERE s.{key_column} = ANY (ARRAY(SELECT subject_key FROM matched))\n  \
         ORDER BY s.{key_column} FOR UPDATE OF s\n),\n\
         target AS MATERIALIZED (\n  SELECT DISTINCT ON (m.subject_key) m.n, l.*\n  \
         FROM matched m JOIN locked l ON l.subject_key = m.subject_key JOIN requests r ON r.n = m.n\n  \
         WHERE {not_ended}\n    \
         AND NOT EXISTS (SELECT 1 FROM erasure.claims k WHERE k.subject_id = l.subject_id AND k.request_id <> r.request_id)\n  \
         ORDER BY m.subject_key, m.n\n),",
        matches = subject_matches(plan, "s", "r.customer", "r.key"),
        lookups = lookup_hash_columns(plan, "s", &mut params),
        not_ended = statement::not_ended("r.request_id"),
    );

    // For each customer, the first guard that holds, if any.
    let one = "ARRAY[t.subject_key]";
    let mut guards = Vec::new();
    for (i, guard) in plan.guards.iter().enumerate() {
        let values = params.typed(Value::TextList(guard.when_in.clone()), "text[]");
        let message = params.typed(Value::Text(guard.message.clone()), "text");
        guards.push(format!(
            "    SELECT {i} AS ord, 'conflict'::text AS error_key, {message} AS error_message\n    \
             WHERE EXISTS (SELECT 1 FROM {table} g WHERE {reach}\n      AND g.{when}::text = ANY({values}))",
            table = guard.table.sql(),
            reach = reach(plan, &guard.paths, "g", 0, one),
            when = ident(&guard.when_column),
        ));
    }
    if guards.is_empty() {
        let _ = writeln!(
            sql,
            "blocked AS MATERIALIZED (\n  SELECT NULL::{key_type} AS subject_key, NULL::text AS error_key, NULL::text AS error_message WHERE false\n),"
        );
    } else {
        let _ = writeln!(
            sql,
            "blocked AS MATERIALIZED (\n  SELECT DISTINCT ON (t.subject_key) t.subject_key, g.error_key, g.error_message\n  \
             FROM target t CROSS JOIN LATERAL (\n{}\n  ) g\n  ORDER BY t.subject_key, g.ord\n),",
            guards.join("\n    UNION ALL\n")
        );
    }
    // Too many rows for one short statement: the customer is left alone and the caller erases
    // it in chunks. Probed are the customers the caller names (NULL: all of them); see
    // `crate::plan::sizes` for which.
    let _ = writeln!(
        sql,
        "oversized AS MATERIALIZED (\n  SELECT t.subject_key FROM target t\n  \
         WHERE ({probed} IS NULL OR t.subject_id = ANY ({probed}))\n    \
         AND NOT EXISTS (SELECT 1 FROM blocked b WHERE b.subject_key = t.subject_key)\n    AND ({})\n),",
        super::companions::oversized_probes(plan, one, &threshold)
    );
    sql.push_str(
        "go AS MATERIALIZED (\n  SELECT t.subject_key, t.subject_id FROM target t\n  \
         WHERE NOT EXISTS (SELECT 1 FROM blocked b WHERE b.subject_key = t.subject_key)\n    \
         AND NOT EXISTS (SELECT 1 FROM oversized o WHERE o.subject_key = t.subject_key)\n),\n",
    );

    // The steps, the rows the customers reference, then the customers themselves. Each returns
    // the key of the customer of every row it changed (`k`).
    for (i, step) in plan.steps.iter().enumerate() {
        let statement = step_change(plan, step, &mut params);
        let _ = writeln!(sql, "step_{i} AS (\n  {statement}\n),");
    }
    for (i, r) in plan.referenced.iter().enumerate() {
        let from = format!("{table} s, go g");
        let joined = format!(
            "x.{rkey} = s.{from_column} AND s.{key_column} = g.subject_key",
            rkey = ident(&r.key),
            from_column = ident(&r.from),
        );
        let shared = still_referenced(plan, r, "x");
        let statement = change(
            plan,
            &r.table,
            &r.action,
            Some(&from),
            &format!("{joined} AND NOT {shared}"),
            "g.subject_id",
            Some("g.subject_key AS k"),
            &mut params,
        );
        let _ = writeln!(
            sql,
            "referenced_{i} AS (\n  {statement}\n),\n\
             referenced_{i}_kept AS (\n  SELECT g.subject_key AS k, count(*) AS n FROM {rtable} x, {from}\n  \
             WHERE {joined} AND {shared} GROUP BY g.subject_key\n),",
            rtable = r.table.sql(),
        );
    }
    let statement = change(
        plan,
        &subject.table,
        &subject.action,
        None,
        &format!("x.{key_column} = ANY ({GO})"),
        &format!("x.{key_column}::text"),
        Some(&format!("x.{key_column} AS k")),
        &mut params,
    );
    let _ = writeln!(sql, "subject AS (\n  {statement}\n),");

    // Counts, per customer, in the plan's order.
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut joins = Vec::new();
    let mut changed = Vec::new();
    let mut count_from = |cte: String, counted: bool, joins: &mut Vec<String>| {
        let alias = format!("c_{cte}");
        let per_customer = if cte.ends_with("_kept") {
            cte.clone()
        } else {
            format!("(SELECT k, count(*) AS n FROM {cte} GROUP BY k)")
        };
        joins.push(format!(
            "LEFT JOIN {per_customer} {alias} ON {alias}.k = g.subject_key"
        ));
        let value = format!("COALESCE({alias}.n, 0)");
        if counted {
            changed.push(value.clone());
        }
        value
    };
    for (i, step) in plan.steps.iter().enumerate() {
        let v = count_from(format!("step_{i}"), true, &mut joins);
        sources.push((step.counted_as.clone(), v));
    }
    for (i, r) in plan.referenced.iter().enumerate() {
        let v = count_from(format!("referenced_{i}"), true, &mut joins);
        sources.push((r.counted_as.clone(), v));
        let v = count_from(format!("referenced_{i}_kept"), false, &mut joins);
        sources.push((r.kept_as.clone(), v));
    }
    let v = count_from("subject".into(), true, &mut joins);
    sources.push((subject.counted_as.clone(), v));
    let mut pairs = Vec::new();
    let mut zeros = Vec::new();
    for count_key in plan.count_keys() {
        let values: Vec<&str> = sources
            .iter()
            .filter(|(k, _)| *k == count_key)
            .map(|(_, v)| v.as_str())
            .collect();
        let literal = format!("'{}'", count_key.replace('\'', "''"));
        pairs.push(format!("{literal}, {}", values.join(" + ")));
        zeros.push(format!("{literal}, 0"));
    }
    let _ = writeln!(
        sql,
        "counts AS (\n  SELECT g.subject_key, jsonb_build_object({}) AS data_json,\n    {} = 0 AS unchanged\n  \
         FROM go g\n    {}\n),",
        pairs.join(", "),
        changed.join(" + "),
        joins.join("\n    ")
    );

    let (hashes, first_hash) = lookup_hashes(plan, "t");
    // Only a kept (anonymized) customer can be found again after its erasure, and it was
    // erased already if nothing was left to clear.
    let already_erased = match subject.action {
        Action::Delete => "false",
        Action::Anonymize(_) => "COALESCE(c.unchanged, false)",
    };
    let zero_counts = format!("jsonb_build_object({})", zeros.join(", "));
    let plan_hash = params.typed(Value::Text(plan.hash.clone()), "text");
    let _ = writeln!(
        sql,
        "{}",
        statement::outcome(
            &first_hash,
            &hashes,
            &zero_counts,
            already_erased,
            &plan_hash
        )
    );
    let _ = writeln!(sql, "{}", statement::audit());
    let _ = writeln!(sql, "{}", statement::owed());
    let _ = writeln!(sql, "{}", statement::to_verify());
    sql.push_str(
        "unclaim AS (\n  DELETE FROM erasure.claims WHERE request_id = ANY (ARRAY(SELECT request_id FROM outcome))\n)\n",
    );
    let _ = write!(sql, "SELECT {COLUMNS} FROM outcome");
    params.finish(sql)
}

/// A step's change, returning each changed row's customer key as `k`.
///
/// A `DELETE`'s `RETURNING` sees the row as it was, and so does an `UPDATE`'s as long as the
/// columns its paths start from stay: then the row's owner is followed from the row itself. An
/// `UPDATE` that clears such a column (rows that must let go of a deleted parent) joins the
/// customers instead (one hop) or the rows it picked with their owners, by `ctid`.
fn step_change(plan: &Plan, step: &crate::plan::Step, params: &mut Params) -> String {
    let condition = reach(plan, &step.paths, "x", 0, GO);
    if !clears_a_path(&step.action, &step.paths) {
        let owner = owner(plan, &step.paths, "x", 0, GO);
        return change(
            plan,
            &step.table,
            &step.action,
            None,
            &condition,
            &format!("({owner})::text"),
            Some(&format!("{owner} AS k")),
            params,
        );
    }
    if let [path] = step.paths.as_slice()
        && let [hop] = path.as_slice()
        && plan.reaches_subject(hop)
    {
        return change(
            plan,
            &step.table,
            &step.action,
            Some("go g"),
            &format!("x.{} = g.subject_key", ident(&hop.column)),
            "g.subject_id",
            Some("g.subject_key AS k"),
            params,
        );
    }
    let picked = format!(
        "(SELECT y.ctid AS row_id, {owner} AS k FROM {table} y WHERE {reach}) m",
        owner = owner(plan, &step.paths, "y", 0, GO),
        table = step.table.sql(),
        reach = reach(plan, &step.paths, "y", 0, GO),
    );
    change(
        plan,
        &step.table,
        &step.action,
        Some(&picked),
        "x.ctid = m.row_id",
        "m.k::text",
        Some("m.k AS k"),
        params,
    )
}

/// Whether row `alias` of a referenced table is still referenced by a row that stays: any row
/// pointing at it but the erased customers' own, and those this statement deletes, or
/// anonymizes clearing that very column.
fn still_referenced(plan: &Plan, r: &Referenced, alias: &str) -> String {
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
                Some(format!("o.{} = ANY ({GO})", ident(&subject.key)))
            } else {
                plan.step(table).and_then(|step| match &step.action {
                    Action::Delete => Some(reach(plan, &step.paths, "o", 0, GO)),
                    Action::Anonymize(a) if a.set_null.contains(column) => {
                        Some(reach(plan, &step.paths, "o", 0, GO))
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
        assert_eq!(statement.params[0].value, Value::Each(Field::Customer));
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
                .contains(r#"replace($18::text, '{key}', (x."customer_id")::text)"#),
            "{}",
            statement.sql
        );
        assert!(statement.sql.contains(r#""data" = "data" - $19::text[]"#));
        assert!(statement.sql.contains(r#"x."data" ?| $19::text[]"#));
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
