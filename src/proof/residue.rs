//! The honest receipt: what a DONE erasure left behind, and what the service cleared of it.
//!
//! Once a DONE deletion's check after commit has run, it is queued here
//! ([`crate::deletion::residue`]); the recorder takes the queue in batches, in the background,
//! reads the residue map of the plan's tables ([`crate::plan::residue`]) and the server's
//! state, and records for each deletion one `residue` section, which the deletion object and
//! its receipt carry. Each class of copy has a state:
//!
//! - `cleared` (and when): the large objects its rows pointed at (unlinked by the erasure
//!   statement), the copies triggers made during it (cleared in its transaction);
//! - `remains_until` a date: the WAL and its archive (commit time plus `proof.wal_retention`),
//!   backups (plus `proof.backup_retention`);
//! - `remains`, with the condition in its note: freed page space (until reused or the table is
//!   rewritten), the planner's statistics (until the table's next ANALYZE), materialized views
//!   not yet refreshed, change streams and replicas as found;
//! - `unknown`: a retention the operator has not set (never a guess);
//! - `not_covered`: a copy the plan leaves on purpose or only the operator can remove (an exempt
//!   view, a publication that sends no deletes, the server's log when the worker's sessions
//!   cannot silence it);
//! - `none`: no such copy was found.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::{ProofSettings, Retention};
use crate::deletion::millis;
use crate::deletion::residue::{self as records, Unrecorded};
use crate::exhaust::Logging;
use crate::plan::residue::{Map, Treatment};
use crate::plan::{Plan, TableName};

/// The most deletions recorded in one batch.
pub const BATCH: i64 = 1024;

/// What the recorder cleared, for the deletions of one batch.
#[derive(Clone, Debug, Default)]
pub struct Cleared {
    /// Materialized views refreshed, with when.
    pub views: BTreeMap<TableName, DateTime<Utc>>,
    /// The latest ANALYZE of each of the plan's tables (the recorder's or autovacuum's).
    pub analyzed: BTreeMap<TableName, DateTime<Utc>>,
}

/// Records what each checked DONE deletion left behind, after clearing what it can.
#[derive(Clone)]
pub struct Recorder {
    pool: PgPool,
    plan: Arc<Plan>,
    wal_retention: Option<Retention>,
    backup_retention: Option<Retention>,
    logging: Arc<Logging>,
    /// A listed view is refreshed at most this often.
    refresh_every: Duration,
    /// A table is analyzed once erasures recorded since its last ANALYZE here changed this
    /// many of its rows; 0: never.
    analyze_after_rows: i64,
    state: Arc<std::sync::Mutex<State>>,
}

/// What this process cleared so far.
#[derive(Debug, Default)]
struct State {
    /// When each listed view's last refresh began.
    refreshed: BTreeMap<TableName, DateTime<Utc>>,
    /// Rows changed in each table by the erasures recorded since its last ANALYZE here.
    changed_rows: BTreeMap<TableName, i64>,
}

/// One class of copy, as the residue section says it.
fn class(
    state: &str,
    until: Option<DateTime<Utc>>,
    cleared_at: Option<DateTime<Utc>>,
    note: &str,
    objects: Vec<String>,
) -> Value {
    json!({
        "state": state,
        "until": until.map(millis),
        "cleared_at": cleared_at.map(millis),
        "note": note,
        "objects": objects,
    })
}

impl Recorder {
    /// A recorder for `plan` (its facts filled by the live-schema check), with the operator's
    /// retentions and what the server's logging makes of the worker's sessions.
    pub fn new(pool: PgPool, plan: &Plan, proof: &ProofSettings, logging: Logging) -> Self {
        Self {
            pool,
            plan: Arc::new(plan.clone()),
            wal_retention: proof.wal_retention,
            backup_retention: proof.backup_retention,
            logging: Arc::new(logging),
            refresh_every: Duration::from_millis(proof.refresh_views_every_ms),
            analyze_after_rows: proof.analyze_after_rows,
            state: Arc::default(),
        }
    }

