//! The erasure plan: which tables hold a customer's data, how each reaches the customer, and
//! what to do with its rows. It is data (`config/plan.toml`), checked against the live schema
//! ([`check`]) and turned into one SQL statement ([`sql`]) once, at start-up.

pub mod check;
pub mod sql;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use serde::Deserialize;

/// The plan for the reference schema, compiled in.
pub const BUILT_IN: &str = include_str!("../../config/plan.toml");

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// The schema holding every table of the plan.
    #[serde(default = "default_schema")]
    pub schema: String,
    pub subject: Subject,
    #[serde(default, rename = "guard")]
    pub guards: Vec<Guard>,
    #[serde(rename = "step")]
    pub steps: Vec<Step>,
    /// Tables that reach the customer but are deliberately left alone, with the reason.
    #[serde(default, rename = "keep")]
    pub keeps: Vec<Keep>,
}

fn default_schema() -> String {
    "public".into()
}

/// The table whose row is the customer.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    pub table: String,
    /// The customer's id, recorded as the deletion's `related_object_id`.
    pub key: String,
    /// Another unique column a request may name the customer by; kept only as a keyed hash.
    pub lookup: Option<String>,
    pub counted_as: String,
}

/// A condition under which the customer is not erased.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Guard {
    pub name: String,
    pub table: String,
    /// The column of `table` holding the subject's key.
    pub column: String,
    pub when: GuardWhen,
    pub error: GuardError,
    pub message: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GuardWhen {
    pub column: String,
    #[serde(rename = "in")]
    pub values: Vec<String>,
}

/// The error key a tripped guard gives the request.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum GuardError {
    Conflict,
}

