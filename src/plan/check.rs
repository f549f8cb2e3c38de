//! Checks a plan against the live schema. Every gap is reported, by name, at once: a missing
//! table or column, a column to null that is NOT NULL, a lookup that is not unique, and every
//! foreign key that reaches a table the plan deletes from without a step (or a `[[keep]]`)
//! covering it. A worker with gaps does not start.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::PgPool;

use super::{Action, Plan, PlanError};

#[derive(Debug)]
struct Column {
    data_type: String,
    nullable: bool,
}

/// A foreign key, as `pg_constraint` has it.
#[derive(Debug, sqlx::FromRow)]
struct ForeignKey {
    name: String,
    child_schema: String,
    child: String,
    child_columns: Vec<String>,
    parent_schema: String,
    parent: String,
    parent_columns: Vec<String>,
}

const FOREIGN_KEYS: &str = r#"
SELECT con.conname::text AS name,
       cn.nspname::text AS child_schema, cl.relname::text AS child,
       array(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n
             ORDER BY k.i) AS child_columns,
       pn.nspname::text AS parent_schema, pcl.relname::text AS parent,
       array(SELECT a.attname::text FROM unnest(con.confkey) WITH ORDINALITY k(n, i)
             JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.n
             ORDER BY k.i) AS parent_columns
FROM pg_constraint con
JOIN pg_class cl ON cl.oid = con.conrelid
JOIN pg_namespace cn ON cn.oid = cl.relnamespace
JOIN pg_class pcl ON pcl.oid = con.confrelid
JOIN pg_namespace pn ON pn.oid = pcl.relnamespace
WHERE con.contype = 'f' AND pn.nspname = $1
ORDER BY cn.nspname, cl.relname, con.conname
"#;

/// Single-column unique indexes (primary keys included) of the plan's schema.
const UNIQUE_COLUMNS: &str = r#"
SELECT c.relname::text, a.attname::text
FROM pg_index i
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
WHERE n.nspname = $1 AND i.indisunique AND i.indnkeyatts = 1 AND i.indpred IS NULL
"#;

/// Checks `plan` against the database behind `pool`.
pub async fn against_live_schema(plan: &Plan, pool: &PgPool) -> Result<(), PlanError> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_nullable::text \
         FROM information_schema.columns WHERE table_schema = $1",
    )
    .bind(&plan.schema)
    .fetch_all(pool)
    .await?;
    let mut tables: BTreeMap<String, BTreeMap<String, Column>> = BTreeMap::new();
    for (table, column, data_type, nullable) in rows {
        tables.entry(table).or_default().insert(
            column,
            Column {
                data_type,
                nullable: nullable == "YES",
            },
        );
    }
    let foreign_keys: Vec<ForeignKey> = sqlx::query_as(FOREIGN_KEYS)
        .bind(&plan.schema)
        .fetch_all(pool)
        .await?;
    let unique: BTreeSet<(String, String)> = sqlx::query_as(UNIQUE_COLUMNS)
        .bind(&plan.schema)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();

    let gaps = find_gaps(plan, &tables, &foreign_keys, &unique);
    if gaps.is_empty() {
        Ok(())
    } else {
        Err(PlanError::Gaps(gaps))
    }
}

fn find_gaps(
    plan: &Plan,
    tables: &BTreeMap<String, BTreeMap<String, Column>>,
    foreign_keys: &[ForeignKey],
    unique: &BTreeSet<(String, String)>,
) -> Vec<String> {
    let schema = &plan.schema;
    let mut gaps = Vec::new();
    let column = |table: &str, name: &str, role: &str, gaps: &mut Vec<String>| -> bool {
        match tables.get(table) {
            None => {
                gaps.push(format!("table {schema}.{table} does not exist ({role})"));
                false
            }
            Some(columns) if !columns.contains_key(name) => {
                gaps.push(format!(
                    "column {schema}.{table}.{name} does not exist ({role})"
                ));
                false
            }
            Some(_) => true,
        }
    };

    let subject = &plan.subject;
    let mut subject_columns = vec![(&subject.key, "subject key")];
    if let Some(lookup) = &subject.lookup {
        subject_columns.push((lookup, "subject lookup"));
    }
    for (name, role) in subject_columns {
        if column(&subject.table, name, role, &mut gaps) {
            let data_type = &tables[&subject.table][name].data_type;
            if !matches!(
                data_type.as_str(),
                "text" | "character varying" | "character"
            ) {
                gaps.push(format!(
                    "column {schema}.{}.{name} is {data_type}; a {role} must be text",
                    subject.table
                ));
            }
            if !unique.contains(&(subject.table.clone(), name.clone())) {
                gaps.push(format!(
                    "column {schema}.{}.{name} has no unique index of its own; a {role} must name one row",
                    subject.table
                ));
            }
        }
    }

    for guard in &plan.guards {
        let role = format!("guard {}", guard.name);
        column(&guard.table, &guard.column, &role, &mut gaps);
        column(&guard.table, &guard.when.column, &role, &mut gaps);
    }

    for step in &plan.steps {
        let role = format!("step {}", step.table);
        column(&step.table, &step.column, &role, &mut gaps);
        if let Some(through) = &step.through {
            column(&through.table, &through.key, &role, &mut gaps);
        }
        for name in step.set_null.iter().chain(&step.set_now) {
            if column(&step.table, name, &role, &mut gaps)
                && step.set_null.contains(name)
                && !tables[&step.table][name].nullable
            {
                gaps.push(format!(
                    "column {schema}.{}.{name} is NOT NULL and cannot be set to null ({role})",
                    step.table
                ));
            }
        }
    }

    // Foreign keys into tables the plan deletes from: each needs a step that reaches the
    // subject through exactly that key, or a [[keep]].
    let deleted = plan.deleted_tables();
    for fk in foreign_keys {
        if !deleted.contains(fk.parent.as_str()) {
            continue;
        }
        let step = (fk.child_schema == *schema)
            .then(|| plan.step(&fk.child))
            .flatten();
        let covering = step.filter(|step| {
            fk.child_columns == [step.column.clone()]
                && match &step.through {
                    None => {
                        fk.parent == subject.table && fk.parent_columns == [subject.key.clone()]
                    }
                    Some(t) => fk.parent == t.table && fk.parent_columns == [t.key.clone()],
                }
        });
        let kept = fk.child_schema == *schema && plan.keeps.iter().any(|k| k.table == fk.child);
        match covering {
            Some(step) => {
                // Rows kept by anonymize must let go of the deleted row, or its delete fails.
                if step.action == Action::Anonymize && !step.set_null.contains(&step.column) {
                    gaps.push(format!(
                        "step {} anonymizes but keeps {} pointing at {}.{} (foreign key {}); add it to set_null",
                        step.table, step.column, fk.parent_schema, fk.parent, fk.name
                    ));
                }
            }
            None if kept => {}
            None => gaps.push(format!(
                "table {}.{} references {}.{} ({} -> {}, foreign key {}) and no step covers it; \
                 add a [[step]] for table {:?} (or a [[keep]] with the reason it stays)",
                fk.child_schema,
                fk.child,
                fk.parent_schema,
                fk.parent,
                fk.child_columns.join(", "),
                fk.parent_columns.join(", "),
                fk.name,
                fk.child
            )),
        }
    }
    gaps
}
