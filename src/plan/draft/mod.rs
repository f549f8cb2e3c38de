//! `erasure plan --draft`: a starting plan, read from the live schema outwards from the subject
//! table. Every table that reaches the subject by foreign keys (partitions folded into their
//! parent) gets a step that deletes its rows, with a path for each of its keys into the subject
//! or into another step's table, so that the coverage check passes as drafted. Where a choice
//! is the business's own, a comment says so:
//! - the columns of each table that look like personal data ([`personal`]), and the anonymizing
//!   action that would clear them if its rows must be kept;
//! - a table that looks like an accounting record: keep it anonymized instead of deleting it;
//!   where its key to a row the erasure deletes cannot be null, keep that row too, or repoint
//!   the key at a placeholder row ([`placeholder`]);
//! - a row the subject references (an address): a commented `[[referenced]]` to take up;
//! - lookups a request may name the customer by: an e-mail column, proposed when a unique index
//!   makes it one (the index to create when none does), and the subject's other unique columns;
//! - keys a step cannot cover (several columns, or a table referencing itself).

mod personal;
mod placeholder;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;

use super::live::{Column, ForeignKey, LiveSchema, Table};
use super::names::{sql_name, sql_table};
use super::{KeyType, TableName};

/// Words in a table's name that suggest records a law may require to be kept.
const ACCOUNTING: &[&str] = &[
    "invoice",
    "payment",
    "order",
    "transaction",
    "ledger",
    "receipt",
    "billing",
    "tax",
    "refund",
    "account",
];

