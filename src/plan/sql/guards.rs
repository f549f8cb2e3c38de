//! A guard as SQL: whether some row of its table, reached from the customer, meets every one of
//! its conditions. The plan's values are bound as text and cast to the column's type (the plan
//! check has asked the database that each casts), so `return_date < '2024-01-01'` compares dates,
//! not strings. A column whose type the plan check did not record (a plan built without one)
//! is compared as text.

use super::{Params, Value};
use crate::plan::{Condition, Facts, Guard, TableName, Test, ident};

/// The conditions of `guard` on the row `alias`, joined by AND.
pub fn conditions(facts: &Facts, guard: &Guard, alias: &str, params: &mut Params) -> String {
    guard
        .when
        .iter()
        .map(|c| condition(facts, &guard.table, c, alias, params))
        .collect::<Vec<_>>()
        .join(" AND ")
}

fn condition(
    facts: &Facts,
    table: &TableName,
    condition: &Condition,
    alias: &str,
    params: &mut Params,
) -> String {
    let sql_type = facts
        .column_types
        .get(&(table.clone(), condition.column.clone()));
    let column = match sql_type {
        Some(_) => format!("{alias}.{}", ident(&condition.column)),
        None => format!("{alias}.{}::text", ident(&condition.column)),
    };
    let sql_type = sql_type.map_or("text", String::as_str);
    let mut value = |v: &str| {
        let bound = params.typed(Value::Text(v.to_owned()), "text");
        format!("CAST({bound} AS {sql_type})")
    };
    match &condition.test {
        Test::IsNull => format!("{column} IS NULL"),
        Test::NotNull => format!("{column} IS NOT NULL"),
        Test::In(values) => {
            let bound = params.typed(Value::TextList(values.clone()), "text[]");
            format!("{column} = ANY(CAST({bound} AS {sql_type}[]))")
        }
        Test::Compare(op, v) => format!("{column} {} {}", op.operator(), value(v)),
        Test::Between(low, high) => {
            let (low, high) = (value(low), value(high));
            format!("{column} BETWEEN {low} AND {high}")
        }
    }
}
