//! The erasure plan: which tables hold a customer's data, how each reaches the customer, and
//! what to do with its rows. It is data (`config/plan.toml`), and in the order it is used:
//! - [`document`] reads the TOML into the plan below, normalized (every table named with its
//!   schema, every way to the subject spelled out as hops), and [`consistency`] checks what
//!   needs no database;
//! - [`guard`] holds the guards (the conditions under which a customer is not erased) and
//!   reads their `when`;
//! - [`live`] reads the live schema (tables, column types, keys, partitions folded into their
//!   parent);
//! - [`check`] checks the plan against it, every gap at once, and records what the SQL needs
//!   to know of it (the key's type, column types); [`repoint`] is what it accepts of kept rows
//!   repointed at a placeholder row;
//! - [`sql`] turns the plan into the erasure statement and its companions, once, at start-up;
//! - [`indexes`] names the columns the statements find rows by that no index serves
//!   (`erasure plan`'s warnings), from what [`live::read_storage`] reads;
//! - [`sizes`] reads the statistics of the tables the plan erases from, to say which customers
//!   the statement probes for size;
//! - [`residue`] reads what a DELETE leaves behind for the plan's tables (trigger copies,
//!   materialized views, large objects, change streams...), and what the plan says of it;
//! - [`drift`] finds the columns that look personal and that the plan neither reaches nor
//!   exempts (`erasure plan --strict`);
//! - [`draft`] writes a starting plan from a live schema (`erasure plan --draft`);
//! - [`describe`] says a plan in words (`erasure plan`), and [`names`] writes the names in the
//!   SQL it prints for people to run.

pub mod check;
pub mod consistency;
pub mod describe;
pub mod document;
pub mod draft;
pub mod drift;
pub mod guard;
pub mod indexes;
pub mod live;
pub mod names;
pub mod repoint;
pub mod residue;
pub mod sizes;
pub mod sql;

pub use crate::subject_key::{KeyType, KeyValue, Lookup, LookupType};
pub use guard::{Comparison, Condition, Guard, Test};

use std::collections::BTreeSet;
use std::fmt;
use std::path::Path;

/// The plan for the reference schema, compiled in.
pub const BUILT_IN: &str = include_str!("../../config/plan.toml");

/// A table, with its schema.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableName {
    pub schema: String,
    pub name: String,
}

impl TableName {
    pub fn new(schema: &str, name: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            name: name.to_owned(),
        }
    }

    /// `schema.table`, or `table` in `default_schema`.
    pub fn parse(text: &str, default_schema: &str) -> Self {
        match text.split_once('.') {
            Some((schema, name)) => Self::new(schema, name),
            None => Self::new(default_schema, text),
        }
    }

    /// The quoted SQL name, `"schema"."table"`.
    pub fn sql(&self) -> String {
        format!("{}.{}", ident(&self.schema), ident(&self.name))
    }
}

impl fmt::Display for TableName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.schema, self.name)
    }
}

/// The plan, normalized: what [`document`] makes of the TOML.
#[derive(Clone, Debug)]
pub struct Plan {
    pub subject: Subject,
    pub guards: Vec<Guard>,
    pub steps: Vec<Step>,
    pub referenced: Vec<Referenced>,
    pub keeps: Vec<Keep>,
    /// Views to refresh or exempt, large objects to unlink, columns exempt ([`residue`]).
    pub residue: residue::Spec,
    /// What the live schema says of the plan's columns; filled by [`check`].
    pub facts: Facts,
    /// `sha256:` and the hex SHA-256 of the plan's canonical JSON (RFC 8785): the same for the
    /// same plan however its TOML is laid out or commented. Each deletion records the hash of
    /// the plan it applied, and its receipt carries it.
    pub hash: String,
}

/// The table whose row is the customer.
#[derive(Clone, Debug)]
pub struct Subject {
    pub table: TableName,
    /// The customer's key, recorded as the deletion's `related_object_id`.
    pub key: String,
    /// Other unique columns a request may name the customer by, tried in this order after the
    /// key. Kept only as keyed hashes.
    pub lookups: Vec<Lookup>,
    /// Deleted last, or kept with its personal columns cleared (when records that must be kept
    /// reference it with keys that cannot be null).
    pub action: Action,
    pub counted_as: String,
    /// Columns of the subject's own table that reference the subject (a customer's
    /// `referred_by`): other customers' rows that point at the customer are let go (the column
    /// set to NULL) in the same statement, counted as `unlinked_as`.
    pub unlink: Vec<String>,
    pub unlinked_as: String,
}

