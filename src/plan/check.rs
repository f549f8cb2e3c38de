//! Checks a plan against the live schema, every gap by name, at once: a missing table or
//! column, a partition named instead of its table, a key of a type a path cannot compare
//! without a cast, a lookup that is not unique, a column to null that is NOT NULL, a kept
//! subject that keeps a lookup value, and every foreign key that reaches the subject, or a
//! table the plan deletes from, without a step (or a `[[keep]]`) covering it. A worker with gaps
//! does not start.
//!
//! A plan that passes comes back with its [`Facts`]: the key's type and the column types the
//! SQL casts to.

use std::collections::BTreeSet;

use sqlx::PgPool;

use super::live::{ForeignKey, LiveSchema};
use super::repoint;
use super::{
    Action, Anonymize, Facts, KeyType, LookupType, PathHops, Plan, PlanError, TableName, Test,
};

/// Checks `plan` against the database behind `pool` (the values it writes too, by the
/// database's own casts); returns it with its facts filled.
pub async fn against_live_schema(plan: Plan, pool: &PgPool) -> Result<Plan, PlanError> {
    let live = LiveSchema::read(pool).await?;
    let mut gaps = Gaps::find(&plan, &live);
    gaps.extend(values(&plan, &live, pool).await?);
    gaps.extend(guard_values(&plan, &live, pool).await?);
    gaps.extend(repoint::missing_placeholders(&plan, &live, pool).await?);
    if !gaps.is_empty() {
        return Err(PlanError::Gaps(gaps));
    }
    against(plan, &live)
}

/// Checks `plan` against `live`; returns it with its facts filled.
pub fn against(mut plan: Plan, live: &LiveSchema) -> Result<Plan, PlanError> {
    let gaps = Gaps::find(&plan, live);
    if !gaps.is_empty() {
        return Err(PlanError::Gaps(gaps));
    }
    plan.facts = facts(&plan, live);
    let subject = &plan.subject.table;
    for lookup in &mut plan.subject.lookups {
        if let Some(c) = live.column(subject, &lookup.column) {
            lookup.value_type = LookupType::of(&c.sql_type, c.base_type()).unwrap_or_default();
        }
    }
    Ok(plan)
}

/// The fixed values the plan writes that the database cannot take as their column's type
/// (a word for a number, `{key}` inside a value for a uuid column): each would fail every
/// erasure. Asked of the database, which casts them as the erasure will.
async fn values(plan: &Plan, live: &LiveSchema, pool: &PgPool) -> Result<Vec<String>, sqlx::Error> {
    let key_type = live
        .column(&plan.subject.table, &plan.subject.key)
        .and_then(|c| c.key_type())
        .unwrap_or_default();
    // A key of the subject's type, for values that hold `{key}`.
    let sample_key = match key_type {
        KeyType::Text => "key",
        KeyType::Integer | KeyType::Bigint => "1",
        KeyType::Uuid => "00000000-0000-0000-0000-000000000000",
    };
    let actions = plan
        .steps
        .iter()
        .map(|s| (&s.table, &s.action, format!("step {}", s.table)))
        .chain(
            plan.referenced
                .iter()
                .map(|r| (&r.table, &r.action, format!("referenced {}", r.table))),
        )
        .chain([(
            &plan.subject.table,
            &plan.subject.action,
            "subject".to_string(),
        )]);
    let mut gaps = Vec::new();
    for (table, action, role) in actions {
        let Action::Anonymize(a) = action else {
            continue;
        };
        for (column, value) in &a.set_value {
            let Some(c) = live.column(table, column) else {
                continue;
            };
            let sample = value.replace("{key}", sample_key);
            let cast = sqlx::query(&format!("SELECT CAST($1::text AS {})", c.sql_type))
                .bind(&sample)
                .execute(pool)
                .await;
            match cast {
                Ok(_) => {}
                Err(sqlx::Error::Database(e)) if e.code().is_some_and(|c| c.starts_with("22")) => {
                    gaps.push(format!(
                        "set_value {value:?} cannot be written to {table}.{column}, which is {} ({role}): {}",
                        c.sql_type,
                        e.message()
                    ))
                }
                Err(e) => return Err(e),
            }
        }
    }
    Ok(gaps)
}

