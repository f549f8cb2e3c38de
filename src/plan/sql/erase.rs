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
    change, clears_a_path, erased_elsewhere, hops, lookup_hash_columns, lookup_hashes,
    owned_by_others, owner, reach, subject_matches, used,
};
use super::{Field, Params, Statement, Value};
use crate::deletion::COLUMNS;
use crate::deletion::{claims, statement};
use crate::plan::{Action, PathHops, Plan, Step, ident};

/// The keys of the customers the statement erases.
const GO: &str = "ARRAY(SELECT subject_key FROM go)";

/// The erasure statement for `plan` (its facts filled by the live-schema check).
pub fn erase_statement(plan: &Plan) -> Statement {
    statement(plan, Params::default())
}

/// The erasure statement's reading twin, for previews: the same customers, guards and rows,
/// each change written as the `SELECT` of the rows it would change, no row locked, and no
/// outcome recorded: it returns, for each customer a request names, `related_object_id`,
/// `data_json` (what the erasure would count) and the refusal (`error_key`, `error_message`)
/// if one holds. It writes nothing, so it runs in a `READ ONLY` transaction, and its figures
/// are the erasure's (the same conditions, read in one snapshot as the erasure's are).
pub fn count_statement(plan: &Plan) -> Statement {
    statement(plan, Params::counting())
}

