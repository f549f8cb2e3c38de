//! `erasure plan --draft`: a starting plan, read from the live schema outwards from the subject
//! table. Every table that reaches the subject by foreign keys (partitions folded into their
//! parent) gets a step that deletes its rows, with a path for each of its keys into the subject
//! or into another step's table, so that the coverage check passes as drafted. Where a choice
//! is the business's own, a comment says so:
//! - a table that looks like an accounting record and references the customer with a key that
//!   cannot be null: keep it anonymized (and the subject with it) instead of deleting it;
//! - a row the subject references (an address): a commented `[[referenced]]` to take up;
//! - other unique columns of the subject: lookups a request may name the customer by;
//! - keys a step cannot cover (several columns, or a table referencing itself).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write;

use super::TableName;
use super::live::{ForeignKey, LiveSchema};

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
pub fn draft(live: &LiveSchema, subject: &TableName) -> Result<String, String> {
    let Some(table) = live.tables.get(subject) else {
        return Err(match live.partitions.get(subject) {
            Some(parent) => format!("{subject} is a partition of {parent}; draft from {parent}"),
            None => format!("table {subject} does not exist"),
        });
    };
    let Some(key) = &table.primary_key else {
        return Err(format!(
            "{subject} has no single-column primary key to name its customers by"
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
            if fk.child_columns.len() == 1 && !depth.contains_key(&fk.child) {
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
            k.child_columns.len() == 1
                && k.child != k.parent
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
    let lookups: Vec<&String> = table
        .columns
        .iter()
        .filter(|(c, column)| {
            *c != key
                && column.key_type() == Some(super::KeyType::Text)
                && table.is_unique(c, false)
        })
        .map(|(c, _)| c)
        .collect();
    if !lookups.is_empty() {
        let _ = writeln!(
            out,
            "# Other unique columns a request may name the customer by (kept only as keyed hashes);\n\
             # compare an email in any case with case_insensitive = true and a unique index on lower(email).\n\
             # lookups = [{}]",
            lookups
                .iter()
                .map(|c| format!("{{ column = {c:?} }}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
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
            if fk.child_columns.len() != 1 {
                notes.push(format!(
                    "# Foreign key {} has several columns ({}); a path takes one: keep the table or drop the key.",
                    fk.name,
                    fk.child_columns.join(", ")
                ));
            } else if &fk.parent == child {
                notes.push(format!(
                    "# {} references its own rows by {} (foreign key {}): deleting one another rows point at fails\n\
                     # unless the key is ON DELETE SET NULL or CASCADE; with such a key, keep the table instead.",
                    child, fk.child_columns[0], fk.name
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
        let not_null_to_subject = keys.iter().any(|fk| {
            &fk.parent == subject
                && fk.child_columns.len() == 1
                && live
                    .column(child, &fk.child_columns[0])
                    .is_some_and(|c| !c.nullable)
        });
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
            let _ = writeln!(
                out,
                "# {child} looks like an accounting record. If the law says to keep it, anonymize its rows\n\
                 # instead (action = \"anonymize\", with set_null / set_value / remove_keys for its personal columns){}.",
                if not_null_to_subject {
                    "; its key to the customer cannot be null, so keep the subject too\n# (action = \"anonymize\" in [subject])"
                } else {
                    ", nulling its key to the customer"
                }
            );
        }
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
        let _ = writeln!(
            out,
            "\n# The customer references a row of {} by {}. If it holds personal data (an address), erase it\n\
             # after the customer unless another row still references it: uncomment, and choose delete or\n\
             # anonymize (a kept subject must null {} to delete it).\n\
             # [[referenced]]\n# table = {:?}\n# key = {:?}\n# from = {:?}\n# action = \"delete\"\n# counted_as = {:?}",
            fk.parent,
            fk.child_columns[0],
            fk.child_columns[0],
            name(&fk.parent),
            fk.parent_columns[0],
            fk.child_columns[0],
            fk.parent.name
        );
    }
    Ok(out)
}
