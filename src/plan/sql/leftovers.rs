//! The check after commit ([`crate::proof::verification`]): for each erased customer, the
//! tables where something of it is still found. Read-only, and apart from the erasure's own
//! decisions: it follows the plan's paths from the customer's key again, and it reads again, by
//! key, exactly the rows the erasure recorded that it kept (`kept`, see
//! [`super::erase_statement`]): the rows it anonymized (whose link to the customer it may have
//! cleared, so that no path finds them), what hangs off them, and the rows the customer
//! referenced that it left because something else used them.

use super::reach::{Anchor, anonymize, owned_by_others, reach_anchored, used};
use super::{Params, Statement, Value};
use crate::plan::{Action, Plan, Referenced, TableName, ident};

/// One row per customer key of the text array `subject_ids` (beside what each erasure kept,
/// the jsonb array `kept`): `n`, its place in the arrays (from 1), and `tables`, the tables (as
/// `schema.table`, in the plan's order, a table at most twice) where something is left:
/// - a row the plan deletes, reached from the customer (also through a row it kept);
/// - a personal column an anonymizing step clears, still set (time markers, `set_now`, hold
///   nothing personal and are not checked);
/// - the subject itself (or, where the plan keeps it, its personal columns);
/// - a row the customer referenced, kept because something used it, that nothing alive uses
///   any more (its personal data would stay for good), or, anonymized, not cleared.
///
/// A row that another live subject owns by another path is not the customer's, and not
/// counted.
pub fn leftovers_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    let ids = params.typed(Value::SubjectIds, "text[]");
    let kept = params.typed(Value::KeptRows, "jsonb[]");
    let key_type = plan.facts.key_type.sql();
    let one = format!("ARRAY[CAST(k.id AS {key_type})]");
    let anchors: Vec<Anchor> = plan
        .facts
        .row_keys
        .iter()
        .map(|(table, (key, sql_type))| Anchor {
            table: table.clone(),
            key: key.clone(),
            keys: kept_keys("rows", table, sql_type),
        })
        .collect();
    let mut checks = Vec::new();
    for step in &plan.steps {
        let mut mine = reach_anchored(plan, &step.paths, "x", 0, &one, &anchors);
        if let Some(anchor) = anchors.iter().find(|a| a.table == step.table) {
            mine = format!(
                "({mine} OR x.{} = ANY ({}))",
                ident(&anchor.key),
                anchor.keys
            );
        }
        if step.may_reach_others() {
            mine = format!(
                "{mine} AND NOT {}",
                owned_by_others(plan, step, "x", 0, &one)
            );
        }
        let condition = match &step.action {
            Action::Delete => mine,
            // Stamped only: nothing personal to find.
            Action::Anonymize(a) if a.cleared().next().is_none() => continue,
            Action::Anonymize(a) => {
                let (_, changes) = anonymize(plan, &step.table, a, "x", "k.id", &mut params);
                format!("{mine} AND {changes}")
            }
        };
        checks.push(check(
            &step.table,
            &format!("{} x WHERE {condition}", step.table.sql()),
        ));
    }
    for r in &plan.referenced {
        if let Action::Anonymize(a) = &r.action
            && a.cleared().next().is_some()
        {
            let (_, changes) = anonymize(plan, &r.table, a, "x", "k.id", &mut params);
            checks.push(check(
                &r.table,
                &format!(
                    "{} x WHERE x.{} = ANY ({}) AND {changes}",
                    r.table.sql(),
                    ident(&r.key),
                    referenced_keys(plan, r, "rows"),
                ),
            ));
        }
        // Left in place because used; unused now, it would keep its personal data for good
        // (unless the plan anonymizes such rows and this one holds nothing left to clear).
        let left = match &r.action {
            Action::Delete => String::new(),
            Action::Anonymize(a) => {
                let (_, changes) = anonymize(plan, &r.table, a, "x", "k.id", &mut params);
                format!(" AND {changes}")
            }
        };
        checks.push(check(
            &r.table,
            &format!(
                "{} x WHERE x.{} = ANY ({}) AND NOT {}{left}",
                r.table.sql(),
                ident(&r.key),
                referenced_keys(plan, r, "in_use"),
                used(plan, r, "x", None),
            ),
        ));
    }
    let subject = &plan.subject;
    let mut condition = format!("s.{} = CAST(k.id AS {key_type})", ident(&subject.key));
    if let Action::Anonymize(a) = &subject.action {
        let (_, changes) = anonymize(plan, &subject.table, a, "s", "k.id", &mut params);
        condition = format!("{condition} AND {changes}");
    }
    checks.push(check(
        &subject.table,
        &format!("{} s WHERE {condition}", subject.table.sql()),
    ));
    let sql = format!(
        "SELECT k.n, array_remove(ARRAY[\n  {}\n], NULL) AS tables\n\
         FROM unnest({ids}, {kept}) WITH ORDINALITY AS k(id, kept, n)",
        checks.join(",\n  ")
    );
    params.finish(sql)
}

/// The keys the erasure recorded under `kind` (`rows` or `in_use`) for `table`, as an array
/// of the key's type `sql_type`.
fn kept_keys(kind: &str, table: &TableName, sql_type: &str) -> String {
    let name = table.to_string().replace('\'', "''");
    format!(
        "ARRAY(SELECT CAST(e AS {sql_type}) FROM jsonb_array_elements_text(k.kept -> '{kind}' -> '{name}') e)"
    )
}

/// The keys of a referenced table's rows the erasure recorded under `kind`.
fn referenced_keys(plan: &Plan, r: &Referenced, kind: &str) -> String {
    let sql_type = plan
        .facts
        .column_types
        .get(&(r.table.clone(), r.key.clone()))
        .map_or("text", String::as_str);
    kept_keys(kind, &r.table, sql_type)
}

/// `'schema.table'` when a row of `from_where` exists, else NULL.
fn check(table: &TableName, from_where: &str) -> String {
    let name = table.to_string().replace('\'', "''");
    format!("CASE WHEN EXISTS (SELECT 1 FROM {from_where}) THEN '{name}' END")
}
