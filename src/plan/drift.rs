//! The drift gate (`erasure plan --strict`): columns of the live schema that look personal and
//! that the plan neither reaches nor exempts with a reason. Meant for CI after each migration:
//! a new `alt_email` column, or a new table of contacts, fails the build until the plan says
//! what becomes of it.
//!
//! A column looks personal by its name and type (`email`, `phone`, `first_name`, `address`,
//! `birth_date`, `iban`...; a bare `name` only beside another such column), or by a sample of
//! its values (most of them shaped like e-mail addresses or phone numbers). A column is reached
//! when the plan deletes its table's rows, or clears it when it keeps them; a `[[keep]]` table
//! and an `[[exempt]]` column are left out, with their reasons.

use sqlx::PgPool;

use super::live::{Column, LiveSchema};
use super::{Action, Plan, TableName, ident};

/// A column the plan does not reach and does not exempt, and why it looks personal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drift {
    pub table: TableName,
    pub column: String,
    pub why: String,
}

/// The kind of personal data a column's name suggests, if any.
pub fn personal_by_name(column: &str, column_type: &Column) -> Option<&'static str> {
    let name = column.to_lowercase();
    let words: Vec<&str> = name.split(['_', ' ', '-']).collect();
    let has = |w: &[&str]| words.iter().any(|word| w.contains(word));
    let base = column_type.base_type();
    let text = matches!(
        base,
        "text" | "character varying" | "character" | "citext" | "jsonb" | "json"
    ) || base.ends_with("citext");
    let time = base == "date" || base.starts_with("timestamp");
    if text
        && (has(&["email", "mail", "emailaddress"])
            || name.contains("email")
            || name.contains("e_mail"))
    {
        return Some("an e-mail address");
    }
    if text
        && (has(&[
            "phone",
            "mobile",
            "telephone",
            "tel",
            "fax",
            "msisdn",
            "cell",
        ]) || name.contains("phone"))
    {
        return Some("a phone number");
    }
    if text
        && (has(&[
            "surname",
            "firstname",
            "lastname",
            "fullname",
            "forename",
            "maiden",
        ]) || (has(&["name"])
            && has(&[
                "first", "last", "full", "given", "family", "middle", "billing", "shipping",
                "customer", "contact", "person", "display", "legal",
            ])))
    {
        return Some("a person's name");
    }
    if text
        && has(&[
            "address", "street", "addr", "postcode", "zip", "zipcode", "postal",
        ])
    {
        return Some("an address");
    }
    if (text || time) && (has(&["birth", "birthday", "dob", "birthdate"]) || name.contains("birth"))
    {
        return Some("a date of birth");
    }
    if text
        && has(&[
            "ssn", "passport", "iban", "nin", "taxid", "national", "licence", "license",
        ])
    {
        return Some("an identity or account number");
    }
    if (text || base == "inet") && (has(&["ip"]) || name == "ip_address" || base == "inet") {
        return Some("an IP address");
    }
    None
}

/// Whether a bare `name` column counts: beside another column that looks personal.
fn bare_name(column: &str, column_type: &Column) -> bool {
    column.eq_ignore_ascii_case("name")
        && matches!(
            column_type.base_type(),
            "text" | "character varying" | "citext"
        )
}

/// Whether the plan reaches `column` of `table`: deletes its rows, or clears it where it keeps
/// them.
pub fn reached(plan: &Plan, table: &TableName, column: &str) -> bool {
    let action = if plan.subject.table == *table {
        Some(&plan.subject.action)
    } else {
        plan.step(table).map(|s| &s.action).or_else(|| {
            plan.referenced
                .iter()
                .find(|r| &r.table == table)
                .map(|r| &r.action)
        })
    };
    match action {
        Some(Action::Delete) => true,
        Some(Action::Anonymize(a)) => a.cleared().any(|c| c == column),
        None => false,
    }
}

/// Why `column` of `table` is left out of the gate, if it is: a `[[keep]]` or an `[[exempt]]`.
pub fn exempted<'p>(plan: &'p Plan, table: &TableName, column: &str) -> Option<&'p str> {
    plan.keeps
        .iter()
        .find(|k| &k.table == table)
        .map(|k| k.reason.as_str())
        .or_else(|| plan.residue.exempted(table, column))
}