fn statement(plan: &Plan, mut params: Params) -> Statement {
    let counting = params.is_counting();
    let key_type = plan.facts.key_type.sql();
    let key_array = key_array(plan);
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
    let inner_pad = params.typed(Value::InnerPad, "bytea");
    let outer_pad = params.typed(Value::OuterPad, "bytea");
    let threshold = params.typed(Value::ChunkThreshold, "bigint");
    arrays.push(params.typed(Value::Each(Field::Key), key_array));
    columns.push("key");
    arrays.push(params.typed(Value::Each(Field::Kind), "text[]"));
    columns.push("kind");
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
         ORDER BY s.{key_column}{lock}\n),\n\
         target AS MATERIALIZED (\n  SELECT DISTINCT ON (m.subject_key) m.n, l.*\n  \
         FROM matched m JOIN locked l ON l.subject_key = m.subject_key JOIN requests r ON r.n = m.n\n  \
         WHERE {not_ended}\n    \
         AND NOT EXISTS (SELECT 1 FROM matched a WHERE a.n = m.n AND a.subject_key <> m.subject_key)\n    \
         AND NOT {elsewhere}\n    \
         AND {unclaimed}\n  \
         ORDER BY m.subject_key, m.n\n),",
        matches = subject_matches(plan, "s", "r.customer", "r.key", "r.kind"),
        lock = if counting { "" } else { " FOR UPDATE OF s" },
        lookups = lookup_hash_columns(plan, "s", &mut params),
        not_ended = statement::not_ended("r.request_id"),
        unclaimed = claims::not_claimed_by_another("l.subject_id", "r.request_id"),
        elsewhere = erased_elsewhere(
            plan,
            "r.customer",
            "r.key",
            "r.kind",
            "l.subject_id",
            (&inner_pad, &outer_pad)
        ),
    );

    // For each customer, the first guard that holds, if any.
    let one = "ARRAY[t.subject_key]";
    let mut guards = Vec::new();
    for (i, guard) in plan.guards.iter().enumerate() {
        let message = params.typed(Value::Text(guard.message.clone()), "text");
        let when = super::guards::conditions(&plan.facts, guard, "g", &mut params);
        guards.push(format!(
            "    SELECT {i} AS ord, 'conflict'::text AS error_key, {message} AS error_message\n    \
             WHERE EXISTS (SELECT 1 FROM {table} g WHERE {reach}\n      AND {when})",
            table = guard.table.sql(),
            reach = reach(plan, &guard.paths, "g", 0, one),
        ));
    }
    // A row of another customer's that this one's erasure would have to erase with it (its link
    // to a row the erasure deletes cannot be null): refused, nothing changed.
    for step in &plan.steps {
        let refusals = others_refusals(plan, step, guards.len(), one, &mut params);
        guards.extend(refusals);
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
        if let Some(unlink) = unlink_others(plan, step, counting) {
            let _ = writeln!(sql, "step_{i}_others AS (\n  {unlink}\n),");
        }
    }
    // A row the customers reference is cleared when nothing else uses it. The rows were
    // locked before this statement began ([`lock_statement`]), so that an erasure sharing one
    // with this one either committed before (and this statement sees its customer gone) or
    // waits for this one (and then sees this customer gone): whichever clears the row counts
    // it, the other counts it kept.
    for (i, r) in plan.referenced.iter().enumerate() {
        let from = format!("{table} s, go g");
        let joined = format!(
            "x.{rkey} = s.{from_column} AND s.{key_column} = g.subject_key",
            rkey = ident(&r.key),
            from_column = ident(&r.from),
        );
        let shared = used(plan, r, "x", Some(GO));
        let statement = change(
            plan,
            &r.table,
            &r.action,
            Some(&from),
            &format!("{joined} AND NOT {shared}"),
            "g.subject_id",
            Some(&format!(
                "g.subject_key AS k, x.{}::text AS row_key",
                ident(&r.key)
            )),
            &mut params,
        );
        let _ = writeln!(
            sql,
            "referenced_{i} AS (\n  {statement}\n),\n\
             referenced_{i}_in_use AS (\n  SELECT g.subject_key AS k, x.{rkey}::text AS row_key FROM {rtable} x, {from}\n  \
             WHERE {joined}\n    AND NOT EXISTS (SELECT 1 FROM referenced_{i} c WHERE c.k = g.subject_key AND c.row_key = x.{rkey}::text)\n),\n\
             referenced_{i}_kept AS (\n  SELECT k, count(*) AS n FROM referenced_{i}_in_use GROUP BY k\n),",
            rtable = r.table.sql(),
            rkey = ident(&r.key),
        );
    }
    if let Some(unlink) = unlink_subject_links(plan, counting) {
        let _ = writeln!(sql, "subject_unlinked AS (\n  {unlink}\n),");
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
        if step.may_reach_others() {
            let v = match unlinkable(plan, step).is_empty() {
                true => "0".to_string(),
                false => count_from(format!("step_{i}_others"), true, &mut joins),
            };
            sources.push((step.others_as.clone(), v));
        }
    }
    for (i, r) in plan.referenced.iter().enumerate() {
        let v = count_from(format!("referenced_{i}"), true, &mut joins);
        sources.push((r.counted_as.clone(), v));
        let v = count_from(format!("referenced_{i}_kept"), false, &mut joins);
        sources.push((r.kept_as.clone(), v));
    }
    if !subject.unlink.is_empty() {
        let v = count_from("subject_unlinked".into(), true, &mut joins);
        sources.push((subject.unlinked_as.clone(), v));
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
        "counts AS (\n  SELECT g.subject_key, g.subject_id, jsonb_build_object({}) AS data_json,\n    {} = 0 AS unchanged,\n    {} AS kept\n  \
         FROM go g\n    {}\n),",
        pairs.join(", "),
        changed.join(" + "),
        kept_rows(plan),
        joins.join("\n    ")
    );

    let hashes = lookup_hashes(plan, "t");
    // Only a kept (anonymized) customer can be found again after its erasure, and it was
    // erased already if nothing was left to clear.
    let already_erased = match subject.action {
        Action::Delete => "false",
        Action::Anonymize(_) => "COALESCE(c.unchanged, false)",
    };
    let zero_counts = format!("jsonb_build_object({})", zeros.join(", "));
    if counting {
        let counted = sql.trim_end().trim_end_matches(',').len();
        sql.truncate(counted);
        let _ = write!(
            sql,
            "\nSELECT t.subject_id AS related_object_id, COALESCE(c.data_json, {zero_counts}) AS data_json,\n  \
             b.error_key, b.error_message\n\
             FROM target t LEFT JOIN counts c ON c.subject_key = t.subject_key LEFT JOIN blocked b ON b.subject_key = t.subject_key\n\
             ORDER BY t.n"
        );
        return params.finish(sql);
    }
    let plan_hash = params.typed(Value::Text(plan.hash.clone()), "text");
    let _ = writeln!(
        sql,
        "{}",
        statement::outcome(&hashes, &zero_counts, already_erased, &plan_hash)
    );
    let _ = writeln!(sql, "{}", statement::audit());
    let _ = writeln!(sql, "{}", statement::owed());
    let _ = writeln!(sql, "{}", statement::to_verify("counts"));
    let _ = writeln!(sql, "{}", claims::unclaim());
    let _ = write!(sql, "SELECT {COLUMNS} FROM outcome");
    params.finish(sql)
}

