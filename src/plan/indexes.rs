//! The columns the plan's statements find rows by that no index serves. Each such column makes
//! every erasure (and every preview, and every check after commit) read its whole table: fast
//! on a small table, a long lock-holding statement on a large one. `erasure plan` warns of each
//! with the table's size and the index to create; with `--strict` they are gaps.
//!
//! The columns are those the statements compare with a customer's values: each hop of every
//! step's and guard's paths (the column, and the key it leads to), the subject's key and
//! lookups (`lower(column)` for one compared in any case), and for each referenced table its
//! key and every column that references it (whether the row is still used is asked of each).
//! An index serves a column when its first key is that column (see
//! [`crate::plan::live::Storage::indexed`]); a partitioned table needs one on each partition.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::live::Storage;
use super::names::{sql_name, sql_table};
use super::{Plan, TableName};

/// A column the plan finds rows by, where no index serves it.
#[derive(Clone, Debug, PartialEq)]
pub struct Unindexed {
    /// The plan's table.
    pub table: TableName,
    /// The partition that lacks the index, when others have it; `None` when the whole table
    /// does.
    pub partition: Option<TableName>,
    pub column: String,
    /// Compared as `lower(column)`.
    pub folded: bool,
    /// The estimated rows of what is scanned; `None` when never analyzed.
    pub rows: Option<f64>,
}

impl fmt::Display for Unindexed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.folded {
            format!("lower({})", sql_name(&self.column))
        } else {
            sql_name(&self.column)
        };
        let rows = match self.rows {
            Some(rows) => format!("about {rows:.0} rows"),
            None => "rows unknown: never analyzed".to_string(),
        };
        let (relation, scanned) = match &self.partition {
            Some(partition) => (partition, format!("this partition of {}", self.table)),
            None => (&self.table, "the table".to_string()),
        };
        let column = match self.folded {
            true => format!("{relation}.{} has no index on {key}", self.column),
            false => format!("{relation}.{} has no index", self.column),
        };
        write!(
            f,
            "{column} ({rows}): every erasure scans {scanned}; CREATE INDEX ON {} ({key})",
            sql_table(relation)
        )
    }
}

/// The columns the plan's statements find rows by: (table, column, compared as `lower(column)`).
pub fn filtered(plan: &Plan) -> BTreeSet<(TableName, String, bool)> {
    let subject = &plan.subject;
    let mut columns = BTreeSet::from([(subject.table.clone(), subject.key.clone(), false)]);
    for lookup in &subject.lookups {
        columns.insert((
            subject.table.clone(),
            lookup.column.clone(),
            lookup.case_insensitive,
        ));
    }
    let paths = plan
        .steps
        .iter()
        .map(|s| (&s.table, &s.paths))
        .chain(plan.guards.iter().map(|g| (&g.table, &g.paths)));
    for (table, paths) in paths {
        for path in paths {
            let mut at = table;
            for hop in path {
                columns.insert((at.clone(), hop.column.clone(), false));
                columns.insert((hop.table.clone(), hop.key.clone(), false));
                at = &hop.table;
            }
        }
    }
    for r in &plan.referenced {
        columns.insert((r.table.clone(), r.key.clone(), false));
        columns.insert((subject.table.clone(), r.from.clone(), false));
        for (table, column) in plan.facts.references.get(&r.table).into_iter().flatten() {
            columns.insert((table.clone(), column.clone(), false));
        }
    }
    columns
}

/// Each column of [`filtered`] that no index serves, in `storage` (what
/// [`crate::plan::live::read_storage`] read): the whole table when no relation holding its rows
/// has the index, else each partition that lacks it.
pub fn unindexed(plan: &Plan, storage: &BTreeMap<TableName, Vec<Storage>>) -> Vec<Unindexed> {
    let mut found = Vec::new();
    for (table, column, folded) in filtered(plan) {
        let Some(relations) = storage.get(&table) else {
            continue;
        };
        let lacking: Vec<&Storage> = relations
            .iter()
            .filter(|s| !s.indexed(&column, folded))
            .collect();
        if lacking.is_empty() {
            continue;
        }
        // A table that is not partitioned is one relation: it lacks the index, or has it.
        if lacking.len() == relations.len() {
            found.push(Unindexed {
                table: table.clone(),
                partition: None,
                column,
                folded,
                rows: total_rows(relations),
            });
        } else {
            for storage in lacking {
                found.push(Unindexed {
                    table: table.clone(),
                    partition: Some(storage.relation.clone()),
                    column: column.clone(),
                    folded,
                    rows: storage.rows,
                });
            }
        }
    }
    found
}

/// The rows of every relation analyzed; `None` when none was.
fn total_rows(relations: &[Storage]) -> Option<f64> {
    relations.iter().filter_map(|s| s.rows).reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(relation: &str, rows: Option<f64>, keys: &[&str]) -> Storage {
        Storage {
            relation: TableName::parse(relation, "shop"),
            rows,
            index_keys: keys.iter().map(|k| k.to_string()).collect(),
        }
    }

    fn plan() -> Plan {
        Plan::parse(
            r#"schema = "shop"
[subject]
table = "customer"
key = "customer_id"
lookups = [{ column = "email", case_insensitive = true }]
counted_as = "customer"
[[step]]
table = "rental"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "rentals"
[[step]]
table = "payment"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "payments"
"#,
        )
        .unwrap()
    }

    #[test]
    fn a_table_without_the_index_is_named_with_its_rows_and_the_index_to_create() {
        let live = BTreeMap::from([
            (
                TableName::new("shop", "customer"),
                vec![storage(
                    "customer",
                    Some(10.0),
                    &["customer_id", "lower(email)"],
                )],
            ),
            (
                TableName::new("shop", "rental"),
                vec![storage("rental", Some(120000.0), &["rental_id"])],
            ),
            (
                TableName::new("shop", "payment"),
                vec![
                    storage("payment_2025", Some(7.0), &["customer_id"]),
                    storage("payment_2026", None, &[]),
                ],
            ),
        ]);
        let found: Vec<String> = unindexed(&plan(), &live)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "shop.payment_2026.customer_id has no index (rows unknown: never analyzed): every erasure scans this partition of shop.payment; CREATE INDEX ON shop.payment_2026 (customer_id)",
                "shop.rental.customer_id has no index (about 120000 rows): every erasure scans the table; CREATE INDEX ON shop.rental (customer_id)",
            ]
        );
    }

    #[test]
    fn a_lookup_in_any_case_needs_an_index_on_lower_and_odd_names_are_quoted() {
        let live = BTreeMap::from([(
            TableName::new("shop", "customer"),
            vec![storage("customer", Some(3.0), &["customer_id", "email"])],
        )]);
        let found: Vec<String> = unindexed(&plan(), &live)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            found,
            [
                "shop.customer.email has no index on lower(email) (about 3 rows): every erasure scans the table; CREATE INDEX ON shop.customer (lower(email))"
            ]
        );
    }
}
