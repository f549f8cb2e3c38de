//! Which columns of a table look like personal data, and how an anonymizing action would clear
//! them: the comment the draft writes beside each table, for the choice between deleting its
//! rows and keeping them. A guess, said as a question: by the column's name (a name, an
//! e-mail, a phone, an address, a birth date, an IP address, a bank card, free-text notes) or
//! by its type (`inet`, `json`/`jsonb`, and `text` unless the name says it holds a code). Keys
//! are never marked: a row's own key and its foreign keys say whose a row is, and an erasure
//! handles them.

use std::collections::BTreeSet;

use super::blank;
use crate::plan::TableName;
use crate::plan::live::{Column, LiveSchema};

/// Words of a column's name that say it holds something of a person.
#[rustfmt::skip]
const PERSONAL_WORDS: &[&str] = &[
    "name", "surname", "email", "mail", "phone", "mobile", "tel", "telephone", "fax", "address",
    "street", "city", "postcode", "zip", "zipcode", "postal", "line1", "line2", "birth",
    "birthday", "birthdate", "dob", "ip", "iban", "card", "note", "notes", "comment", "comments",
    "description", "remark", "remarks", "body", "message", "bio",
];

/// Parts of a name written without separators (`emailaddress`, `dateofbirth`).
const PERSONAL_PARTS: &[&str] = &["email", "phone", "address", "street", "postcode", "birth"];

/// Words of a `text` column's name that say it holds a code, not free text.
const CODE_WORDS: &[&str] = &[
    "id", "code", "type", "kind", "status", "state", "currency", "country", "lang", "language",
    "locale", "category", "role", "level", "unit", "sku",
];

/// The words of a column's name, in lower case: split at every character that is not a letter
/// or digit, and where a lower-case letter meets an upper-case one (`firstName`).
fn words(name: &str) -> Vec<String> {
    let mut words = vec![String::new()];
    let mut previous_lower = false;
    for c in name.chars() {
        if !c.is_alphanumeric() {
            words.push(String::new());
            previous_lower = false;
            continue;
        }
        if c.is_uppercase() && previous_lower {
            words.push(String::new());
        }
        previous_lower = c.is_lowercase() || c.is_ascii_digit();
        words
            .last_mut()
            .expect("never empty")
            .extend(c.to_lowercase());
    }
    words.retain(|w| !w.is_empty());
    words
}

/// Whether a column named `name`, of `column`'s type, looks like personal data.
pub fn looks_personal(name: &str, column: &Column) -> bool {
    let words = words(name);
    let joined = words.concat();
    let by_name = words
        .iter()
        .any(|w| PERSONAL_WORDS.contains(&w.as_str()) || w.ends_with("name"))
        || PERSONAL_PARTS.iter().any(|part| joined.contains(part));
    let by_type = match column.base_type() {
        "inet" | "cidr" | "macaddr" | "macaddr8" | "json" | "jsonb" => true,
        // Unbounded text (`character varying` without a length too) holds anything typed in.
        "text" => !words.iter().any(|w| CODE_WORDS.contains(&w.as_str())),
        "character varying" => {
            column.sql_type == "character varying"
                && !words.iter().any(|w| CODE_WORDS.contains(&w.as_str()))
        }
        _ => false,
    };
    by_name || by_type
}

/// The columns of `table` that look personal, in name order, keys left out.
pub fn columns<'a>(live: &'a LiveSchema, table: &TableName) -> Vec<(&'a str, &'a Column)> {
    let Some(t) = live.tables.get(table) else {
        return Vec::new();
    };
    let keys: BTreeSet<&str> = live
        .foreign_keys
        .iter()
        .filter(|k| &k.child == table)
        .flat_map(|k| k.child_columns.iter().map(String::as_str))
        .chain(t.primary_key.as_deref())
        .collect();
    t.columns
        .iter()
        .filter(|(name, column)| !keys.contains(name.as_str()) && looks_personal(name, column))
        .map(|(name, column)| (name.as_str(), column))
        .collect()
}

