//! Repointing kept rows at a placeholder row: rows a step keeps (invoices the law keeps) whose
//! foreign key to a row the erasure deletes cannot be null let go of it by a fixed `set_value`
//! on the key, which points them at a row that stays, created once (`erasure plan --draft`
//! writes the pattern out). The check accepts that as letting go, like `set_null`, and asks the
//! database whether the rows such values point at exist.

use sqlx::PgPool;

use super::live::LiveSchema;
use super::{Action, Anonymize, Plan, ident};

/// Whether a step's anonymizing action lets go of the row `column` points at: it nulls the
/// column, or repoints it at a placeholder row that stays (a fixed `set_value`; one with `{key}`
/// names a row of the customer's own). Either way the row it pointed at can be deleted. (A kept
/// subject may only null its links: asked again, its erasure would take a placeholder row it
/// points at for the customer's own.)
pub fn lets_go(a: &Anonymize, column: &str) -> bool {
    a.set_null.iter().any(|c| c == column)
        || a.set_value
            .iter()
            .any(|(c, value)| c == column && !value.contains("{key}"))
}

/// The rows a fixed `set_value` on a foreign key points kept rows at (a placeholder, as the
/// draft proposes) that do not exist: every erasure that keeps such a row would fail on the
/// key. Asked of the database; a value its column cannot take is a gap of its own ([`super::check`]).
pub async fn missing_placeholders(
    plan: &Plan,
    live: &LiveSchema,
    pool: &PgPool,
) -> Result<Vec<String>, sqlx::Error> {
    let actions = plan
        .steps
        .iter()
        .map(|s| (&s.table, &s.action))
        .chain(plan.referenced.iter().map(|r| (&r.table, &r.action)))
        .chain([(&plan.subject.table, &plan.subject.action)]);
    let mut gaps = Vec::new();
    for (table, action) in actions {
        let Action::Anonymize(a) = action else {
            continue;
        };
        for (column, value) in a.set_value.iter().filter(|(_, v)| !v.contains("{key}")) {
            let keys = live.foreign_keys.iter().filter(|k| {
                &k.child == table
                    && k.child_columns == [column.clone()]
                    && k.parent_columns.len() == 1
            });
            for fk in keys {
                let key = &fk.parent_columns[0];
                let Some(c) = live.column(&fk.parent, key) else {
                    continue;
                };
                let found = sqlx::query_scalar::<_, bool>(&format!(
                    "SELECT EXISTS (SELECT 1 FROM {} WHERE {} = CAST($1::text AS {}))",
                    fk.parent.sql(),
                    ident(key),
                    c.sql_type
                ))
                .bind(value)
                .fetch_one(pool)
                .await;
                match found {
                    Ok(true) => {}
                    Ok(false) => gaps.push(format!(
                        "set_value {value:?} points {table}.{column} at a row of {} that does not exist ({key} = {value:?}): \
                         create that placeholder row first, or every erasure keeping such a row fails on foreign key {}",
                        fk.parent, fk.name
                    )),
                    Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("22")) => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(gaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_let_go_by_nulling_it_or_by_a_fixed_value_but_not_by_the_customers_own() {
        let a = Anonymize {
            set_null: vec!["note".into()],
            set_value: vec![
                ("client_id".into(), "0".into()),
                ("owner".into(), "erased-{key}".into()),
            ],
            ..Anonymize::default()
        };
        assert!(lets_go(&a, "note"));
        assert!(lets_go(&a, "client_id"));
        assert!(!lets_go(&a, "owner"));
        assert!(!lets_go(&a, "billing_name"));
    }
}