/// For a plan with rows the customer references: the statement that runs before the erasure
/// statement, in its transaction, and locks the customers a batch names (in key order, as the
/// erasure statement does) and then the rows they reference (in key order, table by table).
///
/// Why a statement of its own: the erasure statement clears a referenced row only when nothing
/// else uses it, and it decides that in the snapshot it started with. Two erasures of customers
/// sharing an address, each starting before the other committed, would each see the other still
/// pointing at it, and both keep it. With the rows locked first, the second waits for the first
/// to commit before its erasure statement (and its snapshot) begins: it sees the first
/// customer gone, and clears the row.
pub fn lock_statement(plan: &Plan) -> Option<Statement> {
    if plan.referenced.is_empty() {
        return None;
    }
    let mut params = Params::default();
    let key_array = key_array(plan);
    let customers = params.typed(Value::Each(Field::Customer), "text[]");
    let keys = params.typed(Value::Each(Field::Key), key_array);
    let kinds = params.typed(Value::Each(Field::Kind), "text[]");
    let subject = &plan.subject;
    let table = subject.table.sql();
    let key_column = ident(&subject.key);
    let froms: Vec<String> = plan
        .referenced
        .iter()
        .enumerate()
        .map(|(i, r)| format!(", s.{} AS from_{i}", ident(&r.from)))
        .collect();
    let mut sql = format!(
        "WITH requests AS MATERIALIZED (\n  SELECT * FROM unnest({customers}, {keys}, {kinds}) AS r(customer, key, kind)\n),\n\
         matched AS MATERIALIZED (\n  SELECT s.{key_column} AS subject_key FROM requests r JOIN {table} s ON {matches}\n),\n\
         locked AS MATERIALIZED (\n  SELECT s.{key_column} AS subject_key{froms}\n  \
         FROM {table} s WHERE s.{key_column} = ANY (ARRAY(SELECT subject_key FROM matched))\n  \
         ORDER BY s.{key_column} FOR UPDATE OF s\n)",
        matches = subject_matches(plan, "s", "r.customer", "r.key", "r.kind"),
        froms = froms.concat(),
    );
    let mut counts = vec!["(SELECT count(*) FROM locked)".to_string()];
    for (i, r) in plan.referenced.iter().enumerate() {
        let rkey = ident(&r.key);
        let _ = write!(
            sql,
            ",\nreferenced_{i} AS MATERIALIZED (\n  SELECT x.{rkey} FROM {rtable} x WHERE x.{rkey} = ANY (ARRAY(SELECT from_{i} FROM locked))\n  \
             ORDER BY x.{rkey} FOR UPDATE OF x\n)",
            rtable = r.table.sql(),
        );
        counts.push(format!("(SELECT count(*) FROM referenced_{i})"));
    }
    let _ = write!(sql, "\nSELECT {}", counts.join(" + "));
    Some(params.finish(sql))
}

/// The array type of the subject's key.
fn key_array(plan: &Plan) -> &'static str {
    match plan.facts.key_type.sql() {
        "integer" => "integer[]",
        "bigint" => "bigint[]",
        "uuid" => "uuid[]",
        _ => "text[]",
    }
}

