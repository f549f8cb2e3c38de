//! The check after commit ([`crate::proof::verification`]): for each customer of a batch, the
//! tables where the plan's own paths still find something of it. Read-only.

use super::reach::{anonymize, reach};
use super::{Params, Statement, Value};
use crate::plan::{Action, Plan, TableName, ident};

/// One row per customer key of the text array `subject_ids`: `subject_id`, and `tables`, the
/// tables (as `schema.table`) where something is left: a row the plan deletes, a personal
/// column an anonymizing step clears still set, or the subject itself (or, where the plan
/// keeps it, its personal columns). Time markers (`set_now`) are not checked: they hold no
/// personal data. Rows the customer referenced are not checked either: once the customer row
/// is gone, nothing leads to them (and a shared one is kept on purpose).
pub fn leftovers_statement(plan: &Plan) -> Statement {
    let mut params = Params::default();
    let ids = params.typed(Value::SubjectIds, "text[]");
    let key_type = plan.facts.key_type.sql();
    let one = format!("ARRAY[CAST(k.id AS {key_type})]");
    let mut checks = Vec::new();
    for step in &plan.steps {
        let mut condition = reach(plan, &step.paths, "x", 0, &one);
        if let Action::Anonymize(a) = &step.action {
            let (_, changes) = anonymize(plan, &step.table, a, "x", "k.id", &mut params);
            condition = format!("{condition} AND {changes}");
        }
        checks.push(check(
            &step.table,
            &format!("{} x WHERE {condition}", step.table.sql()),
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
        "SELECT k.id AS subject_id, array_remove(ARRAY[\n  {}\n], NULL) AS tables\nFROM unnest({ids}) AS k(id)",
        checks.join(",\n  ")
    );
    params.finish(sql)
}

/// `'schema.table'` when a row of `from_where` exists, else NULL.
fn check(table: &TableName, from_where: &str) -> String {
    let name = table.to_string().replace('\'', "''");
    format!("CASE WHEN EXISTS (SELECT 1 FROM {from_where}) THEN '{name}' END")
}