/// One step from a row of a table to a row it references: `column` of the current table holds
/// `key` of `table`, and each of `also`'s columns the key beside it (a foreign key over several
/// columns: the tenant's id in a multi-tenant schema, compared with the rest so that a row of
/// one tenant never reaches another tenant's row of the same id).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hop {
    pub column: String,
    pub table: TableName,
    pub key: String,
    pub also: Vec<(String, String)>,
}

impl Hop {
    pub fn new(column: &str, table: TableName, key: &str) -> Self {
        Self {
            column: column.to_owned(),
            table,
            key: key.to_owned(),
            also: Vec::new(),
        }
    }

    /// Every (column, key) pair the hop compares, `also`'s first.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.also
            .iter()
            .map(|(c, k)| (c.as_str(), k.as_str()))
            .chain([(self.column.as_str(), self.key.as_str())])
    }

    /// The columns of the current table the hop reads, in order.
    pub fn columns(&self) -> Vec<&str> {
        self.pairs().map(|(c, _)| c).collect()
    }

    /// The referenced table's key columns, in the same order.
    pub fn keys(&self) -> Vec<&str> {
        self.pairs().map(|(_, k)| k).collect()
    }
}

impl fmt::Display for Hop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.also.is_empty() {
            write!(f, "{} -> {}.{}", self.column, self.table, self.key)
        } else {
            write!(
                f,
                "({}) -> {}.({})",
                self.columns().join(", "),
                self.table,
                self.keys().join(", ")
            )
        }
    }
}

/// Hops from a table's rows to the subject's key, or to a table that has a step of its own
/// (whose paths then go on). Reads as its hops (`path[0]`, `path.last()`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathHops {
    pub hops: Vec<Hop>,
    /// Whether a row this path reaches belongs to the customer it leads to (the default). A
    /// path marked `only_when_unowned` reaches rows that are the customer's only when no other
    /// subject owns them by a path that does: a payment on the customer's rental is the
    /// customer's unless another customer made it. Either way, a row that another live
    /// subject owns is never erased with this customer: its link is cleared, or the erasure
    /// refused (see [`crate::plan::sql`]).
    pub owns: bool,
}

impl PathHops {
    pub fn owning(hops: Vec<Hop>) -> Self {
        Self { hops, owns: true }
    }
}

impl std::ops::Deref for PathHops {
    type Target = [Hop];

    fn deref(&self) -> &[Hop] {
        &self.hops
    }
}

impl<'a> IntoIterator for &'a PathHops {
    type Item = &'a Hop;
    type IntoIter = std::slice::Iter<'a, Hop>;

    fn into_iter(self) -> Self::IntoIter {
        self.hops.iter()
    }
}

impl PartialEq<Vec<Hop>> for PathHops {
    fn eq(&self, other: &Vec<Hop>) -> bool {
        &self.hops == other
    }
}

#[derive(Clone, Debug)]
pub struct Step {
    pub table: TableName,
    /// The ways a row reaches the customer; a row is the customer's if any of them leads there.
    pub paths: Vec<PathHops>,
    pub action: Action,
    /// The key of the deletion object's `data_json` this step's row count adds to.
    pub counted_as: String,
    /// Where rows reached through the customer but owned by another live subject by another
    /// path (and so left in place, their link to the customer cleared) are counted. Only a step
    /// with several paths can meet such rows.
    pub others_as: String,
}

impl Step {
    /// Whether a row of this step can be reached through the customer and yet belong to
    /// someone else: it has several ways to a subject.
    pub fn may_reach_others(&self) -> bool {
        self.paths.len() > 1
    }

    /// The step's path from its table to itself (a comment's `parent_id`), if it has one: the
    /// rows under a row of the customer's are reached too, however deep.
    pub fn tree(&self) -> Option<&Hop> {
        self.paths
            .iter()
            .find(|p| p.len() == 1 && p[0].table == self.table)
            .map(|p| &p[0])
    }

    /// The paths that lead out of the table (the roots of its tree, when it has one).
    pub fn roots(&self) -> impl Iterator<Item = &PathHops> {
        self.paths
            .iter()
            .filter(|p| !(p.len() == 1 && p[0].table == self.table))
    }
}

