//! Names as a person writes them in SQL the service prints for them to run (`CREATE INDEX ON
//! shop.rental (customer_id)`): bare when they can be, quoted otherwise. The statements the
//! service runs itself quote every name ([`super::ident`]).

use super::{TableName, ident};

/// `name` as SQL writes it: bare when it can be, quoted otherwise.
pub fn sql_name(name: &str) -> String {
    let bare = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !RESERVED.contains(&name);
    if bare { name.to_owned() } else { ident(name) }
}

/// PostgreSQL's keywords that cannot name a column unquoted (`pg_get_keywords()`, categories
/// R and T).
#[rustfmt::skip]
const RESERVED: &[&str] = &[
    "all", "analyse", "analyze", "and", "any", "array", "as", "asc", "asymmetric", "authorization",
    "binary", "both", "case", "cast", "check", "collate", "collation", "column", "concurrently",
    "constraint", "create", "cross", "current_catalog", "current_date", "current_role",
    "current_schema", "current_time", "current_timestamp", "current_user", "default", "deferrable",
    "desc", "distinct", "do", "else", "end", "except", "false", "fetch", "for", "foreign",
    "freeze", "from", "full", "grant", "group", "having", "ilike", "in", "initially", "inner",
    "intersect", "into", "is", "isnull", "join", "lateral", "leading", "left", "like", "limit",
    "localtime", "localtimestamp", "natural", "not", "notnull", "null", "offset", "on", "only",
    "or", "order", "outer", "overlaps", "placing", "primary", "references", "returning", "right",
    "select", "session_user", "similar", "some", "symmetric", "table", "tablesample", "then", "to",
    "trailing", "true", "union", "unique", "user", "using", "variadic", "verbose", "when", "where",
    "window", "with",
];

/// `table` as [`sql_name`] writes names: `schema.table`.
pub fn sql_table(table: &TableName) -> String {
    format!("{}.{}", sql_name(&table.schema), sql_name(&table.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_quoted_only_when_they_must_be() {
        assert_eq!(sql_name("order_id"), "order_id");
        assert_eq!(sql_name("Order"), "\"Order\"");
        assert_eq!(sql_name("order"), "\"order\"");
        assert_eq!(sql_name("2fa"), "\"2fa\"");
        assert_eq!(
            sql_table(&TableName::new("Sales", "payment")),
            "\"Sales\".payment"
        );
    }
}
