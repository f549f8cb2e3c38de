//! The live schema, as the plan sees it: the business's tables in every schema but the
//! worker's and the system's, their columns and types, their single-column unique keys, and
//! their foreign keys. Partitions are folded into their partitioned parent: a step on the
//! parent covers them, and a foreign key declared on each partition counts as one key of the
//! parent. Apart from it, [`read_storage`]: the relations that hold each table's rows, with
//! their indexes and sizes (for `erasure plan`'s warnings about columns without an index).

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use super::{KeyType, TableName, ident};

#[derive(Clone, Debug, Default)]
pub struct LiveSchema {
    /// Tables, partitions left out (they are their parent's).
    pub tables: BTreeMap<TableName, Table>,
    /// Each partition, with the partitioned table at the root of its tree.
    pub partitions: BTreeMap<TableName, TableName>,
    /// Foreign keys between tables, partitions folded into their parents, each once.
    pub foreign_keys: Vec<ForeignKey>,
    /// The user triggers on tables, partitions folded into their parents (a trigger declared
    /// on a partitioned table and cloned onto its partitions is one).
    pub triggers: Vec<Trigger>,
}

/// A user trigger and what its function says.
#[derive(Clone, Debug)]
pub struct Trigger {
    pub table: TableName,
    pub name: String,
    /// `pg_trigger.tgtype`: bit 0 row, 1 before, 2 insert, 3 delete, 4 update, 6 instead.
    pub kind: i16,
    /// The function's source text (PL/pgSQL, SQL...), as `pg_proc.prosrc` has it.
    pub source: String,
}

impl Trigger {
    /// A row trigger that runs before an UPDATE, and so can change the row being written.
    pub fn before_row_update(&self) -> bool {
        self.kind & 1 != 0 && self.kind & 2 != 0 && self.kind & 16 != 0
    }

    /// Whether the function assigns `column` of the row being written (`NEW.column := ...`).
    pub fn assigns(&self, column: &str) -> bool {
        let source = self.source.to_lowercase();
        let column = column.to_lowercase();
        let names = [format!("new.{column}"), format!("new.\"{column}\"")];
        names.iter().any(|name| {
            source.match_indices(name.as_str()).any(|(at, _)| {
                let before = source[..at].chars().next_back();
                let after = source[at + name.len()..].trim_start();
                let word_start = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
                word_start
                    && (after.starts_with(":=")
                        || (after.starts_with('=') && !after.starts_with("==")))
            })
        })
    }
}

#[derive(Clone, Debug, Default)]
pub struct Table {
    pub partitioned: bool,
    pub columns: BTreeMap<String, Column>,
    /// The key of each single-column unique index: a column name, or an expression such as
    /// `lower(email)`, as PostgreSQL writes it.
    pub unique: BTreeSet<String>,
    /// The primary key's column, when it has exactly one.
    pub primary_key: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Column {
    /// As `format_type` writes it: `integer`, `character varying(80)`, `jsonb`, an enum's name.
    pub sql_type: String,
    pub nullable: bool,
    /// Whether an INSERT that leaves it out fills it: a default, an identity, a generated
    /// column.
    pub has_default: bool,
    /// An identity column (`GENERATED ... AS IDENTITY`): an INSERT that gives it a value says
    /// `OVERRIDING SYSTEM VALUE`.
    pub identity: bool,
}

impl Column {
    /// The type without its modifier: `character varying` for `character varying(80)`.
    pub fn base_type(&self) -> &str {
        self.sql_type
            .split('(')
            .next()
            .unwrap_or(&self.sql_type)
            .trim()
    }

    pub fn key_type(&self) -> Option<KeyType> {
        KeyType::of(self.base_type())
    }

    pub fn is_jsonb(&self) -> bool {
        self.base_type() == "jsonb"
    }

