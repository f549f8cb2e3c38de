//! The words every layer shares about the subject: what type its key has, how a request's
//! identifier reads as a key, and the lookups a request may name it by. Plain data; how a key
//! is bound to a statement lives beside the SQL that binds it ([`crate::plan::sql`]).

use uuid::Uuid;

/// Another unique column a request may name the customer by (a source id, an email), kept only
/// as a keyed hash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lookup {
    pub column: String,
    /// Compared as `lower(column) = lower(value)`: an email, say.
    pub case_insensitive: bool,
    /// The column's type, as the plan check found it (text until then).
    pub value_type: LookupType,
}

impl Lookup {
    pub fn new(column: &str, case_insensitive: bool) -> Self {
        Self {
            column: column.to_owned(),
            case_insensitive,
            value_type: LookupType::Text,
        }
    }

    /// Whether two identifiers that differ only in case name the same row: the lookup folds
    /// them, or the column's type (citext) does.
    pub fn folds(&self) -> bool {
        self.case_insensitive || matches!(self.value_type, LookupType::Citext(_))
    }
}

/// The types a lookup column may have. A request's identifier is a string: it is compared
/// with the column only when it reads as the column's type, and as that type (so the column's
/// own index is used).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum LookupType {
    #[default]
    Text,
    /// `citext`, with its spelling (the extension's schema may qualify it).
    Citext(String),
    Integer,
    Bigint,
    Uuid,
}

impl LookupType {
    /// The lookup type of a column whose type is `sql_type` (`format_type`'s spelling) with
    /// `base` its name without modifier; `None` when a lookup cannot be of that type.
    pub fn of(sql_type: &str, base: &str) -> Option<Self> {
        if base == "citext" || base.ends_with(".citext") {
            return Some(Self::Citext(sql_type.to_owned()));
        }
        Some(match KeyType::of(base)? {
            KeyType::Text => Self::Text,
            KeyType::Integer => Self::Integer,
            KeyType::Bigint => Self::Bigint,
            KeyType::Uuid => Self::Uuid,
        })
    }

    pub fn is_text(&self) -> bool {
        matches!(self, Self::Text | Self::Citext(_))
    }

    /// `identifier` as PostgreSQL writes a value of this type as text (`42` for `+042`, a
    /// uuid in lower case with hyphens), or `None` when it does not read as one. The same
    /// reading as the statement's ([`crate::plan::sql::reach`]): digits with an optional sign
    /// in the type's range; a uuid as 32 hex digits, hyphens allowed between the usual groups.
    pub fn normalize(&self, identifier: &str) -> Option<String> {
        match self {
            Self::Text | Self::Citext(_) => Some(identifier.to_owned()),
            Self::Integer => integer(identifier)
                .and_then(|n| i32::try_from(n).ok())
                .map(|n| n.to_string()),
            Self::Bigint => integer(identifier).map(|n| n.to_string()),
            Self::Uuid => uuid_text(identifier),
        }
    }
}

/// Digits with an optional sign, read as a 64-bit integer.
fn integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix(['+', '-']).unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// 32 hex digits in groups of 8, 4, 4, 4 and 12, each group but the first optionally preceded
/// by a hyphen: the uuid in lower case with hyphens.
fn uuid_text(text: &str) -> Option<String> {
    let mut rest = text;
    let mut hex = String::with_capacity(32);
    for (i, len) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            rest = rest.strip_prefix('-').unwrap_or(rest);
        }
        let group = rest.get(..len)?;
        if !group.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        hex.push_str(group);
        rest = &rest[len..];
    }
    if !rest.is_empty() {
        return None;
    }
    Uuid::parse_str(&hex)
        .ok()
        .map(|u| u.hyphenated().to_string())
}

/// The types a subject's key may have. A request names its customer with a string, which is
/// compared with the key only when it reads as the key's type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KeyType {
    #[default]
    Text,
    Integer,
    Bigint,
    Uuid,
}

