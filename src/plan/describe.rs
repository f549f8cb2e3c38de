//! A plan in words, for `erasure plan`.

use std::fmt::Write;

use super::{Action, Anonymize, PathHops, Plan};

impl Plan {
    pub fn describe(&self) -> String {
        let subject = &self.subject;
        let mut out = String::from("Erasure plan\n\n");
        let lookups: Vec<String> = subject
            .lookups
            .iter()
            .map(|l| {
                if l.case_insensitive {
                    format!("{} (any case)", l.column)
                } else {
                    l.column.clone()
                }
            })
            .collect();
        let found_by = if lookups.is_empty() {
            String::new()
        } else {
            format!(", also found by {}", lookups.join(", "))
        };
        let fate = match &subject.action {
            Action::Delete => "deleted last".to_string(),
            Action::Anonymize(a) => format!("kept, {}", anonymized(a)),
        };
        let _ = writeln!(
            out,
            "Subject: {} (key {}{found_by}), {fate}, counted as {:?}",
            subject.table, subject.key, subject.counted_as
        );
        if !self.guards.is_empty() {
            out.push_str("\nGuards (the customer is not erased while one holds):\n");
            for g in &self.guards {
                let _ = writeln!(
                    out,
                    "  - {}: a row of {} via {} with {} -> conflict ({})",
                    g.name,
                    g.table,
                    ways(&g.paths),
                    g.when
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" and "),
                    g.message
                );
            }
        }
        out.push_str("\nSteps:\n");
        for s in &self.steps {
            let _ = writeln!(
                out,
                "  - {} via {}: {}, counted as {:?}",
                s.table,
                ways(&s.paths),
                action(&s.action),
                s.counted_as
            );
        }
        if !self.referenced.is_empty() {
            out.push_str(
                "\nRows the subject references (left alone while another row refers to them):\n",
            );
            for r in &self.referenced {
                let _ = writeln!(
                    out,
                    "  - {} by {}.{} -> {}: {}, counted as {:?}, left as {:?}",
                    r.table,
                    subject.table,
                    r.from,
                    r.key,
                    action(&r.action),
                    r.counted_as,
                    r.kept_as
                );
            }
        }
        if !self.keeps.is_empty() {
            out.push_str("\nKept on purpose:\n");
            for k in &self.keeps {
                let _ = writeln!(out, "  - {}: {}", k.table, k.reason);
            }
        }
        out
    }
}

/// `column -> table.key, ...` for each path, ` or ` between them.
fn ways(paths: &[PathHops]) -> String {
    paths
        .iter()
        .map(|path| {
            let hops = path
                .iter()
                .map(|hop| format!("{} -> {}.{}", hop.column, hop.table, hop.key))
                .collect::<Vec<_>>()
                .join(", ");
            match path.owns {
                true => hops,
                false => format!("{hops} (only when no other subject owns the row)"),
            }
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

fn action(action: &Action) -> String {
    match action {
        Action::Delete => "delete rows".into(),
        Action::Anonymize(a) => format!("anonymize ({})", anonymized(a)),
    }
}

fn anonymized(a: &Anonymize) -> String {
    let mut parts = Vec::new();
    if !a.set_null.is_empty() {
        parts.push(format!("null: {}", a.set_null.join(", ")));
    }
    if !a.set_value.is_empty() {
        let values: Vec<String> = a
            .set_value
            .iter()
            .map(|(c, v)| format!("{c} = {v:?}"))
            .collect();
        parts.push(format!("set: {}", values.join(", ")));
    }
    if !a.remove_keys.is_empty() {
        let keys: Vec<String> = a
            .remove_keys
            .iter()
            .map(|(c, k)| format!("{c} - {k:?}"))
            .collect();
        parts.push(format!("keys removed: {}", keys.join(", ")));
    }
    if !a.set_now.is_empty() {
        parts.push(format!("now: {}", a.set_now.join(", ")));
    }
    parts.join("; ")
}