impl GuardError {
    pub fn key(self) -> &'static str {
        match self {
            GuardError::Conflict => "conflict",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub table: String,
    /// The column of `table` that holds the subject's key, or with `through`, the key of a row
    /// of another step's table.
    pub column: String,
    pub through: Option<Through>,
    pub action: Action,
    /// Columns set to NULL by `anonymize`.
    #[serde(default)]
    pub set_null: Vec<String>,
    /// Columns set to the erasure's time by `anonymize`.
    #[serde(default)]
    pub set_now: Vec<String>,
    /// The key of the deletion object's `data_json` this step's row count adds to.
    pub counted_as: String,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Through {
    pub table: String,
    pub key: String,
}

#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Delete,
    Anonymize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Keep {
    pub table: String,
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("cannot read the erasure plan {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the erasure plan is not valid TOML for a plan: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("the erasure plan is inconsistent:\n  - {}", .0.join("\n  - "))]
    Inconsistent(Vec<String>),
    #[error(
        "the erasure plan does not fit the live schema:\n  - {}",
        .0.join("\n  - ")
    )]
    Gaps(Vec<String>),
    #[error("cannot read the live schema: {0}")]
    Database(#[from] sqlx::Error),
}

impl Plan {
    /// The plan at `path`, or the built-in one.
    pub fn load(path: Option<&Path>) -> Result<Self, PlanError> {
        let text = match path {
            Some(path) => std::fs::read_to_string(path).map_err(|source| PlanError::Read {
                path: path.display().to_string(),
                source,
            })?,
            None => BUILT_IN.to_string(),
        };
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, PlanError> {
        let plan: Plan = toml::from_str(text)?;
        plan.check_consistency()?;
        Ok(plan)
    }

    /// The count keys in the order the plan reports them: steps first, the subject last.
    pub fn count_keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = Vec::new();
        for key in self
            .steps
            .iter()
            .map(|s| &s.counted_as)
            .chain([&self.subject.counted_as])
        {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// Tables whose rows the plan deletes: foreign keys into them must be covered.
    pub fn deleted_tables(&self) -> BTreeSet<&str> {
        self.steps
            .iter()
            .filter(|s| s.action == Action::Delete)
            .map(|s| s.table.as_str())
            .chain([self.subject.table.as_str()])
            .collect()
    }

    pub fn step(&self, table: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.table == table)
    }

    /// Checks that need no database: names present, one step per table, `through` chains that
    /// end at the subject, actions with the columns they need.
    fn check_consistency(&self) -> Result<(), PlanError> {
        let mut problems = Vec::new();
        let mut names: Vec<(&str, &str)> = vec![
            ("schema", &self.schema),
            ("subject.table", &self.subject.table),
            ("subject.key", &self.subject.key),
            ("subject.counted_as", &self.subject.counted_as),
        ];
        if let Some(lookup) = &self.subject.lookup {
            names.push(("subject.lookup", lookup));
        }
        for step in &self.steps {
            names.push(("step.table", &step.table));
            names.push(("step.column", &step.column));
            names.push(("step.counted_as", &step.counted_as));
            names.extend(step.set_null.iter().map(|c| ("step.set_null", c.as_str())));
            names.extend(step.set_now.iter().map(|c| ("step.set_now", c.as_str())));
        }
        for guard in &self.guards {
            names.push(("guard.table", &guard.table));
            names.push(("guard.column", &guard.column));
            names.push(("guard.when.column", &guard.when.column));
        }
        for (what, name) in names {
            if name.is_empty() || name.contains('\0') {
                problems.push(format!("{what} must be a non-empty name without NUL"));
            }
        }

        let mut seen: HashMap<&str, usize> = HashMap::new();
        for step in &self.steps {
            *seen.entry(step.table.as_str()).or_default() += 1;
        }
        for (table, n) in &seen {
            if *n > 1 {
                problems.push(format!("table {table:?} has {n} steps; give it one"));
            }
        }
        if seen.contains_key(self.subject.table.as_str()) {
            problems.push(format!(
                "table {:?} is the subject; it is deleted last and takes no step",
                self.subject.table
            ));
        }

        for step in &self.steps {
            match step.action {
                Action::Delete if !step.set_null.is_empty() || !step.set_now.is_empty() => {
                    problems.push(format!(
                        "step {:?} deletes rows; set_null and set_now belong to anonymize",
                        step.table
                    ));
                }
                Action::Anonymize if step.set_null.is_empty() && step.set_now.is_empty() => {
                    problems.push(format!(
                        "step {:?} anonymizes but names no column in set_null or set_now",
                        step.table
                    ));
                }
                _ => {}
            }
            // Follow `through` to the subject; a chain that loops or ends nowhere is an error.
            let mut hops = vec![step.table.as_str()];
            let mut current = step;
            while let Some(through) = &current.through {
                if hops.contains(&through.table.as_str()) {
                    problems.push(format!(
                        "step {:?} reaches the subject through a loop: {} -> {}",
                        step.table,
                        hops.join(" -> "),
                        through.table
                    ));
                    break;
                }
                match self.step(&through.table) {
                    Some(parent) => {
                        hops.push(&parent.table);
                        current = parent;
                    }
                    None => {
                        problems.push(format!(
                            "step {:?} goes through {:?}, which has no step of its own",
                            step.table, through.table
                        ));
                        break;
                    }
                }
            }
        }

        for guard in &self.guards {
            if guard.when.values.is_empty() {
                problems.push(format!("guard {:?} has an empty `in` list", guard.name));
            }
        }
        for keep in &self.keeps {
            if keep.reason.trim().is_empty() {
                problems.push(format!("keep {:?} needs a reason", keep.table));
            }
        }

        if problems.is_empty() {
            Ok(())
        } else {
            problems.sort();
            Err(PlanError::Inconsistent(problems))
        }
    }

    /// A human-readable account of the plan, for `erasure plan`.
    pub fn describe(&self) -> String {
        let mut out = format!(
            "Erasure plan (schema {:?})\n\nSubject: {} (key {}{}), deleted last, counted as {:?}\n",
            self.schema,
            self.subject.table,
            self.subject.key,
            self.subject
                .lookup
                .as_ref()
                .map(|l| format!(", also found by {l}"))
                .unwrap_or_default(),
            self.subject.counted_as
        );
        if !self.guards.is_empty() {
            out.push_str("\nGuards (the customer is not erased when one holds):\n");
            for g in &self.guards {
                out.push_str(&format!(
                    "  - {}: a row of {} by {} with {} in {:?} -> {} ({})\n",
                    g.name,
                    g.table,
                    g.column,
                    g.when.column,
                    g.when.values,
                    g.error.key(),
                    g.message
                ));
            }
        }
        out.push_str("\nSteps:\n");
        for s in &self.steps {
            let reach = match &s.through {
                Some(t) => format!("{} -> {}.{}", s.column, t.table, t.key),
                None => format!(
                    "{} -> {}.{}",
                    s.column, self.subject.table, self.subject.key
                ),
            };
            let action = match s.action {
                Action::Delete => "delete rows".to_string(),
                Action::Anonymize => format!(
                    "anonymize (null: {}; now: {})",
                    s.set_null.join(", "),
                    if s.set_now.is_empty() {
                        "-".to_string()
                    } else {
                        s.set_now.join(", ")
                    }
                ),
            };
            out.push_str(&format!(
                "  - {} via {}: {}, counted as {:?}\n",
                s.table, reach, action, s.counted_as
            ));
        }
        if !self.keeps.is_empty() {
            out.push_str("\nKept on purpose:\n");
            for k in &self.keeps {
                out.push_str(&format!("  - {}: {}\n", k.table, k.reason));
            }
        }
        out
    }
}

/// `name` as a quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn identifiers_are_quoted_with_quotes_doubled() {
        assert_eq!(ident(r#"a"b"#), r#""a""b""#);
    }

    #[test]
    fn a_through_chain_that_ends_nowhere_is_rejected() {
        let text = BUILT_IN.replace(
            "through = { table = \"orders\", key = \"id\" }",
            "through = { table = \"invoices\", key = \"id\" }",
        );
        let err = Plan::parse(&text).unwrap_err().to_string();
        assert!(err.contains("\"invoices\", which has no step"), "{err}");
    }

    #[test]
    fn two_steps_on_one_table_are_rejected() {
        let text = format!(
            "{BUILT_IN}\n[[step]]\ntable = \"events\"\ncolumn = \"customer_id\"\naction = \"delete\"\ncounted_as = \"x\"\n"
        );
        let err = Plan::parse(&text).unwrap_err().to_string();
        assert!(err.contains("\"events\" has 2 steps"), "{err}");
    }

    #[test]
    fn an_anonymize_step_without_columns_is_rejected() {
        let text = BUILT_IN
            .replace(
                "set_null = [\"customer_id\", \"billing_name\", \"billing_email\", \"shipping_address\", \"metadata\"]",
                "",
            )
            .replace("set_now = [\"anonymized_at\"]", "");
        let err = Plan::parse(&text).unwrap_err().to_string();
        assert!(err.contains("names no column"), "{err}");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let text = format!("{BUILT_IN}\n[[keep]]\ntable = \"x\"\nreason = \"y\"\ncolour = 1\n");
        assert!(matches!(Plan::parse(&text), Err(PlanError::Parse(_))));
    }
}
