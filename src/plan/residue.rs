//! What survives a DELETE, as the plan sees it: the residue map read from the catalog for every
//! table the plan touches, and what the plan says of it.
//!
//! A plan's rows gone from the live tables are not the end of the data. The catalog says where
//! more of it goes: a user trigger copies an erased row into a history table, a materialized
//! view keeps it until refreshed, an `oid` column points at a large object that outlives the
//! row, a publication that sends no deletes leaves it with its subscribers, `REPLICA IDENTITY
//! FULL` puts the whole old row into the WAL and every change stream, a logical slot holds the
//! WAL until its consumer catches up, a foreign table keeps its rows on another server, an
//! unlogged table may be a copy the plan does not know. [`map`] reads each of them; each is a
//! gap with its fix (the worker does not start while one remains: cover the history table with
//! a step, refresh or exempt the view, unlink the large objects), or a warning where only the
//! operator can act.
//!
//! What the plan says of it ([`Spec`]), in its TOML:
//! - `[[view]]` with `name` and `refresh = true` (the worker refreshes the view after erasures,
//!   `CONCURRENTLY` where a unique index allows) or `exempt = "the reason"`;
//! - `unlink_large_objects = ["column"]` on a step, the subject or a referenced row: the
//!   erasure statement itself unlinks the large objects those columns point at (an anonymizing
//!   action must also null the column);
//! - `[[exempt]]` with `table`, optional `columns` and `reason`: columns that look personal but
//!   are not (for `erasure plan --strict`), or an `oid` column that is no large object.
//!
//! A step's table that a trigger on the plan's tables writes to is cleared once more after the
//! erasure statement, in its transaction ([`trailing_statement`]): the trigger fires at the end
//! of the statement, after every step has read its snapshot.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use sqlx::PgPool;

use super::live::LiveSchema;
use super::sql::reach::{change, owner, reach};
use super::sql::{Params, Statement, Value};
use super::{Action, Plan, TableName, ident};

/// What the plan says of the residue.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    pub views: Vec<View>,
    /// Columns holding large object references whose objects the erasure unlinks, by table.
    pub unlink: BTreeMap<TableName, Vec<String>>,
    pub exempt: Vec<Exempt>,
}

/// A materialized view built from the plan's tables, and what the worker does with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct View {
    pub name: TableName,
    pub treatment: Treatment,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Treatment {
    /// Refreshed after erasures.
    Refresh,
    /// Left as it is, for this reason.
    Exempt(String),
}

/// Columns that look personal but are not, or an `oid` column that is no large object; every
/// column of the table when `columns` is empty.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exempt {
    pub table: TableName,
    pub columns: Vec<String>,
    pub reason: String,
}

impl Spec {
    /// The columns of `table` whose large objects the erasure unlinks.
    pub fn unlinks(&self, table: &TableName) -> &[String] {
        self.unlink.get(table).map_or(&[], Vec::as_slice)
    }

    /// Whether `column` of `table` is exempted (with its reason).
    pub fn exempted(&self, table: &TableName, column: &str) -> Option<&str> {
        self.exempt
            .iter()
            .find(|e| {
                &e.table == table && (e.columns.is_empty() || e.columns.iter().any(|c| c == column))
            })
            .map(|e| e.reason.as_str())
    }

    pub fn view(&self, name: &TableName) -> Option<&View> {
        self.views.iter().find(|v| &v.name == name)
    }
}

/// Checks that need no database.
pub fn consistency(plan: &Plan, problems: &mut Vec<String>) {
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
    let mut touched = BTreeSet::new();
    for (table, action, what) in actions {
        touched.insert(table);
        if let Action::Anonymize(a) = action {
            for column in plan.residue.unlinks(table) {
                if !a.set_null.contains(column) {
                    problems.push(format!(
                        "{what} unlinks the large objects of {column} but keeps the column: add {column} to set_null (a kept row would point at a large object that is gone)"
                    ));
                }
            }
        }
    }
    for table in plan.residue.unlink.keys() {
        if !touched.contains(table) {
            problems.push(format!(
                "unlink_large_objects names {table}, which has no step"
            ));
        }
    }
    let mut seen = BTreeSet::new();
    for view in &plan.residue.views {
        if !seen.insert(&view.name) {
            problems.push(format!("view {} is named twice; name it once", view.name));
        }
        if let Treatment::Exempt(reason) = &view.treatment
            && reason.trim().is_empty()
        {
            problems.push(format!("view {} is exempt without a reason", view.name));
        }
    }
    for exempt in &plan.residue.exempt {
        if exempt.reason.trim().is_empty() {
            problems.push(format!("exempt {} needs a reason", exempt.table));
        }
    }
}