    /// Records up to `limit` queued deletions, oldest first. First it clears what it can
    /// for them, once for the batch: it refreshes the views the plan lists (at most every
    /// `proof.refresh_views_every_ms`; a deletion whose views have not been refreshed since
    /// its commit waits for the next refresh), and analyzes the tables large erasures changed.
    /// Returns what it recorded.
    pub async fn record_queued(&self, limit: i64) -> Result<Vec<(String, Value)>, sqlx::Error> {
        let queued = {
            let mut conn = self.pool.acquire().await?;
            records::unrecorded(&mut conn, limit).await?
        };
        if queued.is_empty() {
            return Ok(Vec::new());
        }
        let map = crate::plan::residue::map(&self.plan, &self.pool).await?;
        let committed = |q: &Unrecorded| q.completed_at.unwrap_or(DateTime::<Utc>::MIN_UTC);
        let oldest = queued.iter().map(committed).min().unwrap_or_else(Utc::now);
        let failed = self.refresh_views(&map, oldest).await;
        let refreshed = self
            .state
            .lock()
            .expect("no panic holds it")
            .refreshed
            .clone();
        let listed: Vec<&TableName> = map
            .views
            .iter()
            .filter(|v| v.treatment == Some(Treatment::Refresh))
            .map(|v| &v.name)
            .collect();
        let ready: Vec<&Unrecorded> = queued
            .iter()
            .filter(|q| {
                listed.iter().all(|v| {
                    failed.contains(*v) || refreshed.get(*v).is_some_and(|at| *at >= committed(q))
                })
            })
            .collect();
        if ready.is_empty() {
            return Ok(Vec::new());
        }
        self.analyze_changed(&ready).await;
        let cleared = Cleared {
            views: refreshed,
            analyzed: last_analyzed(&self.pool, &map.touched).await?,
        };
        let recorded_at = Utc::now();
        let made: Vec<(String, Value)> = ready
            .iter()
            .map(|q| {
                (
                    q.deletion_id.clone(),
                    self.record(q, &map, &cleared, recorded_at),
                )
            })
            .collect();
        let rows: Vec<(&str, Value)> = made
            .iter()
            .map(|(id, record)| (id.as_str(), record.clone()))
            .collect();
        let mut conn = self.pool.acquire().await?;
        records::record(&mut conn, &rows).await?;
        Ok(made)
    }

    /// Refreshes each view the plan lists that was not refreshed since `since` (the oldest
    /// queued commit), unless it was refreshed less than `refresh_every` ago: `CONCURRENTLY`
    /// where it has a unique index (readers go on; the old rows stay in its freed pages, as a
    /// table's do), else whole (readers wait; its old file goes). A view never populated holds
    /// nothing and is left so. Returns the views whose refresh failed (logged), for which no
    /// deletion waits.
    async fn refresh_views(
        &self,
        map: &Map,
        since: DateTime<Utc>,
    ) -> std::collections::BTreeSet<TableName> {
        let mut failed = std::collections::BTreeSet::new();
        for view in map
            .views
            .iter()
            .filter(|v| v.treatment == Some(Treatment::Refresh))
        {
            let last = self
                .state
                .lock()
                .expect("no panic holds it")
                .refreshed
                .get(&view.name)
                .copied();
            let now = Utc::now();
            let due = last.is_none_or(|at| {
                at < since && (now - at).to_std().unwrap_or_default() >= self.refresh_every
            });
            if !due {
                continue;
            }
            let populated: bool = match sqlx::query_scalar(
                "SELECT c.relispopulated FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname = $1 AND c.relname = $2",
            )
            .bind(&view.name.schema)
            .bind(&view.name.name)
            .fetch_optional(&self.pool)
            .await
            {
                Ok(populated) => populated.unwrap_or(false),
                Err(e) => {
                    tracing::warn!(view = %view.name, error = %crate::db::SafeError(&e), "could not read a materialized view's state");
                    failed.insert(view.name.clone());
                    continue;
                }
            };
            let started = Utc::now();
            if populated {
                let how = if view.concurrently {
                    "CONCURRENTLY "
                } else {
                    ""
                };
                let refreshed = sqlx::query(&format!(
                    "REFRESH MATERIALIZED VIEW {how}{}",
                    view.name.sql()
                ))
                .execute(&self.pool)
                .await;
                if let Err(e) = refreshed {
                    tracing::warn!(view = %view.name, error = %crate::db::SafeError(&e), "could not refresh a materialized view the plan lists (it needs the view's ownership); the erasures' residue says it remains");
                    failed.insert(view.name.clone());
                    continue;
                }
                tracing::info!(view = %view.name, concurrently = view.concurrently, "refreshed a materialized view after erasures");
            }
            self.state
                .lock()
                .expect("no panic holds it")
                .refreshed
                .insert(view.name.clone(), started);
        }
        failed
    }