/// A step's change, returning each changed row's customer key as `k` (and, for an
/// anonymizing step of a table with a primary key, the row's key as `row_key`).
///
/// A `DELETE`'s `RETURNING` sees the row as it was, and so does an `UPDATE`'s as long as the
/// columns its paths start from stay: then the row's owner is followed from the row itself. An
/// `UPDATE` that clears such a column (rows that must let go of a deleted parent) joins the
/// customers instead (one hop) or the rows it picked with their owners, by row address.
///
/// A step with several paths leaves alone the rows another live subject owns
/// ([`owned_by_others`]); [`unlink_others`] clears their links to the customers instead.
fn step_change(plan: &Plan, step: &Step, params: &mut Params) -> String {
    let condition = mine(plan, step, "x");
    let row_key = match (&step.action, plan.facts.row_keys.get(&step.table)) {
        (Action::Anonymize(_), Some((key, _))) => format!(", x.{}::text AS row_key", ident(key)),
        _ => String::new(),
    };
    if !clears_a_path(&step.action, &step.paths) {
        let owner = owner(plan, &step.paths, "x", 0, GO);
        return change(
            plan,
            &step.table,
            &step.action,
            None,
            &condition,
            &format!("({owner})::text"),
            Some(&format!("{owner} AS k{row_key}")),
            params,
        );
    }
    if let [path] = step.paths.as_slice()
        && let [hop] = &path.hops[..]
        && plan.reaches_subject(hop)
    {
        return change(
            plan,
            &step.table,
            &step.action,
            Some("go g"),
            &format!("x.{} = g.subject_key", ident(&hop.column)),
            "g.subject_id",
            Some(&format!("g.subject_key AS k{row_key}")),
            params,
        );
    }
    let picked = format!(
        "(SELECT y.tableoid AS rel, y.ctid AS row_id, {owner} AS k FROM {table} y WHERE {mine}) m",
        owner = owner(plan, &step.paths, "y", 0, GO),
        table = step.table.sql(),
        mine = mine(plan, step, "y"),
    );
    change(
        plan,
        &step.table,
        &step.action,
        Some(&picked),
        "x.tableoid = m.rel AND x.ctid = m.row_id",
        "m.k::text",
        Some(&format!("m.k AS k{row_key}")),
        params,
    )
}

/// The condition that row `alias` of `step`'s table is one of the erased customers' own.
fn mine(plan: &Plan, step: &Step, alias: &str) -> String {
    super::reach::mine(plan, step, alias, GO)
}

/// The paths of `step` by which a row can reach the customer and then let go of it: those
/// whose first column can be null.
fn unlinkable<'a>(plan: &Plan, step: &'a Step) -> Vec<&'a PathHops> {
    step.paths
        .iter()
        .filter(|path| plan.facts.is_nullable(&step.table, &path[0].column))
        .collect()
}

/// The rows of `step`'s table that another live subject owns but that reach the erased
/// customers too (a payment another customer made on this customer's rental): each lets go of
/// the customer (the first column of every path that leads there is set to null), and is
/// counted under the step's `others_as` for the customer it let go of. `None` when no path's
/// first column can be null (such rows are refused instead; see [`others_refusals`]).
/// The other customers' rows that point at the customers by a column of the subject's own
/// table (`referred_by`): that column set to NULL, in the same statement, and each counted for
/// the customer it pointed at. The customers' own rows are left to the subject's change.
fn unlink_subject_links(plan: &Plan, counting: bool) -> Option<String> {
    let subject = &plan.subject;
    if subject.unlink.is_empty() {
        return None;
    }
    let points = |alias: &str, column: &str| format!("{alias}.{} = ANY ({GO})", ident(column));
    let sets: Vec<String> = subject
        .unlink
        .iter()
        .map(|c| {
            format!(
                "{col} = CASE WHEN {} THEN NULL ELSE x.{col} END",
                points("x", c),
                col = ident(c)
            )
        })
        .collect();
    let owner: Vec<String> = subject
        .unlink
        .iter()
        .map(|c| format!("CASE WHEN {} THEN y.{} END", points("y", c), ident(c)))
        .collect();
    let any: Vec<String> = subject.unlink.iter().map(|c| points("y", c)).collect();
    if counting {
        return Some(format!(
            "SELECT COALESCE({owner}) AS k FROM {table} y WHERE ({any}) AND NOT (y.{key} = ANY ({GO}))",
            table = subject.table.sql(),
            owner = owner.join(", "),
            any = any.join(" OR "),
            key = ident(&subject.key),
        ));
    }
    Some(format!(
        "UPDATE {table} x SET {sets}\n  FROM (SELECT y.tableoid AS rel, y.ctid AS row_id, COALESCE({owner}) AS k FROM {table} y\n    \
         WHERE ({any}) AND NOT (y.{key} = ANY ({GO}))) m\n  \
         WHERE x.tableoid = m.rel AND x.ctid = m.row_id RETURNING m.k AS k",
        table = subject.table.sql(),
        sets = sets.join(", "),
        owner = owner.join(", "),
        any = any.join(" OR "),
        key = ident(&subject.key),
    ))
}

