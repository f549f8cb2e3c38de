//! The pieces every statement shares: which rows of a table a plan's paths reach from a set of
//! customers, how an identifier names a customer, and how a row's personal columns are cleared.

use super::{Params, Value};
use crate::identity::Identity;
use crate::plan::{
    Action, Anonymize, Hop, Lookup, LookupType, PathHops, Plan, Referenced, Step, TableName, ident,
};

/// The condition on `alias` (a row of a table with `paths`) that it belongs to one of the
/// customers whose keys the array `subjects` holds (`ARRAY(SELECT subject_key FROM go)`, or one
/// customer's `ARRAY[t.subject_key]`): any path leads there. Each hop compares a column with
/// the key it references, as they are: no cast, so the column's index serves.
///
/// Each hop is `column = ANY (array)`: the keys it may hold are computed once, and the column is
/// matched against them by its index, also when several paths are OR-ed (an OR of
/// `IN (subquery)` conditions is not turned into joins, and falls back to scanning the table).
pub fn reach(plan: &Plan, paths: &[PathHops], alias: &str, depth: usize, subjects: &str) -> String {
    reach_anchored(plan, paths, alias, depth, subjects, &[])
}

/// A table's rows known by key: a hop into `table` by `key` reaches one of the customers also
/// when the column holds one of the keys of the array `keys` (the rows an erasure kept, whose
/// own link to the customer it may have cleared).
pub struct Anchor {
    pub table: crate::plan::TableName,
    pub key: String,
    pub keys: String,
}

/// [`reach`], where a hop into an anchored table also reaches the customer through the
/// anchor's keys.
pub fn reach_anchored(
    plan: &Plan,
    paths: &[PathHops],
    alias: &str,
    depth: usize,
    subjects: &str,
    anchors: &[Anchor],
) -> String {
    let conditions: Vec<String> = paths
        .iter()
        .map(|path| hops_anchored(plan, path, alias, depth, subjects, anchors))
        .collect();
    match conditions.len() {
        1 => conditions.into_iter().next().expect("one"),
        _ => format!("({})", conditions.join(" OR ")),
    }
}

/// The condition that row `alias` reaches one of `subjects` along `path`.
pub fn hops(plan: &Plan, path: &[Hop], alias: &str, depth: usize, subjects: &str) -> String {
    hops_anchored(plan, path, alias, depth, subjects, &[])
}

fn hops_anchored(
    plan: &Plan,
    path: &[Hop],
    alias: &str,
    depth: usize,
    subjects: &str,
    anchors: &[Anchor],
) -> String {
    let (hop, rest) = path.split_first().expect("a path has hops");
    let column = format!("{alias}.{}", ident(&hop.column));
    let parent = format!("p{depth}");
    if rest.is_empty() && plan.reaches_subject(hop) {
        let direct = format!("{column} = ANY ({subjects})");
        return match hop.also.is_empty() {
            true => direct,
            // The key alone finds the customers; the other columns must match theirs too.
            false => format!(
                "{direct} AND {} IN (SELECT {} FROM {table} {parent} WHERE {parent}.{key} = ANY ({subjects}))",
                row_of(alias, &hop.columns()),
                list_of(&parent, &hop.keys()),
                table = hop.table.sql(),
                key = ident(&hop.key),
            ),
        };
    }
    let mut inner = match rest.is_empty() {
        true => {
            let step = step_of(plan, hop);
            match step.tree() {
                Some(tree) => format!(
                    "{parent}.{} IN ({})",
                    ident(&tree.key),
                    tree_keys(plan, step, tree, depth + 1, subjects, anchors)
                ),
                None => reach_anchored(plan, &step.paths, &parent, depth + 1, subjects, anchors),
            }
        }
        false => hops_anchored(plan, rest, &parent, depth + 1, subjects, anchors),
    };
    // A row of another subject's, reached through the customer's, is not the customer's: nor
    // is anything reached through it.
    if let Some(step) = plan.step(&hop.table)
        && step.may_reach_others()
    {
        let others = owned_by_others(plan, step, &parent, depth + 1, subjects);
        inner = format!("{inner} AND NOT {others}");
    }
    let through = match hop.also.is_empty() {
        true => format!(
            "{column} = ANY (ARRAY(SELECT {parent}.{key} FROM {table} {parent} WHERE {inner}))",
            key = ident(&hop.key),
            table = hop.table.sql(),
        ),
        false => format!(
            "{} IN (SELECT {} FROM {table} {parent} WHERE {inner})",
            row_of(alias, &hop.columns()),
            list_of(&parent, &hop.keys()),
            table = hop.table.sql(),
        ),
    };
    match anchors
        .iter()
        .find(|a| a.table == hop.table && a.key == hop.key)
    {
        Some(anchor) => format!("({column} = ANY ({}) OR {through})", anchor.keys),
        None => through,
    }
}