/// The comment the draft writes beside `table`'s block: the columns that look personal, and
/// the anonymizing action that would clear them if `what` ("its rows", "the customer row")
/// must be kept. `one_row`: the action changes one row per customer, so a unique column can
/// take `{key}` in its value. Empty when none looks personal.
pub fn marks(live: &LiveSchema, table: &TableName, what: &str, one_row: bool) -> String {
    let personal = columns(live, table);
    if personal.is_empty() {
        return String::new();
    }
    let listed: Vec<String> = personal
        .iter()
        .map(|(name, column)| match column.nullable {
            true => format!("{name} ({})", column.sql_type),
            false => format!("{name} ({}, NOT NULL)", column.sql_type),
        })
        .collect();
    let unique = |name: &str| {
        live.tables
            .get(table)
            .is_some_and(|t| t.is_unique(name, false) || t.is_unique(name, true))
    };
    let set_null: Vec<String> = personal
        .iter()
        .filter(|(_, column)| column.nullable)
        .map(|(name, _)| format!("{name:?}"))
        .collect();
    let set_value: Vec<String> = personal
        .iter()
        .filter(|(_, column)| !column.nullable)
        .map(|(name, column)| {
            let value = match blank(column, "erased") {
                // A unique column needs a value of its own for each row it keeps.
                Some("erased") if one_row && unique(name) => "erased-{key}".to_string(),
                Some(value) => value.to_string(),
                None => format!("<a value of type {}>", column.sql_type),
            };
            format!("{name} = {value:?}")
        })
        .collect();
    let mut clear = Vec::new();
    if !set_null.is_empty() {
        clear.push(format!("set_null = [{}]", set_null.join(", ")));
    }
    if !set_value.is_empty() {
        clear.push(format!("set_value = {{ {} }}", set_value.join(", ")));
    }
    format!(
        "# personal? {}\n#   if {what} must be kept: action = \"anonymize\" with {}\n",
        listed.join(", "),
        clear.join(" and ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn column(sql_type: &str) -> Column {
        Column {
            sql_type: sql_type.to_owned(),
            nullable: true,
            has_default: false,
            identity: false,
        }
    }

    #[test]
    fn names_are_split_into_words_in_any_case() {
        assert_eq!(words("firstName"), ["first", "name"]);
        assert_eq!(words("e-mail"), ["e", "mail"]);
        assert_eq!(words("card_last4"), ["card", "last4"]);
        assert_eq!(words("IPAddress"), ["ipaddress"]);
    }

    #[test]
    fn columns_look_personal_by_name_or_by_type() {
        for (name, sql_type) in [
            ("first_name", "character varying(40)"),
            ("lastName", "character varying(40)"),
            ("e_mail", "character varying(120)"),
            ("emailaddress", "character varying(120)"),
            ("mobile", "character varying(20)"),
            ("postcode", "character varying(10)"),
            ("date_of_birth", "date"),
            ("dob", "date"),
            ("ip", "character varying(45)"),
            ("iban", "character varying(34)"),
            ("card_last4", "character(4)"),
            ("description", "character varying(200)"),
            ("last_seen_from", "inet"),
            ("profile", "jsonb"),
            ("user_agent", "text"),
            ("remarks", "character varying"),
        ] {
            assert!(looks_personal(name, &column(sql_type)), "{name} {sql_type}");
        }
        for (name, sql_type) in [
            ("status", "text"),
            ("currency", "text"),
            ("external_id", "text"),
            ("order_type", "text"),
            ("amount", "numeric(10,2)"),
            ("created_at", "timestamp with time zone"),
            ("sku", "character varying(20)"),
            ("active", "boolean"),
        ] {
            assert!(
                !looks_personal(name, &column(sql_type)),
                "{name} {sql_type}"
            );
        }
    }
}
