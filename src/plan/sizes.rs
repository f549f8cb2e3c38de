//! Which customers the erasure statement probes for size.
//!
//! A customer with more than `chunk_threshold` rows in a step's table is erased in chunks, and
//! the statement finds such a customer by probing each step's table past the threshold. For a
//! typical customer that probe walks every one of its rows before the deletes walk them again:
//! a fifth of the statement's work (BENCHMARKS.md). PostgreSQL's statistics already say which
//! customers can be that large: the most common values of each column a step reaches the
//! customer by, with their frequencies, and for any other value at most the frequency of the
//! least common of them (ANALYZE keeps the values it sampled most often). So the statement
//! probes only the customers the statistics put within a factor of [`MARGIN`] of the
//! threshold, and every customer while a table it reads has no statistics, or when the
//! statistics cannot rule out that anyone is that large.
//!
//! Statistics can be stale: a customer who grew past the threshold since the last ANALYZE is
//! then erased in one statement, atomically like every other, in a longer transaction. The
//! worker says so in its log and a metric (`erasure_unprobed_large_total`). Retries, and the
//! requests of a failed batch carried out alone, probe every customer, so a statement that
//! timed out on such a customer is followed by one that erases it in chunks.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use sqlx::PgPool;

use super::{Plan, TableName};

/// A customer is probed when the statistics put it at a quarter of the threshold or more:
/// sampled frequencies are rough, and tables grow between two ANALYZEs.
pub const MARGIN: f64 = 4.0;

/// Which customers (keys as text) the erasure statement probes for size.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Probing {
    /// Every customer: the safe choice, and the one without statistics.
    #[default]
    All,
    /// Only these; none for most batches.
    Only(Arc<[String]>),
}

impl Probing {
    /// Nobody.
    pub fn none() -> Self {
        Probing::Only(Arc::from([]))
    }

    /// The statement's argument: NULL probes every customer, an array those in it.
    pub fn keys(&self) -> Option<Vec<String>> {
        match self {
            Probing::All => None,
            Probing::Only(keys) => Some(keys.to_vec()),
        }
    }
}

/// How many rows of a table belong to each key of a column, as the statistics say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Spread {
    /// Rows of each of the most common keys.
    pub common: HashMap<String, f64>,
    /// The most rows any other key has.
    pub other: f64,
}

impl Spread {
    /// The statistics of one table (or partition): `tuples` rows now, the most common values
    /// and their frequencies, and the number of distinct values (negative: a fraction of the
    /// rows, as PostgreSQL gives it). None when they cannot bound anything.
    pub fn from_statistics(
        tuples: f64,
        common: Vec<(String, f64)>,
        n_distinct: f64,
    ) -> Option<Spread> {
        if tuples <= 0.0 {
            return Some(Spread::default());
        }
        let other = match common.iter().map(|(_, f)| *f).reduce(f64::min) {
            Some(least) => least * tuples,
            None => {
                let distinct = if n_distinct < 0.0 {
                    -n_distinct * tuples
                } else {
                    n_distinct
                };
                if distinct < 1.0 {
                    return None;
                }
                tuples / distinct
            }
        };
        Some(Spread {
            common: common.into_iter().map(|(k, f)| (k, f * tuples)).collect(),
            other,
        })
    }

    /// Rows of `key`.
    pub fn rows(&self, key: &str) -> f64 {
        self.common.get(key).copied().unwrap_or(self.other)
    }

    /// The most rows any key has.
    pub fn most(&self) -> f64 {
        self.common.values().copied().fold(self.other, f64::max)
    }

    /// The partitions of one table together: a key's rows in each, added up.
    pub fn sum(parts: &[Spread]) -> Spread {
        let keys: HashSet<&String> = parts.iter().flat_map(|p| p.common.keys()).collect();
        Spread {
            common: keys
                .into_iter()
                .map(|k| (k.clone(), parts.iter().map(|p| p.rows(k)).sum()))
                .collect(),
            other: parts.iter().map(|p| p.other).sum(),
        }
    }
}

/// One way from a step's rows to the customer: each hop's table and column, the last one
/// holding the customer's key.
pub type Chain = Vec<(TableName, String)>;

/// Every way from the rows of each step's table to the customer, with the paths that end at
/// another step's table carried on through that step's paths.
pub fn chains(plan: &Plan) -> Vec<Vec<Chain>> {
    plan.steps
        .iter()
        .map(|step| chains_from(plan, &step.table, &step.paths, 0))
        .collect()
}