fn unlink_others(plan: &Plan, step: &Step, counting: bool) -> Option<String> {
    if !step.may_reach_others() {
        return None;
    }
    let paths = unlinkable(plan, step);
    if paths.is_empty() {
        return None;
    }
    let mut by_column: Vec<(&str, Vec<String>)> = Vec::new();
    for path in &paths {
        let reaches = hops(plan, path, "x", 0, GO);
        match by_column.iter_mut().find(|(c, _)| *c == path[0].column) {
            Some((_, conditions)) => conditions.push(reaches),
            None => by_column.push((&path[0].column, vec![reaches])),
        }
    }
    let sets: Vec<String> = by_column
        .iter()
        .map(|(column, conditions)| {
            format!(
                "{c} = CASE WHEN {} THEN NULL ELSE x.{c} END",
                conditions.join(" OR "),
                c = ident(column)
            )
        })
        .collect();
    let any_link: Vec<String> = paths
        .iter()
        .map(|path| hops(plan, path, "y", 0, GO))
        .collect();
    if counting {
        return Some(format!(
            "SELECT {owner} AS k FROM {table} y WHERE {reached} AND {others} AND ({any_link})",
            table = step.table.sql(),
            owner = owner(plan, &step.paths, "y", 0, GO),
            reached = reach(plan, &step.paths, "y", 0, GO),
            others = owned_by_others(plan, step, "y", 0, GO),
            any_link = any_link.join(" OR "),
        ));
    }
    Some(format!(
        "UPDATE {table} x SET {sets}\n  FROM (SELECT y.tableoid AS rel, y.ctid AS row_id, {owner} AS k FROM {table} y\n    \
         WHERE {reached} AND {others} AND ({any_link})) m\n  \
         WHERE x.tableoid = m.rel AND x.ctid = m.row_id RETURNING m.k AS k",
        table = step.table.sql(),
        sets = sets.join(", "),
        owner = owner(plan, &step.paths, "y", 0, GO),
        reached = reach(plan, &step.paths, "y", 0, GO),
        others = owned_by_others(plan, step, "y", 0, GO),
        any_link = any_link.join(" OR "),
    ))
}

/// The refusals (for the `blocked` step, ordered from `ord`) of a customer `one` whose erasure
/// would have to take another subject's rows of `step` with it: rows another live subject
/// owns that point at this customer's rows by a column that cannot be null, where those rows
/// are deleted. One per such path; the message names the table, the column and how many rows.
fn others_refusals(
    plan: &Plan,
    step: &Step,
    ord: usize,
    one: &str,
    params: &mut Params,
) -> Vec<String> {
    if !step.may_reach_others() {
        return Vec::new();
    }
    let stuck = step.paths.iter().filter(|path| {
        !plan.facts.is_nullable(&step.table, &path[0].column) && deletes_rows_of(plan, &path[0])
    });
    stuck
        .enumerate()
        .map(|(i, path)| {
            let message = format!(
                "%s of {table} %s to another customer by another path and %s at this customer's rows by {column}, \
                 which cannot be null: erasing this customer would erase them too, so nothing was erased. \
                 Erase the other customer first, or, if such rows are this customer's, mark the other path \
                 only_when_unowned in the plan",
                table = step.table,
                column = path[0].column,
            );
            let message = params.typed(Value::Text(message), "text");
            format!(
                "    SELECT {ord} AS ord, 'conflict'::text AS error_key,\n      \
                 format({message}, CASE WHEN c.n = 1 THEN '1 row' ELSE c.n || ' rows' END,\n        \
                 CASE WHEN c.n = 1 THEN 'belongs' ELSE 'belong' END, CASE WHEN c.n = 1 THEN 'points' ELSE 'point' END) AS error_message\n    \
                 FROM (SELECT count(*) AS n FROM {table} y WHERE {reaching} AND {others}) c WHERE c.n > 0",
                ord = ord + i,
                table = step.table.sql(),
                reaching = hops(plan, path, "y", 0, one),
                others = owned_by_others(plan, step, "y", 0, one),
            )
        })
        .collect()
}