/// A row the subject references (its address, say), erased after it unless another row still
/// references it.
#[derive(Clone, Debug)]
pub struct Referenced {
    pub table: TableName,
    /// The referenced table's key.
    pub key: String,
    /// The subject's column that holds that key.
    pub from: String,
    pub action: Action,
    pub counted_as: String,
    /// Where rows left in place because another row still references them are counted.
    pub kept_as: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Delete,
    Anonymize(Anonymize),
}

/// How an anonymized row's personal columns are cleared.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Anonymize {
    pub set_null: Vec<String>,
    /// Fixed values (for columns that cannot be null), cast to the column's type; `{key}`
    /// stands for the customer's key (for columns that must stay unique).
    pub set_value: Vec<(String, String)>,
    /// Columns set to the erasure's time (markers, not personal data).
    pub set_now: Vec<String>,
    /// Keys removed from `jsonb` columns.
    pub remove_keys: Vec<(String, Vec<String>)>,
}

impl Anonymize {
    /// The columns that hold personal data until cleared (not the time markers).
    pub fn cleared(&self) -> impl Iterator<Item = &str> {
        self.set_null
            .iter()
            .map(String::as_str)
            .chain(self.set_value.iter().map(|(c, _)| c.as_str()))
            .chain(self.remove_keys.iter().map(|(c, _)| c.as_str()))
    }

    pub fn columns(&self) -> impl Iterator<Item = &str> {
        self.cleared()
            .chain(self.set_now.iter().map(String::as_str))
    }
}

/// A table that reaches the customer but is deliberately left alone.
#[derive(Clone, Debug)]
pub struct Keep {
    pub table: TableName,
    pub reason: String,
}

/// What the live schema says of the plan, for the SQL made from it. The defaults hold until
/// [`check`] fills them (a text key; values cast to text).
#[derive(Clone, Debug, Default)]
pub struct Facts {
    pub key_type: KeyType,
    /// The SQL type of each column the plan sets to a value, and of each referenced table's
    /// key (`format_type`'s spelling).
    pub column_types: std::collections::BTreeMap<(TableName, String), String>,
    /// For each referenced table, the foreign keys into it: (table, column) of each.
    pub references: std::collections::BTreeMap<TableName, Vec<(TableName, String)>>,
    /// The path columns that can be null (a step's link to another subject's row can then be
    /// cleared instead of the row erased).
    pub nullable: BTreeSet<(TableName, String)>,
    /// The primary key column (and its type) of each table the plan keeps rows of
    /// (anonymized), when it has one of a single column: the erasure records the rows it kept
    /// by it, for the check after commit to read them again.
    pub row_keys: std::collections::BTreeMap<TableName, (String, String)>,
    /// Steps' tables that triggers on the plan's tables write to during the erasure, cleared
    /// once more after its statement; filled by [`residue::read`].
    pub refilled: BTreeSet<TableName>,
}

impl Facts {
    pub fn is_nullable(&self, table: &TableName, column: &str) -> bool {
        self.nullable.contains(&(table.clone(), column.to_owned()))
    }
}

/// Why a plan cannot be used. Each message says its cause in full, so none has a `source`: a
/// report that prints an error's causes after it (`{:#}`) would print the cause twice.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read the erasure plan {path}: {error}")]
    Read { path: String, error: std::io::Error },
    #[error("the erasure plan is not valid TOML for a plan: {0}")]
    Parse(toml::de::Error),
    #[error("the erasure plan is inconsistent:\n  - {}", .0.join("\n  - "))]
    Inconsistent(Vec<String>),
    #[error(
        "the erasure plan does not fit the live schema:\n  - {}",
        .0.join("\n  - ")
    )]
    Gaps(Vec<String>),
    #[error(
        "the erasure plan leaves copies of what it erases behind:\n  - {}",
        .0.join("\n  - ")
    )]
    Residue(Vec<String>),
    #[error("cannot read the live schema: {0}")]
    Database(sqlx::Error),
}

impl PlanError {
    /// Whether the plan itself is at fault (unreadable, not TOML, inconsistent, or not fitting
    /// the schema), rather than the database it was checked against.
    pub fn is_plan_problem(&self) -> bool {
        !matches!(self, PlanError::Database(_))
    }
}

