//! What a plan must be before any database is asked: names present, one step per table,
//! paths that end at the subject or at another step's table without going round in a loop,
//! guards with values, keeps with reasons.

use std::collections::HashMap;

use super::{PathHops, Plan, TableName, Test};

/// Checks that need no database: names present, one step per table, paths that end at the
/// subject or at another step, guards with values, keeps with reasons.
pub fn check(plan: &Plan, problems: &mut Vec<String>) {
    let subject = &plan.subject;
    let mut names: Vec<(String, &str)> = vec![
        ("subject.table".into(), &subject.table.name),
        ("subject.key".into(), &subject.key),
        ("subject.counted_as".into(), &subject.counted_as),
    ];
    names.extend(
        subject
            .lookups
            .iter()
            .map(|l| ("subject.lookup".to_string(), l.column.as_str())),
    );
    for step in &plan.steps {
        names.push(("step.table".into(), &step.table.name));
        names.push(("step.counted_as".into(), &step.counted_as));
    }
    for (what, name) in names {
        if name.is_empty() || name.contains('\0') {
            problems.push(format!("{what} must be a non-empty name without NUL"));
        }
    }

    let mut seen: HashMap<&TableName, usize> = HashMap::new();
    for table in plan
        .steps
        .iter()
        .map(|s| &s.table)
        .chain(plan.referenced.iter().map(|r| &r.table))
    {
        *seen.entry(table).or_default() += 1;
    }
    for (table, n) in &seen {
        if *n > 1 {
            problems.push(format!("table {table} has {n} steps; give it one"));
        }
    }
    if seen.contains_key(&subject.table) {
        problems.push(format!(
            "table {} is the subject; the subject's own action is in [subject], not a step",
            subject.table
        ));
    }

    for step in &plan.steps {
        let what = format!("step {}", step.table);
        let roots: Vec<PathHops> = step.roots().cloned().collect();
        check_paths(plan, &what, &step.table, &roots, problems);
        if let Some(tree) = step.tree() {
            if roots.is_empty() {
                problems.push(format!(
                    "{what} reaches the subject only through its own rows ({tree}): give it a path to the subject for the rows at the top of the tree"
                ));
            }
            if !tree.also.is_empty() {
                problems.push(format!(
                    "{what}: a path from a table to itself ({tree}) is over one column"
                ));
            }
        }
    }
    if plan.subject.unlink.contains(&plan.subject.key) {
        problems.push(format!(
            "subject: unlink names the key {}; unlink names the columns that reference it",
            plan.subject.key
        ));
    }
    for guard in &plan.guards {
        let what = format!("guard {}", guard.name);
        check_paths(plan, &what, &guard.table, &guard.paths, problems);
        if guard.when.is_empty() {
            problems.push(format!("guard {:?} has no condition in `when`", guard.name));
        }
        for condition in &guard.when {
            match &condition.test {
                Test::In(values) if values.is_empty() => problems.push(format!(
                    "guard {:?} has an empty `in` list for {}",
                    guard.name, condition.column
                )),
                // The word, not a null: `in` never matches a null.
                Test::In(values) if values.iter().any(|v| v.eq_ignore_ascii_case("null")) => {
                    problems.push(format!(
                        "guard {:?}: `in` compares {} with the text \"NULL\", never with a null; to test for a null, write is_null = true",
                        guard.name, condition.column
                    ))
                }
                _ => {}
            }
        }
    }
    for keep in &plan.keeps {
        if keep.reason.trim().is_empty() {
            problems.push(format!("keep {} needs a reason", keep.table));
        }
    }
}

/// Each path ends at the subject's key or at a table with a step, and following steps never
/// comes back to where it started.
fn check_paths(
    plan: &Plan,
    what: &str,
    from: &TableName,
    paths: &[PathHops],
    problems: &mut Vec<String>,
) {
    for path in paths {
        let Some(last) = path.last() else { continue };
        if plan.reaches_subject(last) {
            continue;
        }
        let mut visited = vec![from.clone()];
        let mut next = last;
        loop {
            if plan.reaches_subject(next) {
                break;
            }
            if visited.contains(&next.table) {
                let chain: Vec<String> = visited.iter().map(ToString::to_string).collect();
                problems.push(format!(
                    "{what} reaches the subject through a loop: {} -> {}",
                    chain.join(" -> "),
                    next.table
                ));
                break;
            }
            match plan.step(&next.table) {
                Some(parent) => {
                    visited.push(parent.table.clone());
                    // Any of the parent's paths out of its table will do for the loop check:
                    // each is checked too (a path from a table to itself is its tree).
                    match parent.roots().next().and_then(|p| p.last()) {
                        Some(hop) => next = hop,
                        None => break,
                    }
                }
                None => {
                    problems.push(format!(
                        "{what} goes through {}, which has no step of its own and is not the subject",
                        next.table
                    ));
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::BUILT_IN;
    use crate::plan::document::parse;

    #[test]
    fn a_through_chain_that_ends_nowhere_is_rejected() {
        let text = BUILT_IN.replace(
            "through = { table = \"orders\", key = \"id\" }",
            "through = { table = \"invoices\", key = \"id\" }",
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("goes through public.invoices, which has no step"),
            "{err}"
        );
    }

    #[test]
    fn two_steps_on_one_table_are_rejected() {
        let text = format!(
            "{BUILT_IN}\n[[step]]\ntable = \"events\"\ncolumn = \"customer_id\"\naction = \"delete\"\ncounted_as = \"x\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("public.events has 2 steps"), "{err}");
    }

    #[test]
    fn a_loop_of_steps_is_rejected() {
        let text = format!(
            "{BUILT_IN}\n[[step]]\ntable = \"a\"\npath = [\"b_id -> b.id\"]\naction = \"delete\"\ncounted_as = \"a\"\n\
             [[step]]\ntable = \"b\"\npath = [\"a_id -> a.id\"]\naction = \"delete\"\ncounted_as = \"b\"\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("through a loop"), "{err}");
    }
}