    /// Adds the rows `ready` changed to each table's count, and analyzes the tables past
    /// `analyze_after_rows`: the deleted tables whole, the anonymized ones' cleared columns.
    /// An ANALYZE the role may not run is skipped by the server with a warning of its own.
    async fn analyze_changed(&self, ready: &[&Unrecorded]) {
        if self.analyze_after_rows <= 0 {
            return;
        }
        let due: Vec<TableName> = {
            let mut state = self.state.lock().expect("no panic holds it");
            for q in ready {
                for (table, n) in self.changed_rows(q.data_json.as_ref()) {
                    *state.changed_rows.entry(table).or_default() += n;
                }
            }
            let due: Vec<TableName> = state
                .changed_rows
                .iter()
                .filter(|(_, n)| **n >= self.analyze_after_rows)
                .map(|(t, _)| t.clone())
                .collect();
            for table in &due {
                state.changed_rows.remove(table);
            }
            due
        };
        for table in due {
            let columns = match self.action_of(&table) {
                Some(crate::plan::Action::Anonymize(a)) => {
                    let cleared: Vec<String> = a.cleared().map(crate::plan::ident).collect();
                    format!(" ({})", cleared.join(", "))
                }
                _ => String::new(),
            };
            match sqlx::query(&format!("ANALYZE {}{columns}", table.sql()))
                .execute(&self.pool)
                .await
            {
                Ok(_) => tracing::info!(table = %table, "analyzed a table after large erasures"),
                Err(e) => {
                    tracing::warn!(table = %table, error = %crate::db::SafeError(&e), "could not analyze a table after large erasures")
                }
            }
        }
    }

    /// What the plan does to `table`'s rows.
    fn action_of(&self, table: &TableName) -> Option<&crate::plan::Action> {
        let plan = &self.plan;
        if &plan.subject.table == table {
            return Some(&plan.subject.action);
        }
        plan.step(table).map(|s| &s.action).or_else(|| {
            plan.referenced
                .iter()
                .find(|r| &r.table == table)
                .map(|r| &r.action)
        })
    }

    /// The rows `counts` says the erasure changed, by table.
    fn changed_rows(&self, counts: Option<&Value>) -> BTreeMap<TableName, i64> {
        let plan = &self.plan;
        let n = |key: &str| {
            counts
                .and_then(|c| c.get(key))
                .and_then(Value::as_i64)
                .unwrap_or(0)
        };
        let mut rows: BTreeMap<TableName, i64> = BTreeMap::new();
        for step in &plan.steps {
            *rows.entry(step.table.clone()).or_default() += n(&step.counted_as)
                + if step.may_reach_others() {
                    n(&step.others_as)
                } else {
                    0
                };
        }
        for r in &plan.referenced {
            *rows.entry(r.table.clone()).or_default() += n(&r.counted_as);
        }
        *rows.entry(plan.subject.table.clone()).or_default() += n(&plan.subject.counted_as);
        rows.retain(|_, n| *n > 0);
        rows
    }

    /// The tables of the plan's steps, referenced rows and subject whose rows `counts` says
    /// the erasure changed.
    fn changed_tables(&self, counts: Option<&Value>) -> Vec<TableName> {
        self.changed_rows(counts).into_keys().collect()
    }