/// Where the plan's tables leave copies, as the catalog says, with what covers each.
#[derive(Clone, Debug, Default)]
pub struct Map {
    /// What the plan must cover before the worker starts, each with its fix.
    pub gaps: Vec<String>,
    /// What only the operator can act on, each with the fix.
    pub warnings: Vec<String>,
    /// What is found and covered, in words.
    pub covered: Vec<String>,
    /// The plan's tables, as the catalog has them.
    pub touched: Vec<TableName>,
    /// Steps' tables that triggers on the plan's tables write to, cleared once more after the
    /// erasure statement.
    pub refilled: BTreeSet<TableName>,
    /// The trigger copies found: (trigger, its table, the table it writes to, covered).
    pub trigger_copies: Vec<(String, TableName, TableName, bool)>,
    /// Materialized views built from the plan's tables.
    pub views: Vec<FoundView>,
    /// Columns holding large object references: (table, column, unlinked or managed).
    pub large_objects: Vec<(TableName, String, bool)>,
    pub publications: Vec<Publication>,
    /// The plan's tables whose replica identity is FULL.
    pub replica_full: Vec<TableName>,
    pub slots: Vec<Slot>,
    pub replicas: Vec<Replica>,
    /// Foreign tables, with their server.
    pub foreign_tables: Vec<(TableName, String)>,
    /// Unlogged tables outside the plan that look like copies of its tables.
    pub unlogged_copies: Vec<TableName>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FoundView {
    pub name: TableName,
    /// The plan's tables it is built from.
    pub from: Vec<TableName>,
    /// It has a unique index of plain columns, and is populated: it can be refreshed
    /// CONCURRENTLY.
    pub concurrently: bool,
    pub treatment: Option<Treatment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub name: String,
    /// The plan's tables it publishes.
    pub tables: Vec<TableName>,
    pub deletes: bool,
    pub updates: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    pub name: String,
    pub logical: bool,
    pub plugin: Option<String>,
    pub active: bool,
    /// WAL the slot holds back from being recycled (bytes), where the server says.
    pub held_bytes: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replica {
    pub name: String,
    pub state: Option<String>,
    /// WAL sent but not yet replayed (bytes), where the server says.
    pub replay_lag_bytes: Option<i64>,
}

impl Map {
    /// The residue in words, for `erasure plan`: what is covered, then the warnings.
    pub fn describe(&self) -> String {
        let mut out = String::from("Residue (what a DELETE leaves behind, from the catalog):\n");
        if self.covered.is_empty() && self.warnings.is_empty() && self.gaps.is_empty() {
            out.push_str("  no trigger copies, materialized views, large objects, change streams or foreign tables\n");
        }
        for line in &self.covered {
            let _ = writeln!(out, "  {line}");
        }
        for line in &self.warnings {
            let _ = writeln!(out, "  warning: {line}");
        }
        out
    }
}

#[derive(sqlx::FromRow)]
struct TriggerRow {
    schema: String,
    table: String,
    name: String,
    kind: i16,
    function: String,
    language: String,
    source: String,
    config: String,
    definition: String,
}

/// Reads the residue map of `plan` (checked against the live schema) from the database.
pub async fn map(plan: &Plan, pool: &PgPool) -> Result<Map, sqlx::Error> {
    let live = LiveSchema::read(pool).await?;
    let mut map = Map::default();
    // The tables the plan changes, and how: deleted (true) or updated.
    let mut touched: BTreeMap<TableName, &Action> = BTreeMap::new();
    touched.insert(plan.subject.table.clone(), &plan.subject.action);
    for step in &plan.steps {
        touched.insert(step.table.clone(), &step.action);
    }
    for r in &plan.referenced {
        touched.insert(r.table.clone(), &r.action);
    }
    map.touched = touched.keys().cloned().collect();
    let (schemas, names): (Vec<String>, Vec<String>) = touched
        .keys()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .unzip();
    let kept: BTreeMap<&TableName, &str> = plan
        .keeps
        .iter()
        .map(|k| (&k.table, k.reason.as_str()))
        .collect();

    // Triggers that fire on what the erasure does, and where their functions write.
    let triggers: Vec<TriggerRow> = sqlx::query_as(
        "SELECT rn.nspname::text AS schema, r.relname::text AS table, t.tgname::text AS name, \
                t.tgtype AS kind, p.proname::text AS function, l.lanname::text AS language, \
                COALESCE(p.prosrc, '') AS source, COALESCE(array_to_string(p.proconfig, ','), '') AS config, \
                pg_get_triggerdef(t.oid) AS definition \
         FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid JOIN pg_language l ON l.oid = p.prolang \
         JOIN pg_class r ON r.oid = COALESCE(pg_partition_root(t.tgrelid), t.tgrelid) \
         JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         JOIN unnest($1::text[], $2::text[]) AS u(s, n) ON u.s = rn.nspname AND u.n = r.relname \
         WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND t.tgenabled <> 'D' \
         ORDER BY 1, 2, 3",
    )
    .bind(&schemas)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    let mut managed: BTreeSet<(TableName, String)> = BTreeSet::new();
    for t in &triggers {
        let table = TableName::new(&t.schema, &t.table);
        // The lo extension's trigger unlinks the object a row lets go of.
        if t.function == "lo_manage" {
            if let Some(column) = t
                .definition
                .rsplit_once("lo_manage(")
                .and_then(|(_, args)| args.split(')').next())
            {
                managed.insert((
                    table.clone(),
                    column.trim_matches(['\'', '"', ' ']).to_owned(),
                ));
            }
            continue;
        }
        let fires = match touched.get(&table) {
            Some(Action::Delete) => t.kind & 8 != 0,
            Some(Action::Anonymize(_)) => t.kind & 16 != 0,
            None => false,
        };
        if !fires {
            continue;
        }
        if !matches!(t.language.as_str(), "plpgsql" | "sql") {
            map.warnings.push(format!(
                "trigger {} on {table} runs {} (in {}), whose writes the check cannot read: if it copies the rows the erasure changes, cover where it writes with a [[step]]",
                t.name, t.function, t.language
            ));
            continue;
        }
        let (targets, dynamic) = written_tables(&t.source);
        if dynamic {
            map.warnings.push(format!(
                "trigger {} on {table} runs {}, which builds statements at run time (EXECUTE): if it copies the rows the erasure changes, cover where it writes with a [[step]]",
                t.name, t.function
            ));
        }
        for target in targets {
            let Some(target) = resolve(&live, &target, &t.config, &table) else {
                map.warnings.push(format!(
                    "trigger {} on {table} writes to {target}, which is no table the check knows",
                    t.name
                ));
                continue;
            };
            let what = format!(
                "trigger {} on {table} copies what the erasure changes into {target}",
                t.name
            );
            let covered = if plan.step(&target).is_some() {
                map.refilled.insert(target.clone());
                map.covered.push(format!(
                    "{what}: step {target} covers it, and the erasure clears the copies its own statement makes, in its transaction"
                ));
                true
            } else if let Some(reason) = kept.get(&target) {
                map.warnings.push(format!(
                    "{what}, kept on purpose ({reason}): the copies stay"
                ));
                false
            } else if touched.contains_key(&target) {
                map.covered
                    .push(format!("{what}, which the plan erases too"));
                true
            } else {
                map.gaps.push(format!(
                    "{what}, which the plan does not cover: each erasure would make a copy of what it erases; add a [[step]] for table {target} whose path reaches the customer (by the column that holds its key: path = [\"<column> -> {}.{}\"]), or a [[keep]] with the reason it stays",
                    plan.subject.table, plan.subject.key
                ));
                false
            };
            map.trigger_copies
                .push((t.name.clone(), table.clone(), target, covered));
        }
    }

    // Materialized views built from the plan's tables, directly or through views.
    let views: Vec<(String, String, String, String, bool)> = sqlx::query_as(
        "WITH RECURSIVE deps(view_oid, base_oid) AS ( \
           SELECT DISTINCT r.ev_class, d.refobjid FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid \
           WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass \
             AND r.ev_class <> d.refobjid \
         ), reached(view_oid, base_oid) AS ( \
           SELECT view_oid, base_oid FROM deps \
           UNION SELECT d.view_oid, r.base_oid FROM deps d JOIN reached r ON d.base_oid = r.view_oid \
         ) \
         SELECT DISTINCT vn.nspname::text, v.relname::text, bn.nspname::text, b.relname::text, \
                v.relispopulated AND EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = v.oid \
                  AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL) \
         FROM reached x JOIN pg_class v ON v.oid = x.view_oid AND v.relkind = 'm' \
         JOIN pg_namespace vn ON vn.oid = v.relnamespace \
         JOIN pg_class b ON b.oid = COALESCE(pg_partition_root(x.base_oid), x.base_oid) \
         JOIN pg_namespace bn ON bn.oid = b.relnamespace \
         JOIN unnest($1::text[], $2::text[]) AS u(s, n) ON u.s = bn.nspname AND u.n = b.relname \
         ORDER BY 1, 2, 3, 4",
    )
    .bind(&schemas)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    let mut found: BTreeMap<TableName, FoundView> = BTreeMap::new();
    for (vs, vn, bs, bn, concurrently) in views {
        let name = TableName::new(&vs, &vn);
        let entry = found.entry(name.clone()).or_insert_with(|| FoundView {
            treatment: plan.residue.view(&name).map(|v| v.treatment.clone()),
            name,
            from: Vec::new(),
            concurrently,
        });
        entry.from.push(TableName::new(&bs, &bn));
    }
    for view in found.values() {
        let from: Vec<String> = view.from.iter().map(ToString::to_string).collect();
        let what = format!(
            "materialized view {} is built from {}",
            view.name,
            from.join(", ")
        );
        match &view.treatment {
            Some(Treatment::Refresh) => map.covered.push(format!(
                "{what}: refreshed after erasures{}",
                if view.concurrently {
                    " (CONCURRENTLY: it has a unique index)"
                } else {
                    " (not concurrently: it has no unique index of plain columns, so readers wait for the refresh)"
                }
            )),
            Some(Treatment::Exempt(reason)) => map.warnings.push(format!(
                "{what}, exempt ({reason}): an erased customer stays in it until it is refreshed"
            )),
            None => map.gaps.push(format!(
                "{what}: an erased customer stays in it until it is refreshed; add [[view]] name = \"{}\" with refresh = true (the worker refreshes it after erasures, CONCURRENTLY where a unique index allows) or exempt = \"the reason it may keep them\"",
                view.name
            )),
        }
    }
    map.views = found.into_values().collect();
    for view in &plan.residue.views {
        if !map.views.iter().any(|v| v.name == view.name) {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind = 'm')",
            )
            .bind(&view.name.schema)
            .bind(&view.name.name)
            .fetch_one(pool)
            .await?;
            if !exists {
                map.gaps.push(format!(
                    "materialized view {} does not exist ([[view]])",
                    view.name
                ));
            }
        }
    }