fn chains_from(
    plan: &Plan,
    table: &TableName,
    paths: &[super::PathHops],
    depth: usize,
) -> Vec<Chain> {
    let mut all = Vec::new();
    // The consistency check rules out cycles; the bound keeps a broken plan from recursing.
    if depth > plan.steps.len() {
        return all;
    }
    for path in paths {
        let mut chain: Chain = Vec::new();
        let mut at = table.clone();
        for hop in path {
            chain.push((at.clone(), hop.column.clone()));
            at = hop.table.clone();
        }
        let last = path.last().expect("a path has hops");
        if plan.reaches_subject(last) {
            all.push(chain);
        } else if let Some(next) = plan.step(&last.table) {
            for rest in chains_from(plan, &next.table, &next.paths, depth + 1) {
                all.push(chain.iter().cloned().chain(rest).collect());
            }
        }
    }
    all
}

/// Which customers to probe, given each step's chains and the spread of every column they
/// use (None: a column without statistics).
pub fn probing(
    steps: &[Vec<Chain>],
    spreads: &HashMap<(TableName, String), Option<Spread>>,
    threshold: i64,
) -> Probing {
    let limit = threshold as f64 / MARGIN;
    let mut probed: HashSet<String> = HashSet::new();
    for chains in steps {
        // A customer's rows in the step's table, at most: over each way to reach them, its rows
        // in the last hop's table times the most rows any earlier hop fans out to.
        let mut ways = Vec::new();
        for chain in chains {
            let mut fan_out = 1.0;
            let Some((last, earlier)) = chain.split_last() else {
                continue;
            };
            for hop in earlier {
                match spreads.get(hop) {
                    Some(Some(spread)) => fan_out *= spread.most(),
                    _ => return Probing::All,
                }
            }
            match spreads.get(last) {
                Some(Some(spread)) => ways.push((spread, fan_out)),
                _ => return Probing::All,
            }
        }
        let other: f64 = ways.iter().map(|(s, f)| s.other * f).sum();
        if other >= limit {
            return Probing::All;
        }
        for key in ways.iter().flat_map(|(s, _)| s.common.keys()) {
            let rows: f64 = ways.iter().map(|(s, f)| s.rows(key) * f).sum();
            if rows >= limit {
                probed.insert(key.clone());
            }
        }
    }
    let mut keys: Vec<String> = probed.into_iter().collect();
    keys.sort();
    Probing::Only(keys.into())
}

/// The statistics of `column` in each partition of `table` (the table itself when it has
/// none), scaled to the table's size now: None when a part that holds rows has none.
const SPREAD: &str = "\
WITH parts AS (
  SELECT p FROM unnest(COALESCE(
    (SELECT array_agg(t.relid) FROM pg_partition_tree(CAST($1 AS regclass)) t WHERE t.isleaf),
    ARRAY[CAST($1 AS regclass)])) p
)
SELECT c.reltuples::float8, c.relpages::int8,
       pg_relation_size(c.oid) / current_setting('block_size')::int8 AS pages_now,
       s.most_common_vals::text::text[] AS common, s.most_common_freqs::float8[] AS freqs,
       s.n_distinct::float8
FROM parts JOIN pg_class c ON c.oid = parts.p JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname
    AND s.attname = $2 AND NOT s.inherited";

type SpreadRow = (
    f64,
    i64,
    i64,
    Option<Vec<String>>,
    Option<Vec<f64>>,
    Option<f64>,
);

async fn spread(pool: &PgPool, table: &TableName, column: &str) -> sqlx::Result<Option<Spread>> {
    let rows: Vec<SpreadRow> = sqlx::query_as(SPREAD)
        .bind(table.sql())
        .bind(column)
        .fetch_all(pool)
        .await?;
    let mut parts = Vec::with_capacity(rows.len());
    for (reltuples, relpages, pages_now, common, freqs, n_distinct) in rows {
        if pages_now == 0 {
            parts.push(Spread::default());
            continue;
        }
        // Never analyzed (-1), or analyzed empty and filled since: nothing to go by.
        if reltuples < 0.0 || relpages <= 0 {
            return Ok(None);
        }
        let Some(n_distinct) = n_distinct else {
            return Ok(None);
        };
        // As the planner does: the rows per page ANALYZE saw, times the pages there are now.
        let tuples = reltuples / relpages as f64 * pages_now as f64;
        let common: Vec<(String, f64)> = common
            .unwrap_or_default()
            .into_iter()
            .zip(freqs.unwrap_or_default())
            .collect();
        match Spread::from_statistics(tuples, common, n_distinct) {
            Some(part) => parts.push(part),
            None => return Ok(None),
        }
    }
    Ok(Some(Spread::sum(&parts)))
}

