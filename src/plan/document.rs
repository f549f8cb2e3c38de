//! The plan as written in TOML, and how it becomes a [`Plan`]: table names qualified with their
//! schema, every way to the subject spelled out as hops, actions with the columns they need;
//! then [`super::consistency`] checks what else needs no database. The README's "The erasure plan" section is the reference for the format.
//!
//! A path is a list of hops, each `"column -> table.key"` (or `"column -> schema.table.key"`):
//! the column of the current table, and the key of the table it references. It ends at the
//! subject's key, or at a table that has a step of its own, whose paths then go on. The older
//! forms still read: `column = "customer_id"` alone is one hop to the subject's key, and with
//! `through = { table, key }` one hop to another step's table.

use std::collections::HashMap;

use serde::Deserialize;

use super::{
    Action, Anonymize, Guard, Hop, Keep, Lookup, PathHops, Plan, PlanError, Referenced, Step,
    Subject, TableName,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    /// The schema of every table named without one.
    #[serde(default = "default_schema")]
    schema: String,
    subject: SubjectDoc,
    #[serde(default, rename = "guard")]
    guards: Vec<GuardDoc>,
    #[serde(default, rename = "step")]
    steps: Vec<StepDoc>,
    #[serde(default)]
    referenced: Vec<ReferencedDoc>,
    #[serde(default, rename = "keep")]
    keeps: Vec<KeepDoc>,
    #[serde(default, rename = "view")]
    views: Vec<ViewDoc>,
    #[serde(default, rename = "exempt")]
    exempts: Vec<ExemptDoc>,
}

fn default_schema() -> String {
    "public".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SubjectDoc {
    table: String,
    key: String,
    /// One lookup column (the older form of `lookups`).
    lookup: Option<String>,
    #[serde(default)]
    lookups: Vec<LookupDoc>,
    #[serde(default)]
    action: Option<ActionWord>,
    #[serde(default)]
    set_null: Vec<String>,
    #[serde(default)]
    set_value: toml::Table,
    #[serde(default)]
    set_now: Vec<String>,
    #[serde(default)]
    remove_keys: HashMap<String, Vec<String>>,
    counted_as: String,
    /// Columns of the subject's table that reference the subject (`referred_by`): cleared in
    /// the other customers' rows that point at the customer.
    #[serde(default)]
    unlink: Vec<String>,
    unlinked_as: Option<String>,
    #[serde(default)]
    unlink_large_objects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LookupDoc {
    column: String,
    #[serde(default)]
    case_insensitive: bool,
}

#[derive(Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum ActionWord {
    Delete,
    Anonymize,
}

/// How a table reaches the subject: exactly one of the four.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Reach {
    column: Option<String>,
    through: Option<ThroughDoc>,
    path: Option<Vec<String>>,
    paths: Option<Vec<PathDoc>>,
}

/// One of a step's `paths`: its hops, or a table of them with how they own the row,
/// `{ path = [...], only_when_unowned = true }`.
#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum PathDoc {
    Hops(Vec<String>),
    Marked(MarkedPath),
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct MarkedPath {
    path: Vec<String>,
    /// The rows this path reaches are the customer's only when no other subject owns them.
    #[serde(default)]
    only_when_unowned: bool,
}

impl PathDoc {
    fn hops(&self) -> &[String] {
        match self {
            PathDoc::Hops(hops) => hops,
            PathDoc::Marked(marked) => &marked.path,
        }
    }