    // Columns that hold large object references.
    let large: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, a.attname::text \
         FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_type ty ON ty.oid = a.atttypid \
         JOIN unnest($1::text[], $2::text[]) AS u(s, n) ON u.s = n.nspname AND u.n = c.relname \
         WHERE a.attnum > 0 AND NOT a.attisdropped \
           AND (a.atttypid = 'oid'::regtype OR ty.typbasetype = 'oid'::regtype) \
         ORDER BY 1, 2, 3",
    )
    .bind(&schemas)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    for (s, n, column) in large {
        let table = TableName::new(&s, &n);
        let Some(action) = touched.get(&table) else {
            continue;
        };
        let unlinked = plan.residue.unlinks(&table).contains(&column);
        let covered = if unlinked {
            map.covered.push(format!(
                "column {table}.{column} holds large objects: the erasure statement unlinks them"
            ));
            true
        } else if managed.contains(&(table.clone(), column.clone())) {
            map.covered.push(format!(
                "column {table}.{column} holds large objects: the lo extension's lo_manage trigger unlinks them"
            ));
            true
        } else if let Some(reason) = plan.residue.exempted(&table, &column) {
            map.covered.push(format!(
                "column {table}.{column} is an oid, exempt ({reason})"
            ));
            true
        } else {
            let lets_go = match action {
                Action::Delete => true,
                Action::Anonymize(a) => a.set_null.contains(&column),
            };
            let role = role_of(plan, &table);
            if lets_go {
                map.gaps.push(format!(
                    "column {table}.{column} holds large object references: the erasure lets go of them and each large object stays in pg_largeobject (VACUUM FULL too leaves it); add unlink_large_objects = [\"{column}\"] to {role} (the erasure statement unlinks them), or [[exempt]] table = \"{table}\" with columns = [\"{column}\"] and the reason if it is no large object"
                ));
            } else {
                map.warnings.push(format!(
                    "column {table}.{column} holds large object references that the kept rows keep: if they hold personal data, add {column} to set_null and to unlink_large_objects of {role}"
                ));
            }
            false
        };
        map.large_objects.push((table, column, covered));
    }

    // Publications of the plan's tables, and the replica identity of their rows.
    let publications: Vec<(String, bool, bool, String, String)> = sqlx::query_as(
        "SELECT DISTINCT p.pubname::text, p.pubdelete, p.pubupdate, rn.nspname::text, r.relname::text \
         FROM pg_publication p JOIN pg_publication_tables pt ON pt.pubname = p.pubname \
         JOIN pg_namespace n ON n.nspname = pt.schemaname \
         JOIN pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename \
         JOIN pg_class r ON r.oid = COALESCE(pg_partition_root(c.oid), c.oid) \
         JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         JOIN unnest($1::text[], $2::text[]) AS u(s, n) ON u.s = rn.nspname AND u.n = r.relname \
         ORDER BY 1, 4, 5",
    )
    .bind(&schemas)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    for (name, deletes, updates, s, n) in publications {
        let table = TableName::new(&s, &n);
        match map.publications.iter_mut().find(|p| p.name == name) {
            Some(p) => p.tables.push(table),
            None => map.publications.push(Publication {
                name,
                tables: vec![table],
                deletes,
                updates,
            }),
        }
    }
    for p in &map.publications {
        let missing: Vec<String> = p
            .tables
            .iter()
            .filter(|t| match touched.get(*t) {
                Some(Action::Delete) => !p.deletes,
                Some(Action::Anonymize(_)) => !p.updates,
                None => false,
            })
            .map(ToString::to_string)
            .collect();
        let tables: Vec<String> = p.tables.iter().map(ToString::to_string).collect();
        if missing.is_empty() {
            map.covered.push(format!(
                "publication {} sends what the erasure does to {} on to its subscribers (each keeps what a DELETE leaves, as this server does)",
                p.name,
                tables.join(", ")
            ));
        } else {
            map.warnings.push(format!(
                "publication {} publishes {} without the deletes or updates the erasure makes: its subscribers keep each erased row; only the operator can act: ALTER PUBLICATION {} SET (publish = 'insert, update, delete'), or erase on each subscriber",
                p.name,
                missing.join(", "),
                ident(&p.name)
            ));
        }
    }
    let full: Vec<(String, String)> = sqlx::query_as(
        "SELECT DISTINCT rn.nspname::text, r.relname::text FROM pg_class c \
         JOIN pg_class r ON r.oid = COALESCE(pg_partition_root(c.oid), c.oid) \
         JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         JOIN unnest($1::text[], $2::text[]) AS u(s, n) ON u.s = rn.nspname AND u.n = r.relname \
         WHERE c.relreplident = 'f' AND c.relkind IN ('r', 'p') ORDER BY 1, 2",
    )
    .bind(&schemas)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    for (s, n) in full {
        let table = TableName::new(&s, &n);
        map.warnings.push(format!(
            "table {table} has REPLICA IDENTITY FULL: the WAL of each row the erasure deletes or updates carries the whole old row, and every logical change stream (publications, slots) sends it on; only the operator can act: ALTER TABLE {} REPLICA IDENTITY DEFAULT",
            table.sql()
        ));
        map.replica_full.push(table);
    }

    // Replication slots and replicas: the server's, not one table's.
    let in_recovery: bool = sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await?;
    let held = match in_recovery {
        true => "NULL::bigint",
        false => {
            "pg_wal_lsn_diff(pg_current_wal_lsn(), COALESCE(s.confirmed_flush_lsn, s.restart_lsn))::bigint"
        }
    };
    type SlotRow = (String, bool, Option<String>, bool, Option<i64>);
    let slots: Vec<SlotRow> = sqlx::query_as(&format!(
        "SELECT s.slot_name::text, s.slot_type = 'logical', s.plugin::text, s.active, {held} \
         FROM pg_replication_slots s WHERE s.slot_type = 'physical' OR s.database = current_database() \
         ORDER BY 1"
    ))
    .fetch_all(pool)
    .await?;
    for (name, logical, plugin, active, held_bytes) in slots {
        let held = held_bytes.map_or("an unknown amount of".to_string(), |b| {
            format!("{} of", bytes(b))
        });
        if logical {
            map.warnings.push(format!(
                "logical replication slot {name} ({}, {}) decodes every erasure into its change stream, and holds {held} WAL until its consumer confirms it: what it sends on is out of the worker's reach",
                plugin.as_deref().unwrap_or("no plugin"),
                if active { "active" } else { "inactive" },
            ));
        } else {
            map.warnings.push(format!(
                "physical replication slot {name} ({}) holds {held} WAL for a replica or a backup until it confirms it",
                if active { "active" } else { "inactive" },
            ));
        }
        map.slots.push(Slot {
            name,
            logical,
            plugin,
            active,
            held_bytes,
        });
    }
    let lag = match in_recovery {
        true => "NULL::bigint",
        false => "pg_wal_lsn_diff(pg_current_wal_lsn(), r.replay_lsn)::bigint",
    };
    let replicas: Vec<(Option<String>, Option<String>, Option<i64>)> = sqlx::query_as(&format!(
        "SELECT r.application_name::text, r.state::text, {lag} FROM pg_stat_replication r ORDER BY 1"
    ))
    .fetch_all(pool)
    .await?;
    for (name, state, replay_lag_bytes) in replicas {
        map.replicas.push(Replica {
            name: name.unwrap_or_default(),
            state,
            replay_lag_bytes,
        });
    }

    // Foreign tables, and unlogged tables that look like copies of the plan's.
    let foreign: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text, s.srvname::text FROM pg_foreign_table f \
         JOIN pg_class c ON c.oid = f.ftrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_foreign_server s ON s.oid = f.ftserver ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    for (s, n, server) in foreign {
        let table = TableName::new(&s, &n);
        map.warnings.push(format!(
            "foreign table {table} keeps its rows on server {server}, which no erasure here reaches: if they hold customers' data, erase them there"
        ));
        map.foreign_tables.push((table, server));
    }
    let unlogged: Vec<(String, String)> = sqlx::query_as(
        "SELECT n.nspname::text, c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relpersistence = 'u' AND c.relkind IN ('r', 'p') AND NOT c.relispartition \
           AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'erasure') ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let subject_columns: BTreeSet<&String> = live
        .tables
        .get(&plan.subject.table)
        .map(|t| t.columns.keys().collect())
        .unwrap_or_default();
    for (s, n) in unlogged {
        let table = TableName::new(&s, &n);
        if touched.contains_key(&table) || kept.contains_key(&table) {
            continue;
        }
        let shared: Vec<&String> = live
            .tables
            .get(&table)
            .map(|t| {
                t.columns
                    .keys()
                    .filter(|c| subject_columns.contains(c))
                    .collect()
            })
            .unwrap_or_default();
        if shared.len() >= 2 {
            let shared: Vec<&str> = shared.iter().map(|c| c.as_str()).collect();
            map.warnings.push(format!(
                "unlogged table {table} has columns of {} ({}) and no step: a copy the plan does not cover (unlogged, it is in no WAL, replica or physical backup, but here until erased); give it a [[step]] or a [[keep]] with the reason",
                plan.subject.table,
                shared.join(", ")
            ));
            map.unlogged_copies.push(table);
        }
    }
    Ok(map)
}