/// A value of `column`'s type that says nothing of anyone, as the plan's `set_value` or a SQL
/// literal writes it: `text` for strings, `{}` for json, zero, false, the epoch, the nil uuid,
/// `0.0.0.0`. `None` for other types (an enum's labels are the business's).
fn blank(column: &Column, text: &'static str) -> Option<&'static str> {
    match column.base_type() {
        "text" | "character varying" | "character" | "citext" => Some(text),
        "json" | "jsonb" => Some("{}"),
        "smallint" | "integer" | "bigint" | "numeric" | "real" | "double precision" => Some("0"),
        "boolean" => Some("false"),
        "date" => Some("1970-01-01"),
        base if base.starts_with("timestamp") => Some("1970-01-01 00:00:00+00"),
        "uuid" => Some("00000000-0000-0000-0000-000000000000"),
        "inet" | "cidr" => Some("0.0.0.0"),
        _ => None,
    }
}

/// Whether a column named `name` looks like an e-mail address.
fn looks_like_email(name: &str) -> bool {
    let name = name.to_lowercase();
    name.contains("email") || name.contains("e_mail") || name == "mail"
}

/// The subject's lookups: an e-mail column a unique index makes one is proposed (in any case
/// when the index is on `lower(column)`); one without such an index, with the index it needs;
/// and every unique text column, commented, for the operator to choose from.
fn lookups(subject: &TableName, table: &Table, key: &str) -> String {
    let text = |c: &Column| c.key_type() == Some(KeyType::Text);
    let mut out = String::new();
    let mut proposed = Vec::new();
    let mut candidates = Vec::new();
    for (name, column) in &table.columns {
        if name == key || !text(column) {
            continue;
        }
        let lookup = if table.is_unique(name, true) {
            format!("{{ column = {name:?}, case_insensitive = true }}")
        } else if table.is_unique(name, false) {
            format!("{{ column = {name:?} }}")
        } else {
            if looks_like_email(name) {
                let _ = writeln!(
                    out,
                    "# {name} looks like an e-mail a request may name the customer by; as a lookup it needs a unique index:\n\
                     #   CREATE UNIQUE INDEX ON {} (lower({}));\n\
                     # then: lookups = [{{ column = {name:?}, case_insensitive = true }}]",
                    sql_table(subject),
                    sql_name(name)
                );
            }
            continue;
        };
        if looks_like_email(name) {
            proposed.push(lookup.clone());
        }
        candidates.push(lookup);
    }
    if !proposed.is_empty() {
        let _ = writeln!(
            out,
            "# The e-mail a request may name the customer by (kept only as keyed hashes; compared in any\n\
             # case where a unique index on lower(...) allows it).\nlookups = [{}]",
            proposed.join(", ")
        );
    }
    if candidates.len() > proposed.len() {
        let _ = writeln!(
            out,
            "# Other unique columns a request may name the customer by, tried in order after the key:\n\
             # lookups = [{}]",
            candidates.join(", ")
        );
    }
    out
}

/// Whether, following the chosen path ends from `from`, one reaches `to`.
fn leads_to(
    ends: &BTreeMap<&TableName, Vec<&ForeignKey>>,
    from: &TableName,
    to: &TableName,
) -> bool {
    let mut stack = vec![from];
    let mut seen = BTreeSet::new();
    while let Some(at) = stack.pop() {
        if at == to {
            return true;
        }
        if seen.insert(at) {
            stack.extend(ends.get(at).into_iter().flatten().map(|k| &k.parent));
        }
    }
    false
}

/// The draft for `subject`, or why there is none.
/// A hop over a foreign key of several columns, the pair holding the subject's key (when it
/// leads to the subject) last, as a path's last hop must have it.
fn composite_hop(fk: &ForeignKey, parent: &str, subject: &TableName, key: &str) -> String {
    let mut pairs: Vec<(&String, &String)> =
        fk.child_columns.iter().zip(&fk.parent_columns).collect();
    if &fk.parent == subject
        && let Some(i) = pairs.iter().position(|(_, k)| k.as_str() == key)
    {
        let main = pairs.remove(i);
        pairs.push(main);
    }
    let (columns, keys): (Vec<&str>, Vec<&str>) =
        pairs.iter().map(|(c, k)| (c.as_str(), k.as_str())).unzip();
    format!("({}) -> {parent}.({})", columns.join(", "), keys.join(", "))
}

/// The subject's own links to other customers (a `referred_by`): cleared in their rows when
/// the customer is erased (`unlink`), when they can be null.
fn own_links(live: &LiveSchema, subject: &TableName, key: &str) -> String {
    let mut unlink = Vec::new();
    let mut out = String::new();
    for fk in live.foreign_keys.iter().filter(|k| {
        &k.child == subject && &k.parent == subject && k.parent_columns == [key.to_owned()]
    }) {
        let column = &fk.child_columns[0];
        match live.column(subject, column).is_some_and(|c| c.nullable) {
            true => unlink.push(format!("{column:?}")),
            false => {
                let _ = writeln!(
                    out,
                    "# {subject}.{column} points at another customer and cannot be null: erasing a customer others\n\
                     # point at fails; make it nullable (then unlink it here) or ON DELETE SET NULL."
                );
            }
        }
    }
    if !unlink.is_empty() {
        let _ = writeln!(
            out,
            "# Other customers' links to the customer (foreign keys of the table to itself), cleared in their rows:\nunlink = [{}]",
            unlink.join(", ")
        );
    }
    out
}

pub fn draft(live: &LiveSchema, subject: &TableName) -> Result<String, String> {
    let Some(table) = live.tables.get(subject) else {
        return Err(match live.partitions.get(subject) {
            Some(parent) => format!("{subject} is a partition of {parent}; draft from {parent}"),
            None => format!("table {subject} does not exist"),
        });
    };
    // The primary key, or (where it has several columns, as a tenant's and an id) a unique
    // column of a key type that is never null.
    let key = table.primary_key.clone().or_else(|| {
        table
            .unique
            .iter()
            .find(|c| {
                table
                    .columns
                    .get(*c)
                    .is_some_and(|col| !col.nullable && col.key_type().is_some())
            })
            .cloned()
    });
    let Some(key) = &key else {
        return Err(format!(
            "{subject} has no single-column primary key, nor a unique column that is never null, to name its customers by"
        ));
    };
    let schema = &subject.schema;
    let name = |t: &TableName| {
        if &t.schema == schema {
            t.name.clone()
        } else {
            t.to_string()
        }
    };

    // Breadth first from the subject: each table whose keys lead into a table already reached,
    // with its distance from the customer.
    let mut depth: BTreeMap<TableName, usize> = BTreeMap::from([(subject.clone(), 0)]);
    let mut order: Vec<TableName> = Vec::new();
    let mut queue: VecDeque<TableName> = VecDeque::from([subject.clone()]);
    while let Some(parent) = queue.pop_front() {
        for fk in live.referencing(&parent) {
            if !depth.contains_key(&fk.child) {
                depth.insert(fk.child.clone(), depth[&parent] + 1);
                order.push(fk.child.clone());
                queue.push_back(fk.child.clone());
            }
        }
    }
    let reached: BTreeSet<TableName> = depth.keys().cloned().collect();
    // Which keys a path may end at: every one between reached tables that does not close a
    // loop (a path may end at another step's table only if that one does not lead back),
    // those nearest the customer taken first.
    let mut candidates: Vec<&ForeignKey> = live
        .foreign_keys
        .iter()
        .filter(|k| {
            k.child != k.parent
                && k.child != *subject
                && reached.contains(&k.child)
                && reached.contains(&k.parent)
        })
        .collect();
    candidates.sort_by_key(|k| (depth[&k.parent], depth[&k.child]));
    let mut ends: BTreeMap<&TableName, Vec<&ForeignKey>> = BTreeMap::new();
    let mut looping: Vec<&ForeignKey> = Vec::new();
    for fk in candidates {
        if leads_to(&ends, &fk.parent, &fk.child) {
            looping.push(fk);
        } else {
            ends.entry(&fk.child).or_default().push(fk);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# A starting erasure plan for {subject}, drafted from the live schema by `erasure plan --draft`.\n\
         # Every table that reaches a customer deletes its rows; read each comment, make the\n\
         # choices it asks for, then run `erasure plan` until it says the plan covers the schema.\n\
         schema = {schema:?}\n\n[subject]\ntable = {:?}\nkey = {key:?}",
        subject.name
    );
    out.push_str(&personal::marks(live, subject, "the customer row", true));
    out.push_str(&lookups(subject, table, key));
    out.push_str(&own_links(live, subject, key));
    let _ = writeln!(out, "counted_as = {:?}", subject.name);

    let mut counted: BTreeMap<String, usize> = BTreeMap::new();
    for child in &order {
        let keys: Vec<&ForeignKey> = live
            .foreign_keys
            .iter()
            .filter(|k| &k.child == child && reached.contains(&k.parent))
            .collect();
        let mut paths = Vec::new();
        let mut notes = Vec::new();
        for fk in &keys {
            if &fk.parent == child && fk.child_columns.len() == 1 {
                notes.push(format!(
                    "# {} references its own rows by {} (foreign key {}): a path from the table to itself takes\n\
                     # the rows under the customer's, however deep; another customer's row under them lets go of it.",
                    child, fk.child_columns[0], fk.name
                ));
                paths.push(format!(
                    "{:?}",
                    format!(
                        "{} -> {}.{}",
                        fk.child_columns[0],
                        name(&fk.parent),
                        fk.parent_columns[0]
                    )
                ));
            } else if &fk.parent == child {
                notes.push(format!(
                    "# {} references its own rows by several columns ({}, foreign key {}): a tree takes one;\n\
                     # keep the table, or let the database act (ON DELETE SET NULL or CASCADE).",
                    child,
                    fk.child_columns.join(", "),
                    fk.name
                ));
            } else if fk.child_columns.len() != 1 {
                paths.push(format!(
                    "{:?}",
                    composite_hop(fk, &name(&fk.parent), subject, key)
                ));
            } else if looping.contains(fk) {
                notes.push(format!(
                    "# {} also references {} by {} (foreign key {}), which leads back to it: paths may not go round\n\
                     # in a loop, so keep one of the two tables, or drop the key.",
                    child, fk.parent, fk.child_columns[0], fk.name
                ));
            } else {
                paths.push(format!(
                    "{:?}",
                    format!(
                        "{} -> {}.{}",
                        fk.child_columns[0],
                        name(&fk.parent),
                        fk.parent_columns[0]
                    )
                ));
            }
        }
        // The keys its paths take that cannot be null: keeping its rows keeps the rows they
        // point at, unless they are repointed at a placeholder.
        let held: Vec<&ForeignKey> = keys
            .iter()
            .copied()
            .filter(|fk| {
                fk.child_columns.len() == 1
                    && &fk.parent != child
                    && !looping.contains(fk)
                    && live
                        .column(child, &fk.child_columns[0])
                        .is_some_and(|c| !c.nullable)
            })
            .collect();
        let accounting = ACCOUNTING
            .iter()
            .any(|word| child.name.to_lowercase().contains(word));
        let mut base = child.name.clone();
        let n = counted.entry(base.clone()).or_default();
        *n += 1;
        if *n > 1 {
            base = format!("{}_{}", child.schema, child.name);
        }
        out.push('\n');
        for note in notes {
            let _ = writeln!(out, "{note}");
        }
        if accounting {
            let why = if held.iter().any(|fk| &fk.parent == subject) {
                "; its key to the customer cannot be null, so keep the subject too\n\
                 # (action = \"anonymize\" in [subject]), or repoint the key at a placeholder (below)"
                    .to_string()
            } else if let Some(fk) = held.first() {
                format!(
                    "; its key to {} cannot be null, so keep those rows too\n\
                     # (action = \"anonymize\" in their step), or repoint the key at a placeholder (below)",
                    fk.parent
                )
            } else {
                ", nulling its key to the customer".to_string()
            };
            let _ = writeln!(
                out,
                "# {child} looks like an accounting record. If the law says to keep it, anonymize its rows\n\
                 # instead (action = \"anonymize\", with set_null / set_value / remove_keys for its personal columns){why}."
            );
            for fk in &held {
                out.push_str(&placeholder::comment(
                    live,
                    child,
                    &fk.child_columns[0],
                    &fk.parent,
                    &fk.parent_columns[0],
                    "in this step",
                ));
            }
        }
        out.push_str(&personal::marks(live, child, "its rows", false));
        if paths.is_empty() {
            let _ = writeln!(
                out,
                "[[keep]]\ntable = {:?}\nreason = \"to decide: see above\"",
                name(child)
            );
            continue;
        }
        let path_line = if paths.len() == 1 {
            format!("path = [{}]", paths[0])
        } else {
            format!(
                "paths = [{}]",
                paths
                    .iter()
                    .map(|p| format!("[{p}]"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let _ = writeln!(
            out,
            "[[step]]\ntable = {:?}\n{path_line}\naction = \"delete\"\ncounted_as = {base:?}",
            name(child)
        );
    }

    for fk in live
        .foreign_keys
        .iter()
        .filter(|k| &k.child == subject && &k.parent != subject && k.child_columns.len() == 1)
    {
        let from = &fk.child_columns[0];
        let kept_subject = match live.column(subject, from).is_some_and(|c| c.nullable) {
            true => format!("a kept subject must null {from} to delete it"),
            // A placeholder would not do: asked again, a kept customer's erasure would take the
            // placeholder row it points at for its own.
            false => format!("a kept subject cannot null {from}, so it must anonymize it"),
        };
        let _ = writeln!(
            out,
            "\n# The customer references a row of {} by {from}. If it holds personal data (an address), erase it\n\
             # after the customer unless another row still references it: uncomment, and choose delete or\n\
             # anonymize ({kept_subject}).",
            fk.parent,
        );
        out.push_str(&personal::marks(live, &fk.parent, "the row", true));
        let _ = writeln!(
            out,
            "# [[referenced]]\n# table = {:?}\n# key = {:?}\n# from = {from:?}\n# action = \"delete\"\n# counted_as = {:?}",
            name(&fk.parent),
            fk.parent_columns[0],
            fk.parent.name
        );
    }
    Ok(out)
}