/// Whether the erasure deletes the rows `hop` points at (the subject's, or a deleting step's).
fn deletes_rows_of(plan: &Plan, hop: &crate::plan::Hop) -> bool {
    if plan.reaches_subject(hop) {
        return plan.subject.action == Action::Delete;
    }
    plan.step(&hop.table)
        .is_some_and(|s| s.action == Action::Delete)
}

/// Per customer (in `counts`), the rows its erasure left in place, by key, for the check after
/// commit to read again: `{"rows": {table: [keys]}, "in_use": {table: [keys]}}`, the rows it
/// anonymized (whose links to the customer may be cleared, so that no path finds them again),
/// and the rows it references that it kept because something else still uses them. NULL
/// when the plan keeps none.
fn kept_rows(plan: &Plan) -> String {
    let pick = |cte: &str| {
        format!(
            "(SELECT jsonb_agg(e.row_key ORDER BY e.row_key) FROM {cte} e WHERE e.k = g.subject_key)"
        )
    };
    let mut rows = Vec::new();
    for (i, step) in plan.steps.iter().enumerate() {
        if matches!(step.action, Action::Anonymize(_))
            && plan.facts.row_keys.contains_key(&step.table)
        {
            rows.push(format!(
                "'{}', {}",
                literal_text(&step.table.to_string()),
                pick(&format!("step_{i}"))
            ));
        }
    }
    let mut in_use = Vec::new();
    for (i, r) in plan.referenced.iter().enumerate() {
        let name = literal_text(&r.table.to_string());
        if matches!(r.action, Action::Anonymize(_)) {
            rows.push(format!("'{name}', {}", pick(&format!("referenced_{i}"))));
        }
        in_use.push(format!(
            "'{name}', {}",
            pick(&format!("referenced_{i}_in_use"))
        ));
    }
    if rows.is_empty() && in_use.is_empty() {
        return "NULL::jsonb".into();
    }
    format!(
        "jsonb_build_object('rows', jsonb_strip_nulls(jsonb_build_object({})), 'in_use', jsonb_strip_nulls(jsonb_build_object({})))",
        rows.join(", "),
        in_use.join(", ")
    )
}

/// `text` with its quotes doubled, for an SQL string literal of the plan's own names.
fn literal_text(text: &str) -> String {
    text.replace('\'', "''")
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
             set_value = {{ author = \"erased-{{key}}\" }}\nremove_keys = {{ data = [\"email\", \"contact.phone\"] }}\ncounted_as = \"notes\"\n"
        );
        let statement = erase_statement(&Plan::parse(&text).unwrap());
        let n = |value: &str| {
            1 + statement
                .params
                .iter()
                .position(|p| match &p.value {
                    Value::Text(v) => v == value,
                    Value::TextList(v) => v.join(".") == value,
                    _ => false,
                })
                .unwrap_or_else(|| panic!("{value} is bound"))
        };
        let (template, top, nested) = (n("erased-{key}"), n("email"), n("contact.phone"));
        let sql = &statement.sql;
        assert!(
            sql.contains(&format!(
                r#"replace(${template}::text, '{{key}}', (x."customer_id")::text)"#
            )),
            "{sql}"
        );
        // A top-level key and a path into nested objects, removed and looked for.
        assert!(
            sql.contains(&format!(
                r#""data" = (("data" - ${top}::text[]) #- ${nested}::text[])"#
            )),
            "{sql}"
        );
        assert!(sql.contains(&format!(r#"x."data" ?| ${top}::text[]"#)));
        assert!(sql.contains(&format!(r#"x."data" #> ${nested}::text[] IS NOT NULL"#)));
        assert!(!sql.contains("erased-"));
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