/// How the plan names the action on `table`, for a fix.
fn role_of(plan: &Plan, table: &TableName) -> String {
    if &plan.subject.table == table {
        "[subject]".into()
    } else if plan.step(table).is_some() {
        format!("the [[step]] for {table}")
    } else {
        format!("the [[referenced]] {table}")
    }
}

/// `n` bytes in words.
pub fn bytes(n: i64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GB", n as f64 / f64::from(1 << 30)),
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / f64::from(1 << 20)),
        n if n >= 1 << 10 => format!("{:.1} kB", n as f64 / f64::from(1 << 10)),
        n => format!("{n} bytes"),
    }
}

/// The tables a trigger function's source writes rows to (`INSERT INTO`, `UPDATE ... SET`,
/// `MERGE INTO`), as written; and whether it builds statements at run time (`EXECUTE`).
pub fn written_tables(source: &str) -> (Vec<String>, bool) {
    let text: String = source
        .lines()
        .map(|line| line.split("--").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let words = tokens(&text);
    let lower: Vec<String> = words.iter().map(|w| w.to_lowercase()).collect();
    // A name as PostgreSQL reads it: folded to lower case unless quoted.
    let name = |i: usize| -> Option<String> {
        let word = words.get(i)?;
        Some(
            word.split('.')
                .map(|part| match part.starts_with('"') {
                    true => part.to_owned(),
                    false => part.to_lowercase(),
                })
                .collect::<Vec<_>>()
                .join("."),
        )
    };
    let mut tables = Vec::new();
    let mut dynamic = false;
    for (i, word) in lower.iter().enumerate() {
        let next = |n: usize| lower.get(i + n).map(String::as_str);
        match word.as_str() {
            "insert" | "merge" if next(1) == Some("into") => tables.extend(name(i + 2)),
            "update" => {
                let at = if next(1) == Some("only") {
                    i + 2
                } else {
                    i + 1
                };
                let after = |n: usize| lower.get(at + n).map(String::as_str);
                // `UPDATE t SET` or `UPDATE t alias SET`.
                if lower.get(at).is_some_and(|w| w != "set")
                    && (after(1) == Some("set") || after(2) == Some("set"))
                {
                    tables.extend(name(at));
                }
            }
            "execute" if next(1) != Some("function") && next(1) != Some("procedure") => {
                dynamic = true
            }
            _ => {}
        }
    }
    tables.sort();
    tables.dedup();
    (tables, dynamic)
}

/// Words and (possibly quoted, possibly qualified) names of SQL text; string literals are
/// left out (what a trigger builds in them, it runs with EXECUTE).
fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut literal = false;
    for c in text.chars() {
        match c {
            '\'' if !quoted => {
                literal = !literal;
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
            _ if literal => {}
            '"' => {
                quoted = !quoted;
                current.push(c);
            }
            c if quoted => current.push(c),
            c if c.is_alphanumeric() || c == '_' || c == '.' || c == '$' => current.push(c),
            _ => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// The table a trigger function names `written` (maybe qualified, maybe quoted), looked up in
/// the function's own `search_path`, the trigger's table's schema and `public`.
fn resolve(live: &LiveSchema, written: &str, config: &str, on: &TableName) -> Option<TableName> {
    let unquote = |s: &str| s.trim_matches('"').to_owned();
    if let Some((schema, name)) = written.split_once('.') {
        let table = TableName::new(&unquote(schema), &unquote(name));
        return live.tables.contains_key(&table).then_some(table);
    }
    let name = unquote(written);
    let mut schemas: Vec<String> = config
        .split(',')
        .filter_map(|item| item.strip_prefix("search_path="))
        .flat_map(|path| path.split(' '))
        .map(|s| unquote(s.trim()))
        .filter(|s| !s.is_empty())
        .collect();
    schemas.push(on.schema.clone());
    schemas.push("public".into());
    schemas
        .into_iter()
        .map(|schema| TableName::new(&schema, &name))
        .find(|t| live.tables.contains_key(t))
}

/// Reads `plan`'s residue map from the database, and returns the plan with the tables the
/// erasure clears once more after its statement. A map with gaps refuses the plan
/// ([`Map::refusal`]).
pub async fn read(mut plan: Plan, pool: &PgPool) -> Result<(Plan, Map), sqlx::Error> {
    let map = map(&plan, pool).await?;
    plan.facts.refilled = map.refilled.clone();
    Ok((plan, map))
}

impl Map {
    /// Why the worker must not start with this plan: its gaps, if any.
    pub fn refusal(&self) -> Option<super::PlanError> {
        (!self.gaps.is_empty()).then(|| super::PlanError::Residue(self.gaps.clone()))
    }
}

/// For a plan whose steps' tables triggers write to during the erasure (an `AFTER DELETE`
/// trigger that copies the customer row into a history table): the statement that runs after
/// the erasure statement, in its transaction, and clears those tables once more for the
/// customers it erased (their keys as text, [`Value::SubjectIds`]). The trigger fires at the
/// end of the erasure statement, after every step read its snapshot, so the step itself cannot
/// see the copy. It answers how many rows it cleared.
pub fn trailing_statement(plan: &Plan) -> Option<Statement> {
    let steps: Vec<_> = plan
        .steps
        .iter()
        .filter(|s| plan.facts.refilled.contains(&s.table))
        .collect();
    if steps.is_empty() {
        return None;
    }
    let mut params = Params::default();
    let ids = params.typed(Value::SubjectIds, "text[]");
    let subjects = format!(
        "ARRAY(SELECT CAST(k AS {}) FROM unnest({ids}) k)",
        plan.facts.key_type.sql()
    );
    let mut sql = String::from("WITH ");
    let mut counts = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        let condition = reach(plan, &step.paths, "x", 0, &subjects);
        let owner = owner(plan, &step.paths, "x", 0, &subjects);
        let statement = change(
            plan,
            &step.table,
            &step.action,
            None,
            &condition,
            &format!("({owner})::text"),
            Some("1 AS cleared"),
            &mut params,
        );
        if i > 0 {
            sql.push_str(",\n");
        }
        let _ = write!(sql, "refilled_{i} AS (\n  {statement}\n)");
        counts.push(format!("(SELECT count(*) FROM refilled_{i})"));
    }
    let _ = write!(sql, "\nSELECT {}", counts.join(" + "));
    Some(params.finish(sql))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trigger_function_writes_to_the_tables_it_inserts_into_or_updates() {
        let source = "BEGIN
            -- INSERT INTO not_this
            INSERT INTO audit.customers_history (id, email) VALUES (OLD.id, OLD.email);
            UPDATE \"Counts\" c SET n = n + 1;
            UPDATE ONLY stats SET n = 0;
            NEW.updated_at := now();
            RETURN OLD;
        END";
        let (tables, dynamic) = written_tables(source);
        assert_eq!(tables, ["\"Counts\"", "audit.customers_history", "stats"]);
        assert!(!dynamic);
        let (tables, dynamic) =
            written_tables("BEGIN EXECUTE format('INSERT INTO %I VALUES ($1)', TG_ARGV[0]); END");
        assert!(tables.is_empty() && dynamic);
        let (tables, _) = written_tables("BEGIN NEW.last_update = now(); RETURN NEW; END");
        assert!(tables.is_empty());
    }

    #[test]
    fn views_large_objects_and_exemptions_read_from_the_plan() {
        let text = format!(
            "{}\n[[view]]\nname = \"reports.summary\"\nrefresh = true\n\n[[exempt]]\ntable = \"segments\"\nreason = \"names of segments\"\n",
            crate::plan::BUILT_IN.replacen(
                "counted_as = \"orders\"\n",
                "counted_as = \"orders\"\nunlink_large_objects = [\"metadata\"]\n",
                1
            )
        );
        let plan = Plan::parse(&text).unwrap();
        let summary = TableName::new("reports", "summary");
        assert_eq!(
            plan.residue.view(&summary).unwrap().treatment,
            Treatment::Refresh
        );
        let orders = TableName::new("public", "orders");
        assert_eq!(plan.residue.unlinks(&orders), ["metadata"]);
        let segments = TableName::new("public", "segments");
        assert_eq!(
            plan.residue.exempted(&segments, "name"),
            Some("names of segments")
        );
        assert_ne!(plan.hash, Plan::parse(crate::plan::BUILT_IN).unwrap().hash);

        let neither = format!("{}\n[[view]]\nname = \"summary\"\n", crate::plan::BUILT_IN);
        let err = Plan::parse(&neither).unwrap_err().to_string();
        assert!(err.contains("give it refresh = true or exempt"), "{err}");
        let kept = crate::plan::BUILT_IN.replacen(
            "counted_as = \"orders\"\n",
            "counted_as = \"orders\"\nunlink_large_objects = [\"billing_name_oid\"]\n",
            1,
        );
        let err = Plan::parse(&kept).unwrap_err().to_string();
        assert!(err.contains("add billing_name_oid to set_null"), "{err}");
    }

    #[test]
    fn sizes_read_in_words() {
        assert_eq!(bytes(512), "512 bytes");
        assert_eq!(bytes(3 << 20), "3.0 MB");
    }
}