/// The condition that row `alias` of `step`'s table belongs to one of the customers of the
/// array `subjects`: a path leads there, and no other live subject owns it.
pub fn mine(plan: &Plan, step: &Step, alias: &str, subjects: &str) -> String {
    let reached = reach(plan, &step.paths, alias, 0, subjects);
    match step.may_reach_others() {
        true => format!(
            "{reached} AND NOT {}",
            owned_by_others(plan, step, alias, 0, subjects)
        ),
        false => reached,
    }
}

/// The condition on `alias` (a row of `step`'s table) that a subject other than the customers
/// of the array `subjects` owns it: one of the step's owning paths (those not marked
/// `only_when_unowned`) leads to a subject row that exists, is not one of them, and (where the
/// plan keeps subject rows) has not been erased. Such a row is never erased with the customer.
pub fn owned_by_others(
    plan: &Plan,
    step: &Step,
    alias: &str,
    depth: usize,
    subjects: &str,
) -> String {
    let ways: Vec<String> = step
        .paths
        .iter()
        .filter(|path| path.owns)
        .map(|path| others_along(plan, path, alias, depth, subjects))
        .collect();
    match ways.len() {
        0 => "false".into(),
        1 => ways.into_iter().next().expect("one"),
        _ => format!("({})", ways.join(" OR ")),
    }
}

/// Whether `path` leads row `alias` to a live subject not among `subjects`.
fn others_along(plan: &Plan, path: &[Hop], alias: &str, depth: usize, subjects: &str) -> String {
    let (hop, rest) = path.split_first().expect("a path has hops");
    let parent = format!("o{depth}");
    let inner = if rest.is_empty() && plan.reaches_subject(hop) {
        let key = format!("{parent}.{}", ident(&plan.subject.key));
        let mut live = format!("NOT ({key} = ANY ({subjects}))");
        if matches!(plan.subject.action, Action::Anonymize(_)) {
            let erased = crate::deletion::statement::erased_subject(&format!("{key}::text"));
            live = format!("{live} AND NOT {erased}");
        }
        live
    } else if rest.is_empty() {
        owned_by_others(plan, step_of(plan, hop), &parent, depth + 1, subjects)
    } else {
        others_along(plan, rest, &parent, depth + 1, subjects)
    };
    format!(
        "EXISTS (SELECT 1 FROM {table} {parent} WHERE {on} AND {inner})",
        on = joined(hop, &parent, alias),
        table = hop.table.sql(),
    )
}

/// `(a.x, a.y)`: a row of the columns of `alias`, to compare with a subquery's.
fn row_of(alias: &str, columns: &[&str]) -> String {
    format!("({})", list_of(alias, columns))
}