    /// The residue section of one deletion, from the map and what was cleared.
    pub fn record(
        &self,
        q: &Unrecorded,
        map: &Map,
        cleared: &Cleared,
        recorded_at: DateTime<Utc>,
    ) -> Value {
        let committed = q.completed_at.unwrap_or(recorded_at);
        let changed = self.changed_tables(q.data_json.as_ref());
        let names = |tables: &[TableName]| tables.iter().map(ToString::to_string).collect();
        let mut classes = serde_json::Map::new();

        let held: Vec<String> = map
            .slots
            .iter()
            .map(|s| match s.held_bytes {
                Some(b) => format!("slot {} holds {}", s.name, crate::plan::residue::bytes(b)),
                None => format!("slot {}", s.name),
            })
            .collect();
        let retained = |retention: Option<Retention>, setting: &str, what: &str, extra: &str| {
            match retention {
                Some(r) => class(
                    "remains_until",
                    Some(committed + r.chrono()),
                    None,
                    &format!(
                        "{what} until the commit time plus {setting} ({}){extra}",
                        words(r)
                    ),
                    Vec::new(),
                ),
                None => class(
                    "unknown",
                    None,
                    None,
                    &format!(
                        "{what}; {setting} is not set, so for how long is not known here{extra}"
                    ),
                    Vec::new(),
                ),
            }
        };
        let slots_note = match held.is_empty() {
            true => String::new(),
            false => format!(
                "; a replication slot keeps WAL longer, until its consumer confirms it ({})",
                held.join(", ")
            ),
        };
        classes.insert(
            "wal".into(),
            retained(
                self.wal_retention,
                "proof.wal_retention",
                "the WAL and its archive hold the erased rows' bytes (their old versions, and whole pages written after each checkpoint)",
                &slots_note,
            ),
        );
        classes.insert(
            "backups".into(),
            retained(
                self.backup_retention,
                "proof.backup_retention",
                "backups taken before the erasure hold the customer as it was (restore them with the ledger replay)",
                "",
            ),
        );
        classes.insert(
            "page_space".into(),
            class(
                "remains",
                None,
                None,
                "the freed space in these tables' pages and their index entries keeps the erased bytes until it is reused or the table is rewritten (VACUUM FULL, CLUSTER); VACUUM only marks it free; last rewrite: unknown",
                names(&changed),
            ),
        );

        // Materialized views built from the plan's tables.
        let views = if map.views.is_empty() {
            class(
                "none",
                None,
                None,
                "no materialized view is built from the plan's tables",
                Vec::new(),
            )
        } else {
            let exempt: Vec<String> = map
                .views
                .iter()
                .filter_map(|v| match &v.treatment {
                    Some(Treatment::Exempt(reason)) => Some(format!("{} ({reason})", v.name)),
                    Some(Treatment::Refresh) => None,
                    None => Some(format!("{} (not in the plan)", v.name)),
                })
                .collect();
            let refreshed: Vec<DateTime<Utc>> = map
                .views
                .iter()
                .filter(|v| v.treatment == Some(Treatment::Refresh))
                .filter_map(|v| cleared.views.get(&v.name).copied())
                .filter(|at| *at >= committed)
                .collect();
            let to_refresh: Vec<String> = map
                .views
                .iter()
                .filter(|v| v.treatment == Some(Treatment::Refresh))
                .filter(|v| cleared.views.get(&v.name).is_none_or(|at| *at < committed))
                .map(|v| v.name.to_string())
                .collect();
            if !exempt.is_empty() {
                class(
                    "not_covered",
                    None,
                    None,
                    "these views keep the erased customer until someone refreshes them",
                    exempt,
                )
            } else if !to_refresh.is_empty() {
                class(
                    "remains",
                    None,
                    None,
                    "these views keep the erased customer until they are refreshed",
                    to_refresh,
                )
            } else {
                class(
                    "cleared",
                    None,
                    refreshed.into_iter().max(),
                    "refreshed after the erasure (CONCURRENTLY leaves the old rows in the view's freed pages, as a DELETE does in a table's)",
                    map.views.iter().map(|v| v.name.to_string()).collect(),
                )
            }
        };
        classes.insert("materialized_views".into(), views);

        // The planner's statistics of the tables the erasure changed.
        let stale: Vec<TableName> = changed
            .iter()
            .filter(|t| cleared.analyzed.get(*t).is_none_or(|at| *at < committed))
            .cloned()
            .collect();
        let statistics = if stale.is_empty() {
            class(
                "cleared",
                None,
                changed
                    .iter()
                    .filter_map(|t| cleared.analyzed.get(t).copied())
                    .max(),
                "each table the erasure changed was analyzed after it",
                names(&changed),
            )
        } else {
            class(
                "remains",
                None,
                None,
                "the planner's statistics (pg_statistic) may hold erased values among a column's most common values or histogram bounds until the table's next ANALYZE",
                names(&stale),
            )
        };
        classes.insert("statistics".into(), statistics);

        let large: Vec<String> = map
            .large_objects
            .iter()
            .map(|(t, c, _)| format!("{t}.{c}"))
            .collect();
        let large_objects = if map.large_objects.is_empty() {
            class(
                "none",
                None,
                None,
                "no column of the plan's tables holds large objects",
                Vec::new(),
            )
        } else if map.large_objects.iter().all(|(_, _, covered)| *covered) {
            class(
                "cleared",
                None,
                Some(committed),
                "the erasure statement unlinked the large objects its rows pointed at (pg_largeobject's freed pages keep the bytes as any table's do)",
                large,
            )
        } else {
            class(
                "not_covered",
                None,
                None,
                "large objects these columns point at stay in pg_largeobject",
                map.large_objects
                    .iter()
                    .filter(|(_, _, covered)| !covered)
                    .map(|(t, c, _)| format!("{t}.{c}"))
                    .collect(),
            )
        };
        classes.insert("large_objects".into(), large_objects);

        let copies = if map.trigger_copies.is_empty() {
            class(
                "none",
                None,
                None,
                "no trigger copies what the erasure changes",
                Vec::new(),
            )
        } else {
            let left: Vec<String> = map
                .trigger_copies
                .iter()
                .filter(|(_, _, _, covered)| !covered)
                .map(|(name, on, into, _)| format!("{into} (trigger {name} on {on})"))
                .collect();
            match left.is_empty() {
                true => class(
                    "cleared",
                    None,
                    Some(committed),
                    "the copies triggers made during the erasure were cleared in its transaction",
                    map.trigger_copies
                        .iter()
                        .map(|(name, on, into, _)| format!("{into} (trigger {name} on {on})"))
                        .collect(),
                ),
                false => class(
                    "not_covered",
                    None,
                    None,
                    "these tables keep the copies triggers make, on purpose",
                    left,
                ),
            }
        };
        classes.insert("trigger_copies".into(), copies);

        // Change streams: publications of the plan's tables, logical slots.
        let logical: Vec<&crate::plan::residue::Slot> =
            map.slots.iter().filter(|s| s.logical).collect();
        let mut streams: Vec<String> = Vec::new();
        let mut uncovered: Vec<String> = Vec::new();
        for p in &map.publications {
            let tables: Vec<String> = p.tables.iter().map(ToString::to_string).collect();
            let line = format!("publication {} ({})", p.name, tables.join(", "));
            if p.deletes && p.updates {
                streams.push(line);
            } else {
                uncovered.push(format!("{line}, without deletes or updates"));
            }
        }
        for s in &logical {
            streams.push(format!(
                "logical slot {} ({}{})",
                s.name,
                s.plugin.as_deref().unwrap_or("no plugin"),
                s.held_bytes.map_or(String::new(), |b| format!(
                    ", {} behind",
                    crate::plan::residue::bytes(b)
                ))
            ));
        }
        if !streams.is_empty() || !uncovered.is_empty() {
            for t in &map.replica_full {
                uncovered.push(format!(
                    "{t} has REPLICA IDENTITY FULL: the stream carried the whole erased row"
                ));
            }
        }
        let change_streams = if !uncovered.is_empty() {
            uncovered.extend(streams);
            class(
                "not_covered",
                None,
                None,
                "what the change streams sent on stays with their consumers, out of the service's reach",
                uncovered,
            )
        } else if !streams.is_empty() {
            class(
                "remains",
                None,
                None,
                "the erasure went out as deletes and updates to these streams' consumers, which keep what a DELETE leaves as this server does; a slot holds the WAL until its consumer confirms it",
                streams,
            )
        } else {
            class(
                "none",
                None,
                None,
                "no publication of the plan's tables, and no logical slot in this database",
                Vec::new(),
            )
        };
        classes.insert("change_streams".into(), change_streams);

        let mut replicas: Vec<String> = map
            .replicas
            .iter()
            .map(|r| {
                format!(
                    "replica {} ({}{})",
                    r.name,
                    r.state.as_deref().unwrap_or("state unknown"),
                    r.replay_lag_bytes.map_or(String::new(), |b| format!(
                        ", {} not replayed",
                        crate::plan::residue::bytes(b)
                    ))
                )
            })
            .collect();
        replicas.extend(
            map.slots
                .iter()
                .filter(|s| !s.logical)
                .map(|s| format!("physical slot {}", s.name)),
        );
        classes.insert(
            "replicas".into(),
            match replicas.is_empty() {
                true => class(
                    "none",
                    None,
                    None,
                    "no replica was connected to this server when it was recorded (replicas of replicas are not seen from here)",
                    Vec::new(),
                ),
                false => class(
                    "remains",
                    None,
                    None,
                    "each replica applies the erasure and keeps what a DELETE leaves, as this server does",
                    replicas,
                ),
            },
        );

        let leaks = self.logging.leaks();
        classes.insert(
            "server_log".into(),
            match leaks.is_empty() {
                true => class(
                    "none",
                    None,
                    None,
                    "the worker's sessions keep what they erase out of the server's log",
                    Vec::new(),
                ),
                false => class(
                    "not_covered",
                    None,
                    None,
                    "the server's log may hold what the erasure named, for as long as the logs are kept",
                    leaks.into_iter().map(|l| l.what).collect(),
                ),
            },
        );

        json!({
            "recorded_at": millis(recorded_at),
            "committed_at": millis(committed),
            "classes": Value::Object(classes),
        })
    }