impl KeyType {
    /// The key type of a column of SQL type `data_type` (information_schema's spelling).
    pub fn of(data_type: &str) -> Option<Self> {
        match data_type {
            "text" | "character varying" | "character" => Some(Self::Text),
            "integer" => Some(Self::Integer),
            "bigint" => Some(Self::Bigint),
            "uuid" => Some(Self::Uuid),
            _ => None,
        }
    }

    pub fn sql(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Integer => "integer",
            Self::Bigint => "bigint",
            Self::Uuid => "uuid",
        }
    }

    /// `identifier` as a key of this type, or a key that matches nothing when it does not
    /// read as one.
    pub fn key(self, identifier: &str) -> KeyValue {
        match self {
            Self::Text => KeyValue::Text(identifier.to_owned()),
            Self::Integer => KeyValue::Integer(identifier.parse().ok()),
            Self::Bigint => KeyValue::Bigint(identifier.parse().ok()),
            Self::Uuid => KeyValue::Uuid(Uuid::parse_str(identifier).ok()),
        }
    }
}

/// A request's identifier read as the subject's key type (`None`: it does not read as one, and
/// only the lookups can match it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyValue {
    Text(String),
    Integer(Option<i32>),
    Bigint(Option<i64>),
    Uuid(Option<Uuid>),
}

impl KeyValue {
    /// The key as PostgreSQL writes it as text (`42`, a uuid in lower case), as deletions
    /// record it; `None` when the identifier did not read as a key.
    pub fn text(&self) -> Option<String> {
        match self {
            KeyValue::Text(v) => Some(v.clone()),
            KeyValue::Integer(v) => v.map(|n| n.to_string()),
            KeyValue::Bigint(v) => v.map(|n| n.to_string()),
            KeyValue::Uuid(v) => v.map(|u| u.hyphenated().to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_an_identifier_only_when_it_has_the_key_type() {
        assert_eq!(KeyType::Bigint.key("42"), KeyValue::Bigint(Some(42)));
        assert_eq!(KeyType::Bigint.key("cust_42"), KeyValue::Bigint(None));
        assert_eq!(KeyType::Integer.key("99999999999"), KeyValue::Integer(None));
        assert_eq!(KeyType::Uuid.key("nope"), KeyValue::Uuid(None));
        assert_eq!(KeyType::Text.key("x"), KeyValue::Text("x".into()));
    }

    #[test]
    fn an_identifier_reads_as_a_lookup_type_as_postgresql_writes_it() {
        assert_eq!(LookupType::Bigint.normalize("+0042").as_deref(), Some("42"));
        assert_eq!(LookupType::Bigint.normalize("-7").as_deref(), Some("-7"));
        assert_eq!(LookupType::Bigint.normalize("99999999999999999999"), None);
        assert_eq!(LookupType::Integer.normalize("2147483648"), None);
        assert_eq!(LookupType::Integer.normalize(" 1"), None);
        assert_eq!(LookupType::Integer.normalize("+"), None);
        let canonical = Some("a1b2c3d4-0000-4000-8000-000000000001");
        assert_eq!(
            LookupType::Uuid
                .normalize("A1B2C3D4000040008000000000000001")
                .as_deref(),
            canonical
        );
        assert_eq!(
            LookupType::Uuid
                .normalize("a1b2c3d4-0000-4000-8000-000000000001")
                .as_deref(),
            canonical
        );
        assert_eq!(
            LookupType::Uuid.normalize("{a1b2c3d4-0000-4000-8000-000000000001}"),
            None
        );
        assert_eq!(LookupType::Uuid.normalize("a1b2c3d4-0000"), None);
        assert_eq!(LookupType::Text.normalize(" x ").as_deref(), Some(" x "));
        let citext = Lookup {
            value_type: LookupType::Citext("citext".into()),
            ..Lookup::new("email", false)
        };
        assert!(citext.folds() && !Lookup::new("email", false).folds());
    }
}