/// The guard conditions the database cannot evaluate as written: a value that cannot be the
/// column's type (`in = [false]` on a timestamp), or a comparison the type has no operator for.
/// Such a guard would never hold (or fail every erasure), so a customer it should protect would
/// be erased. Asked of the database, which casts and compares them as the statement will.
async fn guard_values(
    plan: &Plan,
    live: &LiveSchema,
    pool: &PgPool,
) -> Result<Vec<String>, sqlx::Error> {
    let mut gaps = Vec::new();
    for guard in &plan.guards {
        for condition in &guard.when {
            let Some(column) = live.column(&guard.table, &condition.column) else {
                continue;
            };
            let sql_type = &column.sql_type;
            // The value on both sides: a NULL would let the planner skip the cast.
            let probe = match &condition.test {
                Test::IsNull | Test::NotNull => continue,
                Test::In(_) => {
                    format!("SELECT CAST($1::text AS {sql_type}) = CAST($1::text AS {sql_type})")
                }
                Test::Compare(op, _) => format!(
                    "SELECT CAST($1::text AS {sql_type}) {} CAST($1::text AS {sql_type})",
                    op.operator()
                ),
                Test::Between(..) => format!(
                    "SELECT CAST($1::text AS {sql_type}) BETWEEN CAST($1::text AS {sql_type}) AND CAST($1::text AS {sql_type})"
                ),
            };
            for value in condition.test.values() {
                match sqlx::query(&probe).bind(value).execute(pool).await {
                    Ok(_) => {}
                    Err(sqlx::Error::Database(e))
                        if e.code()
                            .is_some_and(|c| c.starts_with("22") || c == "42883") =>
                    {
                        gaps.push(format!(
                            "guard {}: {condition} cannot be tested on {}.{}, which is {sql_type}: {}",
                            guard.name,
                            guard.table,
                            condition.column,
                            e.message()
                        ));
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(gaps)
}

fn facts(plan: &Plan, live: &LiveSchema) -> Facts {
    let subject = &plan.subject;
    let key_type = live
        .column(&subject.table, &subject.key)
        .and_then(|c| c.key_type())
        .unwrap_or_default();
    let mut facts = Facts {
        key_type,
        ..Facts::default()
    };
    let mut record = |table: &TableName, action: &Action| {
        if let Action::Anonymize(a) = action {
            for (column, _) in &a.set_value {
                if let Some(c) = live.column(table, column) {
                    facts
                        .column_types
                        .insert((table.clone(), column.clone()), c.sql_type.clone());
                }
            }
        }
    };
    record(&subject.table, &subject.action);
    for step in &plan.steps {
        record(&step.table, &step.action);
    }
    for r in &plan.referenced {
        record(&r.table, &r.action);
    }
    for guard in &plan.guards {
        for condition in &guard.when {
            if let Some(c) = live.column(&guard.table, &condition.column) {
                facts.column_types.insert(
                    (guard.table.clone(), condition.column.clone()),
                    c.sql_type.clone(),
                );
            }
        }
    }
    let paths = plan
        .steps
        .iter()
        .map(|s| (&s.table, &s.paths))
        .chain(plan.guards.iter().map(|g| (&g.table, &g.paths)));
    for (table, paths) in paths {
        for path in paths {
            let mut at = table.clone();
            for hop in path {
                if live.column(&at, &hop.column).is_some_and(|c| c.nullable) {
                    facts.nullable.insert((at.clone(), hop.column.clone()));
                }
                at = hop.table.clone();
            }
        }
    }
    let kept = plan
        .steps
        .iter()
        .map(|s| (&s.table, &s.action))
        .chain(plan.referenced.iter().map(|r| (&r.table, &r.action)))
        .chain([(&subject.table, &subject.action)]);
    for (table, action) in kept {
        if matches!(action, Action::Anonymize(_))
            && let Some(key) = live.tables.get(table).and_then(|t| t.primary_key.clone())
            && let Some(column) = live.column(table, &key)
        {
            facts
                .row_keys
                .insert(table.clone(), (key, column.sql_type.clone()));
        }
    }
    for r in &plan.referenced {
        if let Some(c) = live.column(&r.table, &r.key) {
            facts
                .column_types
                .insert((r.table.clone(), r.key.clone()), c.sql_type.clone());
        }
        let references = live
            .referencing(&r.table)
            .filter(|k| k.child_columns.len() == 1 && k.parent_columns == [r.key.clone()])
            .map(|k| (k.child.clone(), k.child_columns[0].clone()))
            .collect();
        facts.references.insert(r.table.clone(), references);
    }
    facts
}

struct Gaps<'a> {
    live: &'a LiveSchema,
    found: Vec<String>,
}

impl<'a> Gaps<'a> {
    fn find(plan: &Plan, live: &'a LiveSchema) -> Vec<String> {
        let mut gaps = Gaps {
            live,
            found: Vec::new(),
        };
        gaps.subject(plan);
        for guard in &plan.guards {
            let role = format!("guard {}", guard.name);
            if gaps.table(&guard.table, &role) {
                for condition in &guard.when {
                    gaps.column(&guard.table, &condition.column, &role);
                }
            }
            gaps.paths(&guard.table, &guard.paths, &role);
        }
        for step in &plan.steps {
            let role = format!("step {}", step.table);
            if gaps.table(&step.table, &role) {
                gaps.action(&step.table, &step.action, &role, false);
            }
            gaps.paths(&step.table, &step.paths, &role);
        }
        for r in &plan.referenced {
            let role = format!("referenced {}", r.table);
            if gaps.table(&r.table, &role) {
                gaps.column(&r.table, &r.key, &role);
                gaps.action(&r.table, &r.action, &role, true);
            }
            gaps.column(&plan.subject.table, &r.from, &role);
            if let (Action::Delete, Action::Anonymize(a)) = (&r.action, &plan.subject.action)
                && !a.set_null.contains(&r.from)
            {
                gaps.found.push(format!(
                    "the subject is kept but still points at {} by {}: add {} to the subject's set_null, or anonymize the referenced row instead of deleting it",
                    r.table, r.from, r.from
                ));
            }
        }
        for keep in &plan.keeps {
            gaps.table(&keep.table, &format!("keep {}", keep.table));
        }
        gaps.coverage(plan);
        gaps.found
    }

    /// Whether `table` exists as a table (not a partition), saying why not.
    fn table(&mut self, table: &TableName, role: &str) -> bool {
        if self.live.tables.contains_key(table) {
            return true;
        }
        match self.live.partitions.get(table) {
            Some(parent) => self.found.push(format!(
                "table {table} is a partition of {parent}; name {parent} ({role}): a step on it covers every partition"
            )),
            None => self
                .found
                .push(format!("table {table} does not exist ({role})")),
        }
        false
    }

    fn column(&mut self, table: &TableName, column: &str, role: &str) -> bool {
        match self.live.tables.get(table) {
            None => false,
            Some(t) if t.columns.contains_key(column) => true,
            Some(_) => {
                self.found
                    .push(format!("column {table}.{column} does not exist ({role})"));
                false
            }
        }
    }

    fn subject(&mut self, plan: &Plan) {
        let subject = &plan.subject;
        let table = &subject.table;
        if !self.table(table, "subject") {
            return;
        }
        for column in &subject.unlink {
            if !self.column(table, column, "subject unlink") {
                continue;
            }
            let references_key = self.live.foreign_keys.iter().any(|fk| {
                fk.child == *table
                    && fk.parent == *table
                    && fk.child_columns == [column.clone()]
                    && fk.parent_columns == [subject.key.clone()]
            });
            if !references_key {
                self.found.push(format!(
                    "subject: unlink names {table}.{column}, which is not a foreign key to the subject's key {}",
                    subject.key
                ));
            } else if !self.live.tables[table].columns[column].nullable {
                self.found.push(format!(
                    "subject: unlink clears {table}.{column}, which is NOT NULL; drop the constraint or keep the customers it points at"
                ));
            }
        }
        if self.column(table, &subject.key, "subject key") {
            let column = &self.live.tables[table].columns[&subject.key];
            if column.key_type().is_none() {
                self.found.push(format!(
                    "column {table}.{} is {}; a subject key must be text, varchar, integer, bigint or uuid",
                    subject.key, column.sql_type
                ));
            }
            if !self.live.tables[table].is_unique(&subject.key, false) {
                self.found.push(format!(
                    "column {table}.{} has no unique index of its own; a subject key must name one row",
                    subject.key
                ));
            }
        }
        for lookup in &subject.lookups {
            if !self.column(table, &lookup.column, "subject lookup") {
                continue;
            }
            let column = &self.live.tables[table].columns[&lookup.column];
            match LookupType::of(&column.sql_type, column.base_type()) {
                None => self.found.push(format!(
                    "column {table}.{} is {}; a lookup must be text, varchar, citext, integer, bigint or uuid",
                    lookup.column, column.sql_type
                )),
                Some(t) if lookup.case_insensitive && !t.is_text() => self.found.push(format!(
                    "lookup {} is case_insensitive but {table}.{} is {}: only text is compared in any case",
                    lookup.column, lookup.column, column.sql_type
                )),
                Some(_) => {}
            }
            if !self.live.tables[table].is_unique(&lookup.column, lookup.case_insensitive) {
                let index = if lookup.case_insensitive {
                    format!("unique index on lower({})", lookup.column)
                } else {
                    "unique index of its own".to_string()
                };
                self.found.push(format!(
                    "column {table}.{} has no {index}; a lookup must name one row",
                    lookup.column
                ));
            }
        }
        if let Action::Anonymize(a) = &subject.action {
            self.action(table, &subject.action, "subject", true);
            if a.columns().any(|c| c == subject.key) {
                self.found.push(format!(
                    "the subject's key {} cannot be anonymized: deletions name the customer by it",
                    subject.key
                ));
            }
            for lookup in &subject.lookups {
                if !a.cleared().any(|c| c == lookup.column) {
                    self.found.push(format!(
                        "the subject is kept but its lookup {} is not cleared: add it to set_null, or to set_value (with {{key}} if it must stay unique)",
                        lookup.column
                    ));
                }
            }
        }
    }

    /// The columns an anonymizing action names exist and can take what it sets, and the
    /// schema lets it run: no trigger writes back a column it clears, no unique column gets one
    /// value for every erased row, and a step that only stamps has rows left to stamp.
    /// `one_row`: the action changes one row per customer (the subject's, a referenced one),
    /// so that a value with `{key}` is unique to it.
    fn action(&mut self, table: &TableName, action: &Action, role: &str, one_row: bool) {
        let Action::Anonymize(a) = action else { return };
        let Anonymize {
            set_null,
            set_value,
            set_now,
            remove_keys,
        } = a;
        for trigger in self.live.triggers.iter().filter(|t| &t.table == table) {
            if !trigger.before_row_update() {
                continue;
            }
            for column in a.cleared().filter(|c| trigger.assigns(c)) {
                self.found.push(format!(
                    "trigger {} on {table} sets {column} on every update, which would write back what the plan clears ({role}): \
                     exempt the erasure in the trigger (for example `IF current_setting('application_name') = 'erasure' THEN RETURN NEW; END IF`) or drop the assignment",
                    trigger.name
                ));
            }
        }
        for (column, value) in set_value {
            let unique = self
                .live
                .tables
                .get(table)
                .is_some_and(|t| t.is_unique(column, false));
            if unique && !(one_row && value.contains("{key}")) {
                let fix = match one_row {
                    true => {
                        "put {key} in the value (\"erased-{key}\") so that each row gets its own, or set it to null"
                    }
                    false => "a step may change several rows of one customer, so set it to null",
                };
                self.found.push(format!(
                    "column {table}.{column} is unique, and set_value gives every erased row the same value {value:?} ({role}): \
                     the second erasure would fail; {fix}"
                ));
            }
        }
        if a.cleared().next().is_none() {
            let never_null = set_now.iter().all(|c| {
                self.live
                    .column(table, c)
                    .is_some_and(|column| !column.nullable)
            });
            if never_null {
                self.found.push(format!(
                    "{role} only stamps {} ({table}), which is never null: a row counts as done once stamped, so it would \
                     change nothing; name the personal columns it clears, or make it a [[keep]] with the reason",
                    set_now.join(", ")
                ));
            }
        }
        for column in a.columns().collect::<BTreeSet<_>>() {
            if !self.column(table, column, role) {
                continue;
            }
            let c = &self.live.tables[table].columns[column];
            if set_null.iter().any(|n| n == column) && !c.nullable {
                self.found.push(format!(
                    "column {table}.{column} is NOT NULL and cannot be set to null ({role}): set_value gives it a fixed value"
                ));
            }
            if set_now.iter().any(|n| n == column) && !c.is_time() {
                self.found.push(format!(
                    "column {table}.{column} is {}; set_now needs a timestamp or date ({role})",
                    c.sql_type
                ));
            }
            if remove_keys.iter().any(|(n, _)| n == column) && !c.is_jsonb() {
                self.found.push(format!(
                    "column {table}.{column} is {}; remove_keys needs jsonb ({role})",
                    c.sql_type
                ));
            }
        }
    }

    /// Every hop's column and key exist, and compare without a cast (which would keep the
    /// column's index from being used).
    fn paths(&mut self, from: &TableName, paths: &[PathHops], role: &str) {
        for path in paths {
            let mut at = from.clone();
            for hop in path {
                let known = self.live.tables.contains_key(&at);
                let target = self.table(&hop.table, role);
                for (column, key) in hop.pairs() {
                    if known
                        && target
                        && self.column(&at, column, role)
                        && self.column(&hop.table, key, role)
                    {
                        let c = &self.live.tables[&at].columns[column];
                        let k = &self.live.tables[&hop.table].columns[key];
                        if c.key_type().is_none() || c.base_type() != k.base_type() {
                            self.found.push(format!(
                                "{at}.{column} is {} and {}.{key} is {}: a path compares them as they are, with no cast (which would keep the index from being used); they must have the same type, text, varchar, integer, bigint or uuid ({role})",
                                c.sql_type, hop.table, k.sql_type
                            ));
                        }
                    }
                }
                at = hop.table.clone();
            }
        }
    }

    /// Foreign keys into the subject, and into tables the plan deletes from: each needs a step
    /// whose path starts with exactly that key (nulling it, if the step anonymizes), or a
    /// `[[keep]]`.
    fn coverage(&mut self, plan: &Plan) {
        let mut reached = plan.deleted_tables();
        reached.insert(&plan.subject.table);
        for fk in &self.live.foreign_keys {
            if !reached.contains(&fk.parent) {
                continue;
            }
            if let Some(gap) = uncovered(plan, fk) {
                self.found.push(gap);
            }
        }
    }
}

/// Why `fk` (into the subject or a deleted table) is not covered, if it is not.
fn uncovered(plan: &Plan, fk: &ForeignKey) -> Option<String> {
    let one_column = fk.child_columns.len() == 1 && fk.parent_columns.len() == 1;
    let subject = &plan.subject;
    if fk.child == subject.table && fk.parent == subject.table {
        // Other customers' rows pointing at the customer (`referred_by`).
        return match (&subject.action, fk.on_delete.as_str()) {
            (Action::Anonymize(_), _) | (_, "n" | "d") => None,
            (_, "c") => Some(format!(
                "{}.{} references the subject itself with ON DELETE CASCADE (foreign key {}): erasing a customer would erase every customer that points at it; make it ON DELETE SET NULL, or add unlink = [\"{}\"] to [subject] and drop the cascade",
                fk.child,
                fk.child_columns.join(", "),
                fk.name,
                fk.child_columns.join(", ")
            )),
            _ if one_column && subject.unlink.contains(&fk.child_columns[0]) => None,
            _ => Some(format!(
                "{}.{} references the subject itself (foreign key {}): another customer's row pointing at the customer stops its erasure; add unlink = [\"{}\"] to [subject] (the link is cleared in the other customers' rows)",
                fk.child,
                fk.child_columns.join(", "),
                fk.name,
                fk.child_columns.join(", ")
            )),
        };
    }
    if fk.child == subject.table {
        // The subject's own reference: gone with the row, or nulled when the row is kept.
        return match &subject.action {
            Action::Delete => None,
            Action::Anonymize(a) if one_column && a.set_null.contains(&fk.child_columns[0]) => None,
            Action::Anonymize(_) if fk.parent == subject.table => None,
            Action::Anonymize(_) => Some(format!(
                "the subject is kept but points at {} by {} (foreign key {}), whose rows the plan deletes; add {} to the subject's set_null",
                fk.parent,
                fk.child_columns.join(", "),
                fk.name,
                fk.child_columns.join(", ")
            )),
        };
    }
    if plan.keeps.iter().any(|k| k.table == fk.child) {
        if fk.blocks_delete() && plan.deleted_tables().contains(&fk.parent) {
            return Some(format!(
                "table {} is kept, but its foreign key {} ({} -> {}) has no ON DELETE action and the plan deletes rows of {}: \
                 every erasure of a customer with such rows would fail; give {} a [[step]] (delete its rows, or anonymize them \
                 nulling {}), or let the database act on them (ON DELETE SET NULL or CASCADE)",
                fk.child,
                fk.name,
                fk.child_columns.join(", "),
                fk.parent,
                fk.parent,
                fk.child,
                fk.child_columns.join(", "),
            ));
        }
        return None;
    }
    // The same pairs of columns, in any order.
    let mut pairs: Vec<(&str, &str)> = fk
        .child_columns
        .iter()
        .map(String::as_str)
        .zip(fk.parent_columns.iter().map(String::as_str))
        .collect();
    pairs.sort();
    let covering = plan.step(&fk.child).filter(|step| {
        step.paths.iter().any(|path| {
            path.first().is_some_and(|hop| {
                let mut hop_pairs: Vec<(&str, &str)> = hop.pairs().collect();
                hop_pairs.sort();
                hop.table == fk.parent && hop_pairs == pairs
            })
        })
    });
    match covering {
        Some(step) => match &step.action {
            // Rows kept by anonymize must let go of a deleted row, or its delete fails.
            Action::Anonymize(a)
                if plan.deleted_tables().contains(&fk.parent)
                    && !fk.child_columns.iter().any(|c| repoint::lets_go(a, c)) =>
            {
                Some(format!(
                    "step {} anonymizes but keeps {} pointing at {} (foreign key {}); add it to set_null, or repoint it at a placeholder row with set_value",
                    step.table, fk.child_columns[0], fk.parent, fk.name
                ))
            }
            _ => None,
        },
        None => {
            let hop = match one_column {
                true => format!(
                    "{} -> {}.{}",
                    fk.child_columns[0], fk.parent, fk.parent_columns[0]
                ),
                false => format!(
                    "({}) -> {}.({})",
                    fk.child_columns.join(", "),
                    fk.parent,
                    fk.parent_columns.join(", ")
                ),
            };
            let tree = match fk.child == fk.parent {
                true => {
                    " (a path from the table to itself: the rows under the customer's rows, however deep, are erased with them, and other customers' rows under them let go)"
                }
                false => "",
            };
            Some(format!(
                "table {} references {} ({} -> {}, foreign key {}) and no step covers it; \
                 add a [[step]] for table {} with a path \"{hop}\"{tree} (or a [[keep]] with the reason it stays)",
                fk.child,
                fk.parent,
                fk.child_columns.join(", "),
                fk.parent_columns.join(", "),
                fk.name,
                fk.child,
            ))
        }
    }
}