/// `a.x, a.y`.
fn list_of(alias: &str, columns: &[&str]) -> String {
    columns
        .iter()
        .map(|c| format!("{alias}.{}", ident(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `p.x = a.x AND p.y = a.y` for each pair of the hop: the row `parent` that row `alias`
/// references by it.
fn joined(hop: &Hop, parent: &str, alias: &str) -> String {
    hop.pairs()
        .map(|(c, k)| format!("{parent}.{} = {alias}.{}", ident(k), ident(c)))
        .collect::<Vec<_>>()
        .join(" AND ")
}

/// The keys (`tree`'s key column) of the rows of a step with a tree that the customers of
/// `subjects` own: those its other paths reach, and every row under one of them, however deep,
/// that nobody else owns (a recursive query; `UNION` ends it on a cycle in the data too).
fn tree_keys(
    plan: &Plan,
    step: &Step,
    tree: &Hop,
    depth: usize,
    subjects: &str,
    anchors: &[Anchor],
) -> String {
    let roots: Vec<PathHops> = step.roots().cloned().collect();
    let row = format!("r{depth}");
    let name = format!("tree{depth}");
    let others = format!(
        "NOT {}",
        owned_by_others(plan, step, &row, depth + 1, subjects)
    );
    format!(
        "WITH RECURSIVE {name}(k) AS (\n      \
         SELECT {row}.{key} FROM {table} {row} WHERE {roots} AND {others}\n      \
         UNION\n      \
         SELECT {row}.{key} FROM {table} {row} JOIN {name} ON {row}.{column} = {name}.k WHERE {others}\n    \
         ) SELECT k FROM {name}",
        key = ident(&tree.key),
        column = ident(&tree.column),
        table = step.table.sql(),
        roots = reach_anchored(plan, &roots, &row, depth + 1, subjects, anchors),
    )
}

fn step_of<'a>(plan: &'a Plan, hop: &Hop) -> &'a crate::plan::Step {
    plan.step(&hop.table)
        .expect("the plan's consistency check: a path ends at the subject or a step")
}

/// The key of the customer row `alias` (of a table with `paths`) belongs to, among the
/// customers of the array `subjects`: the row's own column for a path of one hop, else the
/// keys followed upwards, hop by hop, from the row (by each parent's key, an index lookup).
/// Read in the statement's snapshot, so a parent anonymized or deleted by the same statement
/// still leads to its customer.
pub fn owner(plan: &Plan, paths: &[PathHops], alias: &str, depth: usize, subjects: &str) -> String {
    if let [path] = paths {
        return walk(plan, path, alias, depth, subjects);
    }
    let walks: Vec<String> = paths
        .iter()
        .map(|path| {
            format!(
                "(SELECT k FROM (SELECT {}) w(k) WHERE k = ANY ({subjects}))",
                walk(plan, path, alias, depth, subjects)
            )
        })
        .collect();
    format!("COALESCE({})", walks.join(", "))
}

fn walk(plan: &Plan, path: &[Hop], alias: &str, depth: usize, subjects: &str) -> String {
    let (hop, rest) = path.split_first().expect("a path has hops");
    let column = format!("{alias}.{}", ident(&hop.column));
    if rest.is_empty() && plan.reaches_subject(hop) {
        return column;
    }
    let parent = format!("w{depth}");
    let inner = match rest.is_empty() {
        true => {
            let step = step_of(plan, hop);
            match step.tree() {
                Some(tree) => tree_owner(plan, step, tree, &parent, depth + 1, subjects),
                None => owner(plan, &step.paths, &parent, depth + 1, subjects),
            }
        }
        false => walk(plan, rest, &parent, depth + 1, subjects),
    };
    format!(
        "(SELECT {inner} FROM {table} {parent} WHERE {on})",
        on = joined(hop, &parent, alias),
        table = hop.table.sql(),
    )
}

/// The customer among `subjects` that row `alias` of a step with a tree belongs to: that of
/// the nearest row, from it upwards through its parents, that the step's other paths lead to
/// one of them. Climbs at most 10,000 levels (a cycle in the data ends there).
fn tree_owner(
    plan: &Plan,
    step: &Step,
    tree: &Hop,
    alias: &str,
    depth: usize,
    subjects: &str,
) -> String {
    let roots: Vec<PathHops> = step.roots().cloned().collect();
    let (up, row, top) = (
        format!("up{depth}"),
        format!("u{depth}"),
        format!("a{depth}"),
    );
    format!(
        "(SELECT q.o FROM (WITH RECURSIVE {up}(k, n) AS (\n      \
         SELECT {alias}.{key}, 0\n      \
         UNION ALL\n      \
         SELECT {row}.{column}, {up}.n + 1 FROM {table} {row} JOIN {up} ON {row}.{key} = {up}.k \
         WHERE {row}.{column} IS NOT NULL AND {up}.n < 10000\n    \
         ) SELECT {owner} AS o, {up}.n FROM {up} JOIN {table} {top} ON {top}.{key} = {up}.k) q \
         WHERE q.o = ANY ({subjects}) ORDER BY q.n LIMIT 1)",
        key = ident(&tree.key),
        column = ident(&tree.column),
        table = step.table.sql(),
        owner = owner(plan, &roots, &top, depth + 1, subjects),
    )
}

/// Whether the action changes a column some path starts from (so that an `UPDATE`'s
/// `RETURNING`, which sees the new row, can no longer follow it to the customer).
pub fn clears_a_path(action: &Action, paths: &[PathHops]) -> bool {
    match action {
        Action::Delete => false,
        Action::Anonymize(a) => paths
            .iter()
            .any(|path| a.columns().any(|c| c == path[0].column)),
    }
}

/// The customers an identifier names (by the rule of [`crate::identity`]), as a subquery of
/// one row: `key`, the key (as text) of the one customer it names, or NULL; and `ambiguous`,
/// whether it matches the lookups of more than one. `customer`, `key` and `kind` are the SQL of
/// the identifier, its reading as the key's type, and its type (`key`, a lookup's column, or
/// NULL). Locks nothing.
///
/// With `pads` (the parameters of the keyed hash's pads), an identifier that names one live
/// customer by a lookup value that an erased customer also had is ambiguous too (see
/// [`erased_elsewhere`]).
pub fn subject_by_identifier(
    plan: &Plan,
    customer: &str,
    key: &str,
    kind: &str,
    pads: Option<(&str, &str)>,
) -> String {
    let subject = &plan.subject;
    let elsewhere = match pads {
        Some(pads) => format!(
            " OR (count(DISTINCT m.k) = 1 AND {})",
            erased_elsewhere(plan, customer, key, kind, "min(m.k)", pads)
        ),
        None => String::new(),
    };
    format!(
        "(SELECT CASE WHEN count(DISTINCT m.k) = 1 THEN min(m.k) END AS key, (count(DISTINCT m.k) > 1{elsewhere}) AS ambiguous \
         FROM (SELECT s.{key_column}::text AS k FROM {table} s WHERE {matches}) m)",
        key_column = ident(&subject.key),
        table = subject.table.sql(),
        matches = subject_matches(plan, "s", customer, key, kind),
    )
}

/// The condition that an identifier which names the live customer whose key (as text) is
/// `subject_id` by a lookup value (not by its key) also names, by a lookup value, a customer a
/// DONE deletion erased: then it names two customers, and is refused. `pads` are the
/// parameters of the keyed hash's pads, with which the identifier's hashes are computed here,
/// as the deletions keep them ([`crate::identity`]).
pub fn erased_elsewhere(
    plan: &Plan,
    customer: &str,
    key: &str,
    kind: &str,
    subject_id: &str,
    pads: (&str, &str),
) -> String {
    let subject = &plan.subject;
    if subject.lookups.is_empty() {
        return "false".into();
    }
    let digests: Vec<String> = subject
        .lookups
        .iter()
        .map(|lookup| {
            format!(
                "CASE WHEN {kind} IS NULL OR {kind} = '{}' THEN {} END",
                lookup.column.replace('\'', "''"),
                Identity::lookup_digest_sql(
                    lookup,
                    &format!("({})::text", lookup_value(lookup, customer)),
                    pads.0,
                    pads.1
                )
            )
        })
        .collect();
    format!(
        "(({kind} IS NULL OR {kind} <> 'key') \
         AND NOT EXISTS (SELECT 1 FROM {table} x WHERE x.{key_column} = {key} AND ({kind} IS NULL OR {kind} = 'key')) \
         AND EXISTS (SELECT 1 FROM erasure.deletions e WHERE e.status = 'DONE' AND e.lookup_digests && ARRAY[{digests}]::bytea[] \
           AND e.related_object_id IS DISTINCT FROM {subject_id}))",
        table = subject.table.sql(),
        key_column = ident(&subject.key),
        digests = digests.join(", "),
    )
}

/// Whether row `alias` of the subject table is a customer the identifier names, by the rule of
/// [`crate::identity`]: its key (when the identifier's type allows it); or else, only when no
/// customer has that key and none ever had it (no deletion recorded it), any lookup the type
/// allows, each compared as the plan declares. Several customers may match by their lookups:
/// the caller refuses such an identifier.
pub fn subject_matches(plan: &Plan, alias: &str, customer: &str, key: &str, kind: &str) -> String {
    let subject = &plan.subject;
    let table = subject.table.sql();
    let key_column = ident(&subject.key);
    let allows = |word: &str| {
        format!(
            "({kind} IS NULL OR {kind} = '{}')",
            word.replace('\'', "''")
        )
    };
    let mut ways = vec![format!(
        "({} AND {alias}.{key_column} = {key})",
        allows("key")
    )];
    // Lookups are consulted for an identifier of no type only when it is not and never was a
    // key: after its customer is erased, a key must not start naming someone else.
    let never_a_key = format!(
        "({kind} IS NOT NULL OR (NOT EXISTS (SELECT 1 FROM {table} m WHERE m.{key_column} = {key}) AND NOT {}))",
        crate::deletion::statement::was_key(&format!("({key})::text"))
    );
    for lookup in &subject.lookups {
        ways.push(format!(
            "({} AND {} AND {never_a_key})",
            allows(&lookup.column),
            lookup_matches(lookup, alias, customer)
        ));
    }
    format!("({})", ways.join(" OR "))
}

fn lookup_matches(lookup: &Lookup, alias: &str, customer: &str) -> String {
    let column = format!("{alias}.{}", ident(&lookup.column));
    if lookup.case_insensitive {
        format!("lower({column}) = lower({customer})")
    } else {
        format!("{column} = {}", lookup_value(lookup, customer))
    }
}

/// The identifier `customer` (SQL text) read as a value of the lookup's column type, or NULL
/// when it does not read as one (so it matches nothing). The tests run before any cast, in
/// nested `CASE`s, so that a value that is not a number is never cast, even when PostgreSQL
/// folds a bound value as a constant; the same reading as [`LookupType::normalize`].
fn lookup_value(lookup: &Lookup, customer: &str) -> String {
    let integer = |digits: u32, low: &str, high: &str, sql_type: &str| {
        format!(
            "(CASE WHEN {customer} ~ '^[+-]?[0-9]{{1,{digits}}}$' THEN CASE WHEN ({customer})::numeric BETWEEN {low} AND {high} THEN ({customer})::{sql_type} END END)"
        )
    };
    match &lookup.value_type {
        LookupType::Text => customer.to_owned(),
        LookupType::Citext(sql_type) => format!("CAST({customer} AS {sql_type})"),
        LookupType::Integer => integer(10, "-2147483648", "2147483647", "integer"),
        LookupType::Bigint => integer(19, "-9223372036854775808", "9223372036854775807", "bigint"),
        LookupType::Uuid => format!(
            "(CASE WHEN {customer} ~ '^[0-9a-fA-F]{{8}}(-?[0-9a-fA-F]{{4}}){{3}}-?[0-9a-fA-F]{{12}}$' THEN ({customer})::uuid END)"
        ),
    }
}

/// The keyed hashes of the subject's lookup values, as columns `lookup_hash_0`, ... of row
/// `alias` (each with a leading comma): tagged with their lookup and, for lookups compared in
/// any case, folded to lower case ([`crate::identity::Identity::lookup_digest_sql`]). The
/// values themselves go no further.
pub fn lookup_hash_columns(plan: &Plan, alias: &str, params: &mut Params) -> String {
    if plan.subject.lookups.is_empty() {
        return String::new();
    }
    let inner = params.of(Value::InnerPad, "bytea");
    let outer = params.of(Value::OuterPad, "bytea");
    plan.subject
        .lookups
        .iter()
        .enumerate()
        .map(|(i, lookup)| {
            let column = format!("{alias}.{}::text", ident(&lookup.column));
            format!(
                ", {} AS lookup_hash_{i}",
                Identity::lookup_digest_sql(lookup, &column, &inner, &outer)
            )
        })
        .collect()
}

/// All the lookup hashes of row `alias` (which has [`lookup_hash_columns`]), as a `bytea[]`
/// without NULLs: what deletions keep as `lookup_digests`.
pub fn lookup_hashes(plan: &Plan, alias: &str) -> String {
    let count = plan.subject.lookups.len();
    if count == 0 {
        return "NULL::bytea[]".into();
    }
    let all: Vec<String> = (0..count)
        .map(|i| format!("{alias}.lookup_hash_{i}"))
        .collect();
    format!("array_remove(ARRAY[{}], NULL)", all.join(", "))
}

/// The SET list and the "anything to clear" condition of an anonymizing action on row
/// `alias` of `table`. `subject_id` is the SQL of the customer's key as text, for values
/// written with `{key}`. Only rows with something left to clear are updated, so a row already
/// anonymized is neither written again nor counted again.
pub fn anonymize(
    plan: &Plan,
    table: &TableName,
    a: &Anonymize,
    alias: &str,
    subject_id: &str,
    params: &mut Params,
) -> (String, String) {
    let mut sets = Vec::new();
    let mut changes = Vec::new();
    let unlinks = plan.residue.unlinks(table);
    for column in &a.set_null {
        let null = match unlinks.contains(column) {
            true => unlinked(alias, column),
            false => "NULL".into(),
        };
        sets.push(format!("{} = {null}", ident(column)));
        changes.push(format!("{alias}.{} IS NOT NULL", ident(column)));
    }
    for (column, value) in &a.set_value {
        let p = params.typed(Value::Text(value.clone()), "text");
        let text = if value.contains("{key}") {
            format!("replace({p}, '{{key}}', {subject_id})")
        } else {
            p
        };
        let sql_type = plan
            .facts
            .column_types
            .get(&(table.clone(), column.clone()))
            .map_or("text", String::as_str);
        let cast = format!("CAST({text} AS {sql_type})");
        changes.push(format!("{alias}.{} IS DISTINCT FROM {cast}", ident(column)));
        sets.push(format!("{} = {cast}", ident(column)));
    }
    // A key with dots is a path into nested objects (`contact.email`): removed with `#-`, and
    // still there while the path leads to something.
    for (column, keys) in &a.remove_keys {
        let c = ident(column);
        let (top, nested): (Vec<&String>, Vec<&String>) =
            keys.iter().partition(|k| !k.contains('.'));
        let mut value = c.clone();
        if !top.is_empty() {
            let p = params.typed(
                Value::TextList(top.into_iter().cloned().collect()),
                "text[]",
            );
            value = format!("({value} - {p})");
            changes.push(format!("{alias}.{c} ?| {p}"));
        }
        for key in nested {
            let path = key.split('.').map(str::to_owned).collect();
            let p = params.typed(Value::TextList(path), "text[]");
            value = format!("({value} #- {p})");
            changes.push(format!("{alias}.{c} #> {p} IS NOT NULL"));
        }
        sets.push(format!("{c} = {value}"));
    }
    for column in &a.set_now {
        sets.push(format!("{} = now()", ident(column)));
    }
    if changes.is_empty() {
        // Only stamped (nothing personal to clear): a row is done once stamped.
        changes = a
            .set_now
            .iter()
            .map(|column| format!("{alias}.{} IS NULL", ident(column)))
            .collect();
    }
    let changes = if changes.is_empty() {
        "true".to_string()
    } else {
        format!("({})", changes.join(" OR "))
    };
    (sets.join(", "), changes)
}

/// The SQL that unlinks the large object the column `column` of row `alias` points at (a
/// step's `unlink_large_objects`), and is NULL: the value an anonymizing action sets, or a
/// `RETURNING` item of a delete.
pub fn unlinked(alias: &str, column: &str) -> String {
    format!("erasure.unlink_large_object({alias}.{})", ident(column))
}

/// The `RETURNING` items that unlink the large objects of a deleted row `alias` of `table`.
fn unlinked_on_delete(plan: &Plan, table: &TableName, alias: &str) -> Vec<String> {
    plan.residue
        .unlinks(table)
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{} AS unlinked_{i}", unlinked(alias, c)))
        .collect()
}

/// `DELETE` or `UPDATE` of the rows of `table` (aliased `x`) that `condition` selects, joined
/// with `from` when given (`USING` or `FROM`), returning `returning` when given. With
/// [`Params::counting`], the `SELECT` of what it would return instead.
#[allow(clippy::too_many_arguments)]
pub fn change(
    plan: &Plan,
    table: &TableName,
    action: &Action,
    from: Option<&str>,
    condition: &str,
    subject_id: &str,
    returning: Option<&str>,
    params: &mut Params,
) -> String {
    if params.is_counting() {
        // The rows the change would return, read, not changed (nor their large objects
        // unlinked).
        let from = from.map_or(String::new(), |f| format!(", {f}"));
        let columns = returning.unwrap_or("1");
        let condition = match action {
            Action::Delete => condition.to_owned(),
            Action::Anonymize(a) => {
                let (_, changes) = anonymize(plan, table, a, "x", subject_id, params);
                format!("{condition} AND {changes}")
            }
        };
        return format!(
            "SELECT {columns} FROM {} x{from} WHERE {condition}",
            table.sql()
        );
    }
    let mut returning: Vec<String> = returning.into_iter().map(str::to_owned).collect();
    if let Action::Delete = action {
        // The large objects the deleted rows point at go with them.
        returning.extend(unlinked_on_delete(plan, table, "x"));
    }
    let returning = match returning.is_empty() {
        true => String::new(),
        false => format!(" RETURNING {}", returning.join(", ")),
    };
    match action {
        Action::Delete => {
            let using = from.map_or(String::new(), |f| format!(" USING {f}"));
            format!(
                "DELETE FROM {} x{using} WHERE {condition}{returning}",
                table.sql()
            )
        }
        Action::Anonymize(a) => {
            let (sets, changes) = anonymize(plan, table, a, "x", subject_id, params);
            let from = from.map_or(String::new(), |f| format!(" FROM {f}"));
            format!(
                "UPDATE {} x SET {sets}{from} WHERE {condition} AND {changes}{returning}",
                table.sql()
            )
        }
    }
}

/// Whether anything alive uses row `alias` of a referenced table: a row of any table whose
/// foreign key points at it, but a subject row of a customer erased (where the plan keeps
/// subject rows). With `erasing` (the array of the customers a statement erases now), neither
/// those customers' rows nor the rows that statement deletes, or anonymizes clearing that very
/// column, count either.
pub fn used(plan: &Plan, r: &Referenced, alias: &str, erasing: Option<&str>) -> String {
    let subject = &plan.subject;
    let mut references = plan
        .facts
        .references
        .get(&r.table)
        .cloned()
        .unwrap_or_default();
    if !references.contains(&(subject.table.clone(), r.from.clone())) {
        references.push((subject.table.clone(), r.from.clone()));
    }
    let uses: Vec<String> = references
        .iter()
        .map(|(table, column)| {
            let mut gone = Vec::new();
            if table == &subject.table {
                let key = format!("o.{}", ident(&subject.key));
                if let Some(erasing) = erasing {
                    gone.push(format!("{key} = ANY ({erasing})"));
                }
                // A kept row's own link is no use of the row it points at once its customer
                // is erased.
                if let Action::Anonymize(_) = subject.action {
                    gone.push(crate::deletion::statement::erased_subject(&format!(
                        "{key}::text"
                    )));
                }
            } else if let (Some(erasing), Some(step)) = (erasing, plan.step(table)) {
                let let_go = match &step.action {
                    Action::Delete => true,
                    Action::Anonymize(a) => a.set_null.contains(column),
                };
                if let_go {
                    gone.push(reach(plan, &step.paths, "o", 0, erasing));
                }
            }
            let stays = match gone.is_empty() {
                true => String::new(),
                false => format!(" AND NOT ({})", gone.join(" OR ")),
            };
            format!(
                "EXISTS (SELECT 1 FROM {} o WHERE o.{} = {alias}.{}{stays})",
                table.sql(),
                ident(column),
                ident(&r.key),
            )
        })
        .collect();
    format!("({})", uses.join(" OR "))
}
