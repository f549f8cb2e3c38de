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
}