    pub fn is_time(&self) -> bool {
        let base = self.base_type();
        base.starts_with("timestamp") || base == "date"
    }
}

impl Table {
    /// Whether `column` alone is unique (`lower(column)` when `folded`).
    pub fn is_unique(&self, column: &str, folded: bool) -> bool {
        let names = [column.to_owned(), ident(column)];
        names.iter().any(|name| {
            if folded {
                self.unique.contains(&format!("lower({name})"))
            } else {
                self.unique.contains(name)
            }
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ForeignKey {
    pub child: TableName,
    pub child_columns: Vec<String>,
    pub parent: TableName,
    pub parent_columns: Vec<String>,
    pub name: String,
    /// What deleting a referenced row does to the referencing ones (`pg_constraint.confdeltype`):
    /// `a` nothing (the delete fails), `r` restrict (fails too), `c` cascade, `n` set null,
    /// `d` set default.
    pub on_delete: String,
}

impl ForeignKey {
    /// Whether deleting a row this key references fails while a row still references it.
    pub fn blocks_delete(&self) -> bool {
        matches!(self.on_delete.as_str(), "a" | "r")
    }
}

/// A relation that holds rows of a table (the table itself, or one of its leaf partitions),
/// with what says whether finding rows by a column scans it: its indexes and its size.
#[derive(Clone, Debug)]
pub struct Storage {
    pub relation: TableName,
    /// The planner's estimate of its rows (`pg_class.reltuples`); `None` before the first
    /// ANALYZE (or VACUUM) of it.
    pub rows: Option<f64>,
    /// The leading key of each of its indexes that can find rows by equality on it: valid,
    /// btree, without a predicate. As PostgreSQL writes it: a column (`customer_id`,
    /// `"Order"`) or an expression (`lower(email)`).
    pub index_keys: BTreeSet<String>,
}

impl Storage {
    /// Whether an index finds rows by `column` (by `lower(column)` when `folded`).
    pub fn indexed(&self, column: &str, folded: bool) -> bool {
        [column.to_owned(), ident(column)].iter().any(|name| {
            if folded {
                self.index_keys.contains(&format!("lower({name})"))
            } else {
                self.index_keys.contains(name)
            }
        })
    }
}

/// For each table (partitions folded into their parent, as in [`LiveSchema`]), the relations
/// that hold its rows: the table itself, or each leaf partition (a partitioned table holds
/// none; an index on it is one on each partition, and an index one partition lacks is missing
/// there only).
pub async fn read_storage(pool: &PgPool) -> Result<BTreeMap<TableName, Vec<Storage>>, sqlx::Error> {
    let rows: Vec<StorageRow> = sqlx::query_as(&format!(
        "SELECT n.nspname::text AS schema, c.relname::text AS name, \
                rn.nspname::text AS root_schema, r.relname::text AS root_name, \
                c.reltuples::float8 AS rows, \
                array(SELECT pg_get_indexdef(i.indexrelid, 1, true) FROM pg_index i \
                      JOIN pg_class ic ON ic.oid = i.indexrelid JOIN pg_am am ON am.oid = ic.relam \
                      WHERE i.indrelid = c.oid AND i.indisvalid AND i.indpred IS NULL \
                        AND am.amname = 'btree') AS index_keys \
         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_class r ON c.relispartition AND r.oid = pg_partition_root(c.oid) \
         LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace \
         WHERE c.relkind = 'r' AND {} \
         ORDER BY 1, 2",
        user_schemas("n.nspname")
    ))
    .fetch_all(pool)
    .await?;
    let mut storage: BTreeMap<TableName, Vec<Storage>> = BTreeMap::new();
    for row in rows {
        let relation = TableName::new(&row.schema, &row.name);
        let table = match (row.root_schema, row.root_name) {
            (Some(schema), Some(name)) => TableName::new(&schema, &name),
            _ => relation.clone(),
        };
        storage.entry(table).or_default().push(Storage {
            relation,
            // -1 until the relation is first analyzed or vacuumed.
            rows: (row.rows >= 0.0).then_some(row.rows),
            index_keys: row.index_keys.into_iter().collect(),
        });
    }
    Ok(storage)
}

#[derive(sqlx::FromRow)]
struct StorageRow {
    schema: String,
    name: String,
    root_schema: Option<String>,
    root_name: Option<String>,
    rows: f64,
    index_keys: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct RelationRow {
    schema: String,
    name: String,
    kind: String,
    root_schema: Option<String>,
    root_name: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ColumnRow {
    schema: String,
    table: String,
    column: String,
    sql_type: String,
    nullable: bool,
    has_default: bool,
    identity: bool,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    name: String,
    child_schema: String,
    child: String,
    child_columns: Vec<String>,
    parent_schema: String,
    parent: String,
    parent_columns: Vec<String>,
    on_delete: String,
}

/// A relation's table, or its partition tree's root: `root_of('c')` names the table the plan
/// sees for relation `c`.
fn root_of(relation: &str) -> String {
    format!("COALESCE(pg_partition_root({relation}), {relation})")
}

fn user_schemas(namespace: &str) -> String {
    format!(
        "{namespace} NOT IN ('pg_catalog', 'information_schema', 'erasure') AND {namespace} NOT LIKE 'pg\\_%'"
    )
}

impl LiveSchema {
    pub async fn read(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let mut live = LiveSchema::default();
        let tables: Vec<RelationRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text AS schema, c.relname::text AS name, c.relkind::text AS kind, \
                   rn.nspname::text AS root_schema, r.relname::text AS root_name \
                 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                 LEFT JOIN pg_class r ON c.relispartition AND r.oid = pg_partition_root(c.oid) \
                 LEFT JOIN pg_namespace rn ON rn.oid = r.relnamespace \
                 WHERE c.relkind IN ('r', 'p') AND {}",
            user_schemas("n.nspname")
        ))
        .fetch_all(pool)
        .await?;
        for RelationRow {
            schema,
            name,
            kind,
            root_schema,
            root_name,
        } in tables
        {
            let table = TableName::new(&schema, &name);
            match (root_schema, root_name) {
                (Some(rs), Some(rn)) => {
                    live.partitions.insert(table, TableName::new(&rs, &rn));
                }
                _ => {
                    live.tables.insert(
                        table,
                        Table {
                            partitioned: kind == "p",
                            ..Table::default()
                        },
                    );
                }
            }
        }

        let columns: Vec<ColumnRow> = sqlx::query_as(&format!(
            "SELECT n.nspname::text AS schema, c.relname::text AS table, a.attname::text AS column, \
                    format_type(a.atttypid, a.atttypmod) AS sql_type, NOT a.attnotnull AS nullable, \
                    a.atthasdef OR a.attidentity <> '' OR a.attgenerated <> '' AS has_default, \
                    a.attidentity <> '' AS identity \
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p') \
               AND NOT c.relispartition AND {}",
            user_schemas("n.nspname")
        ))
        .fetch_all(pool)
        .await?;
        for row in columns {
            if let Some(t) = live
                .tables
                .get_mut(&TableName::new(&row.schema, &row.table))
            {
                t.columns.insert(
                    row.column,
                    Column {
                        sql_type: row.sql_type,
                        nullable: row.nullable,
                        has_default: row.has_default,
                        identity: row.identity,
                    },
                );
            }
        }

        let unique: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, pg_get_indexdef(i.indexrelid, 1, true) \
             FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL \
               AND NOT c.relispartition AND {}",
            user_schemas("n.nspname")
        ))
        .fetch_all(pool)
        .await?;
        for (schema, table, key) in unique {
            if let Some(t) = live.tables.get_mut(&TableName::new(&schema, &table)) {
                t.unique.insert(key);
            }
        }

        let primary: Vec<(String, String, String)> = sqlx::query_as(&format!(
            "SELECT n.nspname::text, c.relname::text, a.attname::text \
             FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1] \
             WHERE con.contype = 'p' AND cardinality(con.conkey) = 1 AND NOT c.relispartition AND {}",
            user_schemas("n.nspname")
        ))
        .fetch_all(pool)
        .await?;
        for (schema, table, column) in primary {
            if let Some(t) = live.tables.get_mut(&TableName::new(&schema, &table)) {
                t.primary_key = Some(column);
            }
        }

        let keys: Vec<KeyRow> = sqlx::query_as(&format!(
                "SELECT con.conname::text AS name, cn.nspname::text AS child_schema, cl.relname::text AS child, \
                   array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i) \
                         JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n ORDER BY k.i) AS child_columns, \
                   pn.nspname::text AS parent_schema, pcl.relname::text AS parent, \
                   array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i) \
                         JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n ORDER BY k.i) AS parent_columns, \
                   con.confdeltype::text AS on_delete \
                 FROM pg_constraint con \
                 JOIN pg_class cl ON cl.oid = {child} JOIN pg_namespace cn ON cn.oid = cl.relnamespace \
                 JOIN pg_class pcl ON pcl.oid = {parent} JOIN pg_namespace pn ON pn.oid = pcl.relnamespace \
                 WHERE con.contype = 'f' AND {schemas} \
                 ORDER BY 2, 3, 1",
                child = root_of("con.conrelid"),
                parent = root_of("con.confrelid"),
                schemas = user_schemas("cn.nspname"),
            ))
            .fetch_all(pool)
            .await?;
        let mut seen = BTreeSet::new();
        for row in keys {
            let key = ForeignKey {
                child: TableName::new(&row.child_schema, &row.child),
                child_columns: row.child_columns,
                parent: TableName::new(&row.parent_schema, &row.parent),
                parent_columns: row.parent_columns,
                name: row.name,
                on_delete: row.on_delete,
            };
            // One key declared on each partition (or cloned onto them) is one key here.
            let folded = (
                key.child.clone(),
                key.child_columns.clone(),
                key.parent.clone(),
                key.parent_columns.clone(),
            );
            if seen.insert(folded) {
                live.foreign_keys.push(key);
            }
        }
        let triggers: Vec<(String, String, String, i16, String)> = sqlx::query_as(&format!(
            "SELECT rn.nspname::text, r.relname::text, t.tgname::text, t.tgtype, p.prosrc \
             FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid \
             JOIN pg_class r ON r.oid = {root} JOIN pg_namespace rn ON rn.oid = r.relnamespace \
             WHERE NOT t.tgisinternal AND t.tgparentid = 0 AND {schemas} \
             ORDER BY 1, 2, 3",
            root = root_of("t.tgrelid"),
            schemas = user_schemas("rn.nspname"),
        ))
        .fetch_all(pool)
        .await?;
        live.triggers = triggers
            .into_iter()
            .map(|(schema, table, name, kind, source)| Trigger {
                table: TableName::new(&schema, &table),
                name,
                kind,
                source,
            })
            .collect();
        Ok(live)
    }

    pub fn column(&self, table: &TableName, column: &str) -> Option<&Column> {
        self.tables.get(table)?.columns.get(column)
    }

    /// The foreign keys into `parent`.
    pub fn referencing(&self, parent: &TableName) -> impl Iterator<Item = &ForeignKey> {
        self.foreign_keys
            .iter()
            .filter(move |k| &k.parent == parent)
    }
}
