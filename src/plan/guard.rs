//! Guards: conditions under which a customer is not erased (an open order, a loan not yet
//! returned, a fee unpaid), as the plan holds them, and how the TOML's `when` becomes them.
//! Their SQL is [`crate::plan::sql::guards`]; the plan check casts their values
//! ([`crate::plan::check`]).

use std::fmt;

use serde::Deserialize;

use super::document::value_text;
use super::{PathHops, TableName};

/// A condition under which the customer is not erased: a row of `table` that the paths reach
/// and that meets every one of `when`.
#[derive(Clone, Debug)]
pub struct Guard {
    pub name: String,
    pub table: TableName,
    pub paths: Vec<PathHops>,
    pub when: Vec<Condition>,
    pub message: String,
}

/// One test of one column of a guard's row. Values are kept as the plan wrote them, as text;
/// the plan check has the database cast each to the column's type (a value that cannot be of
/// that type is a gap), and the statement compares them as that type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub column: String,
    pub test: Test,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Test {
    /// Equal to one of the values (never true of NULL).
    In(Vec<String>),
    IsNull,
    NotNull,
    Compare(Comparison, String),
    /// Between the two values, both included.
    Between(String, String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl Comparison {
    /// As the plan writes it, and as SQL does.
    pub fn operator(self) -> &'static str {
        match self {
            Comparison::Less => "<",
            Comparison::LessOrEqual => "<=",
            Comparison::Greater => ">",
            Comparison::GreaterOrEqual => ">=",
        }
    }
}

impl Test {
    /// The values the test compares with.
    pub fn values(&self) -> Vec<&str> {
        match self {
            Test::In(values) => values.iter().map(String::as_str).collect(),
            Test::IsNull | Test::NotNull => Vec::new(),
            Test::Compare(_, value) => vec![value],
            Test::Between(low, high) => vec![low, high],
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let column = &self.column;
        match &self.test {
            Test::In(values) => write!(f, "{column} in {values:?}"),
            Test::IsNull => write!(f, "{column} is null"),
            Test::NotNull => write!(f, "{column} is not null"),
            Test::Compare(op, value) => write!(f, "{column} {} {value:?}", op.operator()),
            Test::Between(low, high) => write!(f, "{column} between {low:?} and {high:?}"),
        }
    }
}

/// One condition of a guard: a column and one or more tests of it, all of which must hold.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConditionDoc {
    column: String,
    #[serde(rename = "in")]
    values: Option<Vec<toml::Value>>,
    is_null: Option<bool>,
    not_null: Option<bool>,
    #[serde(rename = "<")]
    less: Option<toml::Value>,
    #[serde(rename = "<=")]
    less_or_equal: Option<toml::Value>,
    #[serde(rename = ">")]
    greater: Option<toml::Value>,
    #[serde(rename = ">=")]
    greater_or_equal: Option<toml::Value>,
    between: Option<Vec<toml::Value>>,
}

/// The conditions of a guard's `when`: a table, or a list of tables; every problem named.
pub(super) fn conditions(
    what: &str,
    when: &toml::Value,
    problems: &mut Vec<String>,
) -> Vec<Condition> {
    let docs = match when {
        toml::Value::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let mut conditions = Vec::new();
    for doc in docs {
        let doc: ConditionDoc = match doc.try_into() {
            Ok(doc) => doc,
            Err(e) => {
                problems.push(format!("{what}: `when` {}", e.message()));
                continue;
            }
        };
        let before = conditions.len();
        let mut test = |test: Test| {
            conditions.push(Condition {
                column: doc.column.clone(),
                test,
            })
        };
        if let Some(values) = &doc.values {
            test(Test::In(values.iter().map(value_text).collect()));
        }
        match doc.is_null {
            Some(true) => test(Test::IsNull),
            Some(false) => problems.push(format!(
                "{what}: `is_null` takes true (a column that must hold a value: not_null = true)"
            )),
            None => {}
        }
        match doc.not_null {
            Some(true) => test(Test::NotNull),
            Some(false) => problems.push(format!(
                "{what}: `not_null` takes true (a column that must be null: is_null = true)"
            )),
            None => {}
        }
        for (value, op) in [
            (&doc.less, Comparison::Less),
            (&doc.less_or_equal, Comparison::LessOrEqual),
            (&doc.greater, Comparison::Greater),
            (&doc.greater_or_equal, Comparison::GreaterOrEqual),
        ] {
            if let Some(value) = value {
                test(Test::Compare(op, value_text(value)));
            }
        }
        if let Some(range) = &doc.between {
            match range.as_slice() {
                [low, high] => test(Test::Between(value_text(low), value_text(high))),
                _ => problems.push(format!(
                    "{what}: `between` takes two values, the lowest and the highest (both included)"
                )),
            }
        }
        if conditions.len() == before && doc.is_null != Some(false) && doc.not_null != Some(false) {
            problems.push(format!(
                "{what}: the condition on {} tests nothing (give `in`, `is_null`, `not_null`, `<`, `<=`, `>`, `>=` or `between`)",
                doc.column
            ));
        }
    }
    conditions
}