/// Reads the statistics of every column the plan's steps reach the customer by, and says
/// which customers to probe at `threshold`.
pub async fn read(pool: &PgPool, plan: &Plan, threshold: i64) -> sqlx::Result<Probing> {
    let steps = chains(plan);
    let mut spreads = HashMap::new();
    for hop in steps.iter().flatten().flatten() {
        if !spreads.contains_key(hop) {
            let read = spread(pool, &hop.0, &hop.1).await?;
            spreads.insert(hop.clone(), read);
        }
    }
    Ok(probing(&steps, &spreads, threshold))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(name: &str) -> TableName {
        TableName::new("public", name)
    }

    fn spread(common: &[(&str, f64)], other: f64) -> Spread {
        Spread {
            common: common.iter().map(|(k, r)| (k.to_string(), *r)).collect(),
            other,
        }
    }

    #[test]
    fn the_least_common_value_bounds_every_other() {
        let s = Spread::from_statistics(
            1_000_000.0,
            vec![("whale".into(), 0.5), ("c1".into(), 0.001)],
            1000.0,
        )
        .unwrap();
        assert_eq!(s.rows("whale"), 500_000.0);
        assert_eq!(s.rows("c2"), 1000.0);
        assert_eq!(s.most(), 500_000.0);
    }

    #[test]
    fn without_common_values_every_key_has_its_share() {
        let s = Spread::from_statistics(1000.0, vec![], -0.5).unwrap();
        assert_eq!(s.other, 2.0);
        assert_eq!(Spread::from_statistics(1000.0, vec![], 0.0), None);
        assert_eq!(
            Spread::from_statistics(0.0, vec![], 0.0),
            Some(Spread::default())
        );
    }

    #[test]
    fn partitions_add_up() {
        let s = Spread::sum(&[spread(&[("a", 10.0)], 2.0), spread(&[("b", 7.0)], 3.0)]);
        assert_eq!(s.rows("a"), 13.0);
        assert_eq!(s.rows("b"), 9.0);
        assert_eq!(s.other, 5.0);
    }

    #[test]
    fn only_the_customers_near_the_threshold_are_probed() {
        let chains = vec![vec![vec![(t("events"), "customer_id".to_string())]]];
        let spreads = HashMap::from([(
            (t("events"), "customer_id".to_string()),
            Some(spread(&[("whale", 900_000.0), ("heavy", 400.0)], 60.0)),
        )]);
        assert_eq!(
            probing(&chains, &spreads, 20_000),
            Probing::Only(vec!["whale".to_string()].into())
        );
        // A quarter of the threshold is near enough.
        assert_eq!(
            probing(&chains, &spreads, 1_600),
            Probing::Only(vec!["heavy".to_string(), "whale".to_string()].into())
        );
        // Anyone may be that large: everyone is probed.
        assert_eq!(probing(&chains, &spreads, 200), Probing::All);
    }

    #[test]
    fn a_column_without_statistics_probes_everyone() {
        let chains = vec![vec![vec![(t("events"), "customer_id".to_string())]]];
        let spreads = HashMap::from([((t("events"), "customer_id".to_string()), None)]);
        assert_eq!(probing(&chains, &spreads, 20_000), Probing::All);
    }

    #[test]
    fn a_longer_way_multiplies_by_the_fan_out_of_each_hop() {
        // order_events -> orders -> customers: a customer's orders times the most events of
        // any order.
        let chains = vec![vec![vec![
            (t("order_events"), "order_id".to_string()),
            (t("orders"), "customer_id".to_string()),
        ]]];
        let mut spreads = HashMap::from([
            (
                (t("order_events"), "order_id".to_string()),
                Some(spread(&[("o1", 300.0)], 4.0)),
            ),
            (
                (t("orders"), "customer_id".to_string()),
                Some(spread(&[("big", 50.0)], 5.0)),
            ),
        ]);
        assert_eq!(
            probing(&chains, &spreads, 20_000),
            Probing::Only(vec!["big".to_string()].into())
        );
        assert_eq!(
            probing(&chains, &spreads, 100_000),
            Probing::Only([].into())
        );
        spreads.insert((t("orders"), "customer_id".to_string()), None);
        assert_eq!(probing(&chains, &spreads, 100_000), Probing::All);
    }

    #[test]
    fn two_ways_to_one_table_add_up() {
        let chains = vec![vec![
            vec![(t("transfers"), "sender".to_string())],
            vec![(t("transfers"), "receiver".to_string())],
        ]];
        let spreads = HashMap::from([
            (
                (t("transfers"), "sender".to_string()),
                Some(spread(&[("a", 3000.0)], 10.0)),
            ),
            (
                (t("transfers"), "receiver".to_string()),
                Some(spread(&[("a", 2500.0)], 10.0)),
            ),
        ]);
        assert_eq!(
            probing(&chains, &spreads, 20_000),
            Probing::Only(vec!["a".to_string()].into())
        );
    }
}