impl From<toml::de::Error> for PlanError {
    fn from(e: toml::de::Error) -> Self {
        PlanError::Parse(e)
    }
}

impl From<sqlx::Error> for PlanError {
    fn from(e: sqlx::Error) -> Self {
        PlanError::Database(e)
    }
}

impl Plan {
    /// The plan at `path`, or the built-in one.
    pub fn load(path: Option<&Path>) -> Result<Self, PlanError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|error| PlanError::Read {
                path: path.display().to_string(),
                error,
            })?,
            None => BUILT_IN.to_string(),
        };
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, PlanError> {
        document::parse(text)
    }

    /// The count keys in the order the plan reports them: steps, rows the subject references
    /// (and those kept because shared), the subject last.
    pub fn count_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        let steps = self.steps.iter().flat_map(|s| {
            std::iter::once(&s.counted_as).chain(s.may_reach_others().then_some(&s.others_as))
        });
        let referenced = self
            .referenced
            .iter()
            .flat_map(|r| [&r.counted_as, &r.kept_as]);
        let unlinked = (!self.subject.unlink.is_empty()).then_some(&self.subject.unlinked_as);
        for key in steps
            .chain(referenced)
            .chain(unlinked)
            .chain([&self.subject.counted_as])
        {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// Tables whose rows the plan deletes: foreign keys into them must be covered.
    pub fn deleted_tables(&self) -> BTreeSet<&TableName> {
        let subject = (self.subject.action == Action::Delete).then_some(&self.subject.table);
        self.steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .map(|s| &s.table)
            .chain(subject)
            .collect()
    }

    pub fn step(&self, table: &TableName) -> Option<&Step> {
        self.steps.iter().find(|s| &s.table == table)
    }

    /// Whether the hop leads to the subject's key.
    pub fn reaches_subject(&self, hop: &Hop) -> bool {
        hop.table == self.subject.table && hop.key == self.subject.key
    }

    /// How many hops, at most, the rows of `step` are from the subject.
    pub fn depth(&self, step: &Step) -> usize {
        self.depth_of(&step.paths, 0)
    }

    fn depth_of(&self, paths: &[PathHops], seen: usize) -> usize {
        if seen > self.steps.len() {
            return seen;
        }
        paths
            .iter()
            .map(|path| {
                let last = path.last().expect("a path has hops");
                let rest = if self.reaches_subject(last) {
                    0
                } else {
                    self.step(&last.table)
                        .map_or(0, |s| self.depth_of(&s.paths, seen + 1))
                };
                path.len() + rest
            })
            .max()
            .unwrap_or(0)
    }
}

/// The hash of the plan in `text` (see [`Plan::hash`]).
fn hash_of(text: &str) -> Result<String, PlanError> {
    let value: toml::Value = toml::from_str(text)?;
    let json =
        serde_json::to_value(value).map_err(|e| PlanError::Inconsistent(vec![e.to_string()]))?;
    Ok(crate::canonical::sha256_tagged(&json))
}

/// `name` as a quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_with_quotes_doubled() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn table_names_take_the_default_schema() {
        assert_eq!(
            TableName::parse("sales.payments", "public"),
            TableName::new("sales", "payments")
        );
        assert_eq!(
            TableName::parse("orders", "public").sql(),
            r#""public"."orders""#
        );
    }

    #[test]
    fn the_plan_hash_ignores_layout_and_comments_but_not_content() {
        let a = Plan::parse(BUILT_IN).unwrap().hash;
        let relaid = format!("# a comment\n\n{}", BUILT_IN.replace(" = ", "="));
        assert_eq!(Plan::parse(&relaid).unwrap().hash, a);
        assert!(a.starts_with("sha256:") && a.len() == 7 + 64, "{a}");
        let message = "the customer has an order in status OPEN";
        assert!(BUILT_IN.contains(message));
        let changed = BUILT_IN.replace(message, "an order is OPEN");
        assert_ne!(Plan::parse(&changed).unwrap().hash, a);
    }

    #[test]
    fn the_built_in_plan_parses_and_reports_the_contract_keys() {
        let plan = Plan::parse(BUILT_IN).unwrap();
        assert_eq!(
            plan.count_keys(),
            [
                "events",
                "customer_events",
                "daily_events",
                "segments",
                "orders",
                "order_events",
                "customer"
            ]
        );
    }
}