    fn owns(&self) -> bool {
        match self {
            PathDoc::Hops(_) => true,
            PathDoc::Marked(marked) => !marked.only_when_unowned,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThroughDoc {
    table: String,
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepDoc {
    table: String,
    column: Option<String>,
    through: Option<ThroughDoc>,
    path: Option<Vec<String>>,
    paths: Option<Vec<PathDoc>>,
    action: ActionWord,
    #[serde(default)]
    set_null: Vec<String>,
    #[serde(default)]
    set_value: toml::Table,
    #[serde(default)]
    set_now: Vec<String>,
    #[serde(default)]
    remove_keys: HashMap<String, Vec<String>>,
    counted_as: String,
    /// Where rows of other subjects, reached through the customer's and unlinked from it,
    /// are counted (default `<counted_as>_of_others_unlinked`).
    others_as: Option<String>,
    #[serde(default)]
    unlink_large_objects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GuardDoc {
    name: String,
    table: String,
    column: Option<String>,
    through: Option<ThroughDoc>,
    path: Option<Vec<String>>,
    paths: Option<Vec<PathDoc>>,
    /// One condition, or a list of them that must all hold.
    when: toml::Value,
    error: GuardError,
    message: String,
}

/// The error key a tripped guard gives: the deletion object's error keys are fixed, and of
/// them only `conflict` says "not now, because of the data".
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum GuardError {
    Conflict,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferencedDoc {
    table: String,
    key: String,
    from: String,
    action: ActionWord,
    #[serde(default)]
    set_null: Vec<String>,
    #[serde(default)]
    set_value: toml::Table,
    #[serde(default)]
    set_now: Vec<String>,
    #[serde(default)]
    remove_keys: HashMap<String, Vec<String>>,
    counted_as: String,
    kept_as: Option<String>,
    #[serde(default)]
    unlink_large_objects: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeepDoc {
    table: String,
    reason: String,
}

/// Reads a plan, normalizes it and checks what needs no database.
pub fn parse(text: &str) -> Result<Plan, PlanError> {
    let doc: Document = toml::from_str(text)?;
    let mut problems = Vec::new();
    let schema = doc.schema.clone();
    let table = |name: &str| TableName::parse(name, &schema);

    let subject_doc = &doc.subject;
    let subject_table = table(&subject_doc.table);
    let mut lookups: Vec<Lookup> = subject_doc
        .lookup
        .iter()
        .map(|column| Lookup::new(column, false))
        .collect();
    lookups.extend(
        subject_doc
            .lookups
            .iter()
            .map(|l| Lookup::new(&l.column, l.case_insensitive)),
    );
    let subject = Subject {
        table: subject_table.clone(),
        key: subject_doc.key.clone(),
        lookups,
        action: action(
            &format!("subject {}", subject_table),
            subject_doc.action.unwrap_or(ActionWord::Delete),
            anonymize(
                &subject_doc.set_null,
                &subject_doc.set_value,
                &subject_doc.set_now,
                &subject_doc.remove_keys,
            ),
            &mut problems,
        ),
        counted_as: subject_doc.counted_as.clone(),
        unlink: subject_doc.unlink.clone(),
        unlinked_as: subject_doc
            .unlinked_as
            .clone()
            .unwrap_or_else(|| format!("{}_links_cleared", subject_doc.counted_as)),
    };
    let to_subject = Hop::new("", subject.table.clone(), &subject.key);

    let mut steps = Vec::new();
    for s in &doc.steps {
        let what = format!("step {}", table(&s.table));
        let reach = Reach {
            column: s.column.clone(),
            through: s.through.as_ref().map(|t| ThroughDoc {
                table: t.table.clone(),
                key: t.key.clone(),
            }),
            path: s.path.clone(),
            paths: s.paths.clone(),
        };
        let mut step_paths = paths(&what, &reach, &schema, &to_subject, &mut problems);
        // A row under one of the customer's rows (a reply to its comment) is the customer's
        // only when nobody else owns it: a reply another customer wrote stays theirs.
        for path in &mut step_paths {
            if path.len() == 1 && path[0].table == table(&s.table) {
                path.owns = false;
            }
        }
        // With no path that makes a row the customer's outright, no other subject could ever
        // own one either, and every row any path reaches would be erased: the opposite of
        // what the marks ask.
        if step_paths.len() > 1 && step_paths.iter().all(|path| !path.owns) {
            problems.push(format!(
                "{what} marks every path only_when_unowned (a path from the table to itself counts as marked); \
                 leave unmarked the path that makes a row the customer's"
            ));
        }
        steps.push(Step {
            table: table(&s.table),
            paths: step_paths,
            action: action(
                &what,
                s.action,
                anonymize(&s.set_null, &s.set_value, &s.set_now, &s.remove_keys),
                &mut problems,
            ),
            counted_as: s.counted_as.clone(),
            others_as: s
                .others_as
                .clone()
                .unwrap_or_else(|| format!("{}_of_others_unlinked", s.counted_as)),
        });
    }
    let mut guards = Vec::new();
    for g in &doc.guards {
        let what = format!("guard {}", g.name);
        let reach = Reach {
            column: g.column.clone(),
            through: g.through.as_ref().map(|t| ThroughDoc {
                table: t.table.clone(),
                key: t.key.clone(),
            }),
            path: g.path.clone(),
            paths: g.paths.clone(),
        };
        let GuardError::Conflict = g.error;
        guards.push(Guard {
            name: g.name.clone(),
            table: table(&g.table),
            paths: paths(&what, &reach, &schema, &to_subject, &mut problems),
            when: super::guard::conditions(&what, &g.when, &mut problems),
            message: g.message.clone(),
        });
    }
    let referenced = doc
        .referenced
        .iter()
        .map(|r| Referenced {
            table: table(&r.table),
            key: r.key.clone(),
            from: r.from.clone(),
            action: action(
                &format!("referenced {}", table(&r.table)),
                r.action,
                anonymize(&r.set_null, &r.set_value, &r.set_now, &r.remove_keys),
                &mut problems,
            ),
            counted_as: r.counted_as.clone(),
            kept_as: r
                .kept_as
                .clone()
                .unwrap_or_else(|| format!("{}_kept", r.counted_as)),
        })
        .collect();
    let keeps = doc
        .keeps
        .iter()
        .map(|k| Keep {
            table: table(&k.table),
            reason: k.reason.clone(),
        })
        .collect();
    let plan = Plan {
        subject,
        guards,
        steps,
        referenced,
        keeps,
        residue: residue_spec(&doc, &mut problems),
        facts: Default::default(),
        hash: super::hash_of(text)?,
    };
    super::consistency::check(&plan, &mut problems);
    super::residue::consistency(&plan, &mut problems);
    if problems.is_empty() {
        Ok(plan)
    } else {
        problems.sort();
        problems.dedup();
        Err(PlanError::Inconsistent(problems))
    }
}

/// A materialized view built from the plan's tables: refreshed after erasures, or exempt with
/// the reason.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ViewDoc {
    name: String,
    #[serde(default)]
    refresh: bool,
    exempt: Option<String>,
}

/// Columns that look personal and are not (or an `oid` column that is no large object).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExemptDoc {
    table: String,
    #[serde(default)]
    columns: Vec<String>,
    reason: String,
}

/// What the plan says of the residue ([`super::residue`]).
fn residue_spec(doc: &Document, problems: &mut Vec<String>) -> super::residue::Spec {
    use super::residue::{Exempt, Spec, Treatment, View};
    let table = |name: &str| TableName::parse(name, &doc.schema);
    let mut spec = Spec::default();
    for v in &doc.views {
        let treatment = match (v.refresh, &v.exempt) {
            (true, None) => Treatment::Refresh,
            (false, Some(reason)) => Treatment::Exempt(reason.clone()),
            _ => {
                problems.push(format!(
                    "view {}: give it refresh = true or exempt = \"the reason\", one of them",
                    v.name
                ));
                continue;
            }
        };
        spec.views.push(View {
            name: table(&v.name),
            treatment,
        });
    }
    let unlinks = std::iter::once((&doc.subject.table, &doc.subject.unlink_large_objects))
        .chain(
            doc.steps
                .iter()
                .map(|s| (&s.table, &s.unlink_large_objects)),
        )
        .chain(
            doc.referenced
                .iter()
                .map(|r| (&r.table, &r.unlink_large_objects)),
        );
    for (name, columns) in unlinks {
        if !columns.is_empty() {
            spec.unlink.insert(table(name), columns.clone());
        }
    }
    spec.exempt = doc
        .exempts
        .iter()
        .map(|e| Exempt {
            table: table(&e.table),
            columns: e.columns.clone(),
            reason: e.reason.clone(),
        })
        .collect();
    spec
}

/// A value of the plan as text, as the database reads it for the column's type (the plan check
/// has it cast each).
pub(super) fn value_text(value: &toml::Value) -> String {
    match value {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn anonymize(
    set_null: &[String],
    set_value: &toml::Table,
    set_now: &[String],
    remove_keys: &HashMap<String, Vec<String>>,
) -> Anonymize {
    let mut remove_keys: Vec<(String, Vec<String>)> = remove_keys
        .iter()
        .map(|(c, keys)| (c.clone(), keys.clone()))
        .collect();
    remove_keys.sort();
    Anonymize {
        set_null: set_null.to_vec(),
        set_value: set_value
            .iter()
            .map(|(c, v)| (c.clone(), value_text(v)))
            .collect(),
        set_now: set_now.to_vec(),
        remove_keys,
    }
}

fn action(
    what: &str,
    word: ActionWord,
    anonymize: Anonymize,
    problems: &mut Vec<String>,
) -> Action {
    let empty = anonymize == Anonymize::default();
    for (column, keys) in &anonymize.remove_keys {
        for key in keys {
            if key.split('.').any(str::is_empty) {
                problems.push(format!(
                    "{what}: remove_keys {column:?} names {key:?}: a key, or a path of keys joined by dots, none empty"
                ));
            }
        }
    }
    match word {
        ActionWord::Delete => {
            if !empty {
                problems.push(format!(
                    "{what} deletes rows; set_null, set_value, set_now and remove_keys belong to anonymize"
                ));
            }
            Action::Delete
        }
        ActionWord::Anonymize => {
            if empty {
                problems.push(format!(
                    "{what} anonymizes but names no column in set_null, set_value, set_now or remove_keys"
                ));
            }
            Action::Anonymize(anonymize)
        }
    }
}

/// The paths `reach` gives, each a list of hops.
fn paths(
    what: &str,
    reach: &Reach,
    schema: &str,
    to_subject: &Hop,
    problems: &mut Vec<String>,
) -> Vec<PathHops> {
    let given = [
        reach.column.is_some(),
        reach.path.is_some(),
        reach.paths.is_some(),
    ]
    .iter()
    .filter(|g| **g)
    .count();
    if given != 1 || (reach.through.is_some() && reach.column.is_none()) {
        problems.push(format!(
            "{what} must say how it reaches the subject with exactly one of column (and through), path or paths"
        ));
        return Vec::new();
    }
    if let Some(column) = &reach.column {
        let hop = match &reach.through {
            Some(t) => Hop::new(column, TableName::parse(&t.table, schema), &t.key),
            None => Hop {
                column: column.clone(),
                ..to_subject.clone()
            },
        };
        return vec![PathHops::owning(vec![hop])];
    }
    let texts: Vec<PathDoc> = match (&reach.path, &reach.paths) {
        (Some(path), None) => vec![PathDoc::Hops(path.clone())],
        (None, Some(paths)) => paths.clone(),
        _ => unreachable!("exactly one is given"),
    };
    if texts.len() == 1 && !texts[0].owns() {
        problems.push(format!(
            "{what} marks its only path only_when_unowned; the mark tells one of several paths from the others"
        ));
    }
    let mut paths = Vec::new();
    for text in texts {
        if text.hops().is_empty() {
            problems.push(format!("{what} has an empty path"));
            continue;
        }
        let mut hops = Vec::new();
        for hop in text.hops() {
            match parse_hop(hop, schema) {
                Some(hop) => hops.push(hop),
                None => problems.push(format!(
                    "{what}: hop {hop:?} must read \"column -> table.key\" (or \"column -> schema.table.key\")"
                )),
            }
        }
        paths.push(PathHops {
            hops,
            owns: text.owns(),
        });
    }
    paths
}

/// `"column -> table.key"` or `"column -> schema.table.key"`.
/// Over a foreign key of several columns: `"(tenant_id, customer_id) -> customers.(tenant_id, id)"`,
/// the columns in the key's order, the one that holds the row's own key last.
pub fn parse_hop(text: &str, schema: &str) -> Option<Hop> {
    let (columns, target) = text.split_once("->")?;
    let target = target.trim();
    let (table, keys) = match target.strip_suffix(')') {
        Some(rest) => {
            let (table, keys) = rest.rsplit_once(".(")?;
            (table, list(keys)?)
        }
        None => {
            let (table, key) = target.rsplit_once('.')?;
            (table, vec![key.trim().to_owned()])
        }
    };
    let columns = match columns.trim().strip_prefix('(') {
        Some(rest) => list(rest.strip_suffix(')')?)?,
        None => vec![columns.trim().to_owned()],
    };
    let table = table.trim();
    if table.is_empty()
        || columns.len() != keys.len()
        || columns.iter().chain(&keys).any(|c| c.is_empty())
    {
        return None;
    }
    let mut pairs: Vec<(String, String)> = columns.into_iter().zip(keys).collect();
    let (column, key) = pairs.pop()?;
    Some(Hop {
        also: pairs,
        ..Hop::new(&column, TableName::parse(table, schema), &key)
    })
}

/// `a, b`: the names, trimmed.
fn list(text: &str) -> Option<Vec<String>> {
    let names: Vec<String> = text.split(',').map(|n| n.trim().to_owned()).collect();
    (!names.is_empty()).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::BUILT_IN;

    #[test]
    fn hops_read_with_and_without_a_schema() {
        let hop = parse_hop("payment_id -> sales.payments.id", "public").unwrap();
        assert_eq!(hop.table, TableName::new("sales", "payments"));
        assert_eq!(
            (hop.column.as_str(), hop.key.as_str()),
            ("payment_id", "id")
        );
        let hop = parse_hop(" order_id->orders.id ", "shop").unwrap();
        assert_eq!(hop.table, TableName::new("shop", "orders"));
        assert!(parse_hop("order_id orders.id", "public").is_none());
        assert!(parse_hop("order_id -> orders", "public").is_none());
        // Over a key of several columns, the row's own key last.
        let hop = parse_hop(
            "(tenant_id, customer_id) -> crm.customers.(tenant_id, id)",
            "public",
        )
        .unwrap();
        assert_eq!(hop.table, TableName::new("crm", "customers"));
        assert_eq!(
            (hop.column.as_str(), hop.key.as_str()),
            ("customer_id", "id")
        );
        assert_eq!(
            hop.also,
            [("tenant_id".to_string(), "tenant_id".to_string())]
        );
        assert_eq!(
            hop.to_string(),
            "(tenant_id, customer_id) -> crm.customers.(tenant_id, id)"
        );
        assert!(parse_hop("(a, b) -> t.(c)", "public").is_none());
        assert!(parse_hop("(a, ) -> t.(c, d)", "public").is_none());
        assert!(parse_hop("(a, b -> t.(c, d)", "public").is_none());
    }

    #[test]
    fn the_older_forms_are_paths_of_one_hop() {
        let plan = parse(BUILT_IN).unwrap();
        let order_events = plan
            .step(&TableName::new("public", "order_events"))
            .unwrap();
        assert_eq!(
            order_events.paths,
            vec![vec![Hop::new(
                "order_id",
                TableName::new("public", "orders"),
                "id"
            )]]
        );
        assert_eq!(plan.depth(order_events), 2);
    }

    #[test]
    fn an_anonymize_step_without_columns_is_rejected() {
        let text = BUILT_IN
            .replace(
                "set_null = [\"customer_id\", \"billing_name\", \"billing_email\", \"shipping_address\", \"metadata\"]",
                "",
            )
            .replace("set_now = [\"anonymized_at\"]", "");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("names no column"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = format!("{BUILT_IN}\n[[keep]]\ntable = \"x\"\nreason = \"y\"\ncolour = 1\n");
        assert!(matches!(parse(&text), Err(PlanError::Parse(_))));
    }

    /// The store's payments: the payer's by `customer_id`, the renter's by `rental_id`.
    const TWO_PATHS: &str = r#"schema = "store"
[subject]
table = "customer"
key = "customer_id"
counted_as = "customer"

[[step]]
table = "rental"
path = ["customer_id -> customer.customer_id"]
action = "delete"
counted_as = "rentals"

[[step]]
table = "payment"
paths = [PAYER, RENTER]
action = "delete"
counted_as = "payments"
"#;

    fn with_paths(payer: &str, renter: &str) -> Result<Plan, PlanError> {
        parse(&TWO_PATHS.replace("PAYER", payer).replace("RENTER", renter))
    }

    #[test]
    fn only_when_unowned_must_leave_a_path_unmarked() {
        let payer = r#"["customer_id -> customer.customer_id"]"#;
        let renter = r#"["rental_id -> rental.rental_id"]"#;
        let marked = |path: &str| format!("{{ path = {path}, only_when_unowned = true }}");
        let plan = with_paths(payer, &marked(renter)).unwrap();
        let payment = plan.step(&TableName::new("store", "payment")).unwrap();
        assert_eq!(
            payment.paths.iter().map(|p| p.owns).collect::<Vec<_>>(),
            [true, false]
        );
        assert!(with_paths(payer, renter).is_ok());
        let err = with_paths(&marked(payer), &marked(renter))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("step store.payment marks every path only_when_unowned"),
            "{err}"
        );
        let one = TWO_PATHS.replace(
            "paths = [PAYER, RENTER]",
            &format!("paths = [{}]", marked(payer)),
        );
        let err = parse(&one).unwrap_err().to_string();
        assert!(
            err.contains("marks its only path only_when_unowned"),
            "{err}"
        );
    }

    #[test]
    fn a_step_needs_exactly_one_way_to_the_subject() {
        let text = format!(
            "{BUILT_IN}\n[[step]]\ntable = \"notes\"\ncolumn = \"customer_id\"\npath = [\"customer_id -> customers.id\"]\naction = \"delete\"\ncounted_as = \"notes\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("exactly one of column"), "{err}");
    }
}