/// The sampled values: how many rows to read of a column.
const SAMPLE: i64 = 200;

/// Finds the columns of the live schema that look personal and that the plan neither reaches
/// nor exempts.
pub async fn find(plan: &Plan, pool: &PgPool) -> Result<Vec<Drift>, sqlx::Error> {
    let live = LiveSchema::read(pool).await?;
    let mut drift = Vec::new();
    for (table, t) in &live.tables {
        let named: Vec<(&String, &'static str)> = t
            .columns
            .iter()
            .filter_map(|(c, ty)| personal_by_name(c, ty).map(|why| (c, why)))
            .collect();
        for (column, column_type) in &t.columns {
            if reached(plan, table, column) || exempted(plan, table, column).is_some() {
                continue;
            }
            let why = match personal_by_name(column, column_type) {
                Some(why) => Some(format!("its name says {why}")),
                None if bare_name(column, column_type) && !named.is_empty() => Some(format!(
                    "a name beside {}",
                    named
                        .iter()
                        .map(|(c, _)| c.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
                None if matches!(
                    column_type.base_type(),
                    "text" | "character varying" | "character" | "citext"
                ) || column_type.base_type().ends_with("citext") =>
                {
                    sampled(pool, table, column).await?
                }
                None => None,
            };
            if let Some(why) = why {
                drift.push(Drift {
                    table: table.clone(),
                    column: column.clone(),
                    why,
                });
            }
        }
    }
    Ok(drift)
}

/// Whether most of a sample of the column's values are shaped like e-mail addresses or phone
/// numbers (read in the database; only counts come back).
async fn sampled(
    pool: &PgPool,
    table: &TableName,
    column: &str,
) -> Result<Option<String>, sqlx::Error> {
    let (emails, phones, all): (i64, i64, i64) = sqlx::query_as(&format!(
        "SELECT count(*) FILTER (WHERE v ~ '^[^@[:space:]]+@[^@[:space:]]+\\.[^@[:space:]]+$'), \
                count(*) FILTER (WHERE v ~ '^\\+?[0-9][0-9 ().-]{{5,}}[0-9]$' \
                  AND length(regexp_replace(v, '[^0-9]', '', 'g')) BETWEEN 7 AND 15 \
                  AND (v ~ '^\\+' OR v ~ '[ ().-]')), \
                count(*) \
         FROM (SELECT {c}::text AS v FROM {t} WHERE {c} IS NOT NULL LIMIT {SAMPLE}) s",
        c = ident(column),
        t = table.sql(),
    ))
    .fetch_one(pool)
    .await?;
    Ok(match () {
        _ if all > 0 && emails * 2 >= all => Some(format!(
            "{emails} of {all} sampled values are shaped like e-mail addresses"
        )),
        _ if all > 0 && phones * 2 >= all => Some(format!(
            "{phones} of {all} sampled values are shaped like phone numbers"
        )),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(sql_type: &str) -> Column {
        Column {
            sql_type: sql_type.into(),
            nullable: true,
            has_default: false,
            identity: false,
        }
    }

    #[test]
    fn names_and_types_say_what_looks_personal() {
        let text = column("text");
        assert_eq!(
            personal_by_name("alt_email", &text),
            Some("an e-mail address")
        );
        assert_eq!(
            personal_by_name("mobile_no", &column("character varying(20)")),
            Some("a phone number")
        );
        assert_eq!(
            personal_by_name("billing_name", &text),
            Some("a person's name")
        );
        assert_eq!(
            personal_by_name("date_of_birth", &column("date")),
            Some("a date of birth")
        );
        assert_eq!(
            personal_by_name("shipping_address", &column("jsonb")),
            Some("an address")
        );
        for not in ["name", "status", "currency", "email_count"] {
            let ty = if not == "email_count" {
                column("integer")
            } else {
                text.clone()
            };
            assert_eq!(personal_by_name(not, &ty), None, "{not}");
        }
        assert!(bare_name("name", &text));
    }
}
