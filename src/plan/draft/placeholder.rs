//! The placeholder pattern, for rows a step keeps whose foreign key to a row the erasure
//! deletes (the customer, or a row of another step) cannot be null: an invoice the law keeps,
//! and its customer. The kept rows are repointed at a placeholder row that stays, created once,
//! so that the row they pointed at can go. The plan says it with a fixed `set_value` on the key,
//! which the check accepts as letting go, like `set_null`; an erasure naming the placeholder
//! itself fails, changing nothing, while rows point at it. The draft writes the pattern out as
//! comments: the SQL that creates the placeholder row, and the `set_value` that points at it.
//!
//! Not for the rows the customer references (an address): a kept customer cannot be repointed,
//! since asked again its erasure would take the placeholder row for the customer's own; the
//! draft says to anonymize such a row instead.

use super::blank;
use crate::plan::TableName;
use crate::plan::live::{Column, LiveSchema};
use crate::plan::names::{sql_name, sql_table};

/// The key a placeholder row takes, by the key's type, as the plan's `set_value` writes it.
fn placeholder_key(column: &Column) -> Option<&'static str> {
    match column.base_type() {
        "smallint" | "integer" | "bigint" | "numeric" => Some("0"),
        "uuid" => Some("00000000-0000-0000-0000-000000000000"),
        "text" | "character varying" | "character" => Some("placeholder"),
        _ => None,
    }
}

/// `text` as a SQL literal of `column`'s type: bare for numbers and booleans, quoted otherwise.
fn literal(column: &Column, text: &str) -> String {
    match column.base_type() {
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" | "boolean" => {
            text.to_owned()
        }
        _ => format!("'{}'", text.replace('\'', "''")),
    }
}

/// The key value, and the statement that creates the placeholder row of `table` with it: its
/// key and every column that cannot be null and has no default, each with a value that says
/// nothing of anyone (a foreign key with a comment asking for a row that stays). `None` when
/// the key's type has no obvious placeholder value.
pub fn insert(live: &LiveSchema, table: &TableName, key: &str) -> Option<(String, String)> {
    let t = live.tables.get(table)?;
    let key_column = t.columns.get(key)?;
    let value = placeholder_key(key_column)?;
    let mut columns = vec![sql_name(key)];
    let mut values = vec![literal(key_column, value)];
    for (name, column) in &t.columns {
        if name == key || column.nullable || column.has_default {
            continue;
        }
        let reference = live
            .foreign_keys
            .iter()
            .find(|k| &k.child == table && k.child_columns == [name.clone()]);
        columns.push(sql_name(name));
        values.push(match (reference, blank(column, "placeholder")) {
            (Some(k), _) => format!("/* a {}.{} that stays */", k.parent, k.parent_columns[0]),
            (None, Some(blank)) => literal(column, blank),
            (None, None) => format!("/* a {} */", column.sql_type),
        });
    }
    let overriding = match key_column.identity {
        true => " OVERRIDING SYSTEM VALUE",
        false => "",
    };
    let sql = format!(
        "INSERT INTO {} ({}){overriding} VALUES ({});",
        sql_table(table),
        columns.join(", "),
        values.join(", ")
    );
    Some((value.to_owned(), sql))
}

/// The comment for rows of `child` that must be kept while `column`, which cannot be null,
/// points at a row of `parent` (by `parent_key`) that the erasure deletes: `kept_in` says where
/// the `set_value` goes ("in this step"). Empty when the key's type has no obvious placeholder
/// value.
pub fn comment(
    live: &LiveSchema,
    child: &TableName,
    column: &str,
    parent: &TableName,
    parent_key: &str,
    kept_in: &str,
) -> String {
    let Some((value, sql)) = insert(live, parent, parent_key) else {
        return String::new();
    };
    format!(
        "# {child}.{column} cannot be null. To keep those rows and still erase the {parent} row they point at,\n\
         # repoint them at a placeholder row that stays, created once:\n\
         #   {sql}\n\
         # and {kept_in}: action = \"anonymize\" with set_value = {{ {column} = {value:?} }} (beside the personal columns it clears).\n"
    )
}