    /// Records a batch of the queue every `every` until `shutdown`.
    pub async fn run(self, every: Duration, shutdown: CancellationToken) {
        loop {
            if let Err(e) = self.record_queued(BATCH).await {
                tracing::warn!(error = %crate::db::SafeError(&e), "the residue of erasures could not be recorded; retrying");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }
}

/// A retention in words: "7d".
fn words(r: Retention) -> String {
    let secs = r.0.as_secs();
    for (unit, n) in [("w", 604_800), ("d", 86_400), ("h", 3600), ("m", 60)] {
        if secs >= n && secs.is_multiple_of(n) {
            return format!("{}{unit}", secs / n);
        }
    }
    format!("{secs}s")
}

/// The latest ANALYZE (by hand or by autovacuum) of each of `tables`, where the server
/// recorded one.
async fn last_analyzed(
    pool: &PgPool,
    tables: &[TableName],
) -> Result<BTreeMap<TableName, DateTime<Utc>>, sqlx::Error> {
    let (schemas, names): (Vec<String>, Vec<String>) = tables
        .iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .unzip();
    let rows: Vec<(String, String, Option<DateTime<Utc>>)> = sqlx::query_as(
        "SELECT s.schemaname::text, s.relname::text, \
                GREATEST(s.last_analyze, s.last_autoanalyze) \
         FROM pg_stat_user_tables s \
         JOIN unnest($1::text[], $2::text[]) AS u(s, n) ON u.s = s.schemaname AND u.n = s.relname",
    )
    .bind(&schemas)
    .bind(&names)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(s, n, at)| Some((TableName::new(&s, &n), at?)))
        .collect())
}
