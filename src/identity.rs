//! Who a request names: one rule, for the queue, the HTTP API, the command line, the console,
//! the ledger replay, the "erased earlier" look, suppression and receipts.
//!
//! - An identifier that is, or was, a customer's key names that customer only. A key wins over
//!   every lookup, and keeps winning after its customer is erased: asked again, the request is
//!   `already_erased` for that customer, never a match on someone else's lookup value.
//! - A lookup (a source id, an e-mail) is consulted only for an identifier that is not and never
//!   was a key, each compared as the plan declares it: exactly, or in any case.
//! - An identifier that matches the lookups of two different customers names nobody for sure:
//!   the request is refused (FAILED `conflict`), nothing erased.
//! - A request may say which identifier it carries (`identifier_type`: `key`, or a lookup's
//!   column), which removes any doubt: only that one is compared.
//!
//! The identifier itself is never kept: what the service keeps of it are keyed hashes
//! ([`crate::keyed_hash`]), one per lookup, each tagged with its lookup's column (so that a value
//! of one lookup never matches another's) and folded to lower case only for a lookup compared
//! in any case. This module computes them; the SQL that applies the rule inside the erasure
//! statement is [`crate::plan::sql::reach::subject_matches`].

use crate::keyed_hash::KeyedHash;
use crate::subject_key::{KeyType, KeyValue, Lookup};

/// Which identifier a request carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdentifierType {
    /// Not said: the key, or else the lookups, by the rule above.
    Any,
    /// The customer's key.
    Key,
    /// The lookup at this place in the plan's `lookups`.
    Lookup(usize),
}

impl IdentifierType {
    /// The word the statement compares with each way of matching (`key` or a lookup's column),
    /// or `None` for any.
    pub fn word<'a>(&self, lookups: &'a [Lookup]) -> Option<&'a str> {
        match self {
            IdentifierType::Any => None,
            IdentifierType::Key => Some("key"),
            IdentifierType::Lookup(i) => Some(&lookups[*i].column),
        }
    }
}

/// What the service may compare an identifier by, computed once when a request is received.
#[derive(Clone, Debug)]
pub struct Naming {
    pub kind: IdentifierType,
    /// The identifier read as the subject's key (matching nothing when it does not read as one).
    pub key: KeyValue,
    /// The key as PostgreSQL writes it as text (what deletions record as `related_object_id`),
    /// when the identifier reads as a key and may be one.
    pub key_text: Option<String>,
    /// Keyed hash of the identifier exactly as given: a repeat of a request id is told apart
    /// from its reuse for another customer by it, and a request that named nobody is found by it.
    pub requested_hash: Vec<u8>,
    /// The tagged keyed hashes of the identifier for each lookup it may be (every lookup, or the
    /// one its type names): what deletions keep of the customer's lookup values.
    pub lookup_digests: Vec<Vec<u8>>,
    /// The untagged hashes (as given, and in lower case) that deletions recorded before the
    /// tagged ones kept of lookup values; compared only with those older deletions.
    pub legacy_hashes: Vec<Vec<u8>>,
}

impl Naming {
    /// Whether the lookups may be compared at all (the identifier's type allows it).
    pub fn may_be_lookup(&self) -> bool {
        self.kind != IdentifierType::Key
    }

    /// Whether the key may be compared (the identifier's type allows it, and it reads as one).
    pub fn may_be_key(&self) -> bool {
        matches!(self.kind, IdentifierType::Any | IdentifierType::Key) && self.key_text.is_some()
    }
}

/// The plan's ways of naming a customer, and the key that hashes them.
#[derive(Clone, Debug)]
pub struct Identity {
    key_type: KeyType,
    lookups: Vec<Lookup>,
    hash: KeyedHash,
}

impl Identity {
    /// For a subject whose key has type `key_type` and which requests may name by `lookups`.
    pub fn new(key_type: KeyType, lookups: Vec<Lookup>, hash: KeyedHash) -> Self {
        Self {
            key_type,
            lookups,
            hash,
        }
    }

    pub fn lookups(&self) -> &[Lookup] {
        &self.lookups
    }

    pub fn hash(&self) -> &KeyedHash {
        &self.hash
    }

    /// The type an `identifier_type` field names: `key`, or a lookup's column; an error naming
    /// what it may be otherwise.
    pub fn identifier_type(&self, word: Option<&str>) -> Result<IdentifierType, String> {
        match word {
            None => Ok(IdentifierType::Any),
            Some("key") => Ok(IdentifierType::Key),
            Some(column) => match self.lookups.iter().position(|l| l.column == column) {
                Some(i) => Ok(IdentifierType::Lookup(i)),
                None => {
                    let allowed: Vec<String> = std::iter::once("key".to_string())
                        .chain(self.lookups.iter().map(|l| l.column.clone()))
                        .collect();
                    Err(format!(
                        "identifier_type: must be one of {}",
                        allowed.join(", ")
                    ))
                }
            },
        }
    }

    /// What `identifier`, of type `kind`, may be compared by.
    pub fn naming(&self, identifier: &str, kind: IdentifierType) -> Naming {
        let key = self.key_type.key(identifier);
        let key_text = match kind {
            IdentifierType::Lookup(_) => None,
            _ => key.text(),
        };
        let lookup_digests = self
            .lookups
            .iter()
            .enumerate()
            .filter(|(i, _)| match kind {
                IdentifierType::Any => true,
                IdentifierType::Key => false,
                IdentifierType::Lookup(j) => *i == j,
            })
            .filter_map(|(_, lookup)| self.lookup_digest(lookup, identifier))
            .collect();
        let given = self.hash.digest(identifier);
        let folded = self.hash.digest(&identifier.to_lowercase());
        let legacy_hashes = if given == folded {
            vec![given.clone()]
        } else {
            vec![given.clone(), folded]
        };
        Naming {
            kind,
            key,
            key_text,
            requested_hash: given,
            lookup_digests,
            legacy_hashes,
        }
    }

    /// The tagged keyed hash of `value` as a value of `lookup`, as the erasure statement computes
    /// it in SQL ([`Identity::lookup_digest_sql`]).
    /// `None` when `value` does not read as the lookup's type (it cannot name anyone by it).
    pub fn lookup_digest(&self, lookup: &Lookup, value: &str) -> Option<Vec<u8>> {
        let value = lookup.value_type.normalize(value)?;
        let value = match lookup.folds() {
            true => value.to_lowercase(),
            false => value,
        };
        Some(self.hash.digest(&format!("{}:{value}", lookup.column)))
    }

    /// SQL for the tagged keyed hash of the text expression `value` (the column's value as
    /// text, or the identifier as the statement reads it as the column's type) as a value of
    /// `lookup`,
    /// given the parameters holding the key's pads. PostgreSQL's `lower()` and Rust's
    /// `to_lowercase()` agree on the letters people's identifiers use.
    pub fn lookup_digest_sql(lookup: &Lookup, value: &str, inner: &str, outer: &str) -> String {
        let folded = match lookup.folds() {
            true => format!("lower({value})"),
            false => value.to_owned(),
        };
        let tag = format!("{}:", lookup.column).replace('\'', "''");
        KeyedHash::sql(&format!("'{tag}' || {folded}"), inner, outer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity() -> Identity {
        let lookups = vec![Lookup::new("source_id", false), Lookup::new("email", true)];
        Identity::new(KeyType::Text, lookups, KeyedHash::new(b"k"))
    }

    #[test]
    fn a_lookup_value_hashes_apart_from_the_same_text_of_another_lookup() {
        let id = identity();
        let [source, email] = [&id.lookups[0], &id.lookups[1]];
        assert_ne!(
            id.lookup_digest(source, "x").unwrap(),
            id.lookup_digest(email, "x").unwrap()
        );
        // Exactly for a lookup compared as it is, in any case for one declared so.
        assert_ne!(
            id.lookup_digest(source, "SRC_X"),
            id.lookup_digest(source, "src_x")
        );
        assert_eq!(
            id.lookup_digest(email, "A@B.example"),
            id.lookup_digest(email, "a@b.example")
        );
    }

    #[test]
    fn the_type_of_an_identifier_narrows_what_it_is_compared_with() {
        let id = identity();
        let any = id.naming("cust_1", IdentifierType::Any);
        assert_eq!(any.lookup_digests.len(), 2);
        assert_eq!(any.key_text.as_deref(), Some("cust_1"));
        let key = id.naming("cust_1", IdentifierType::Key);
        assert!(key.lookup_digests.is_empty() && key.may_be_key());
        let email = id.naming("a@b.example", IdentifierType::Lookup(1));
        assert_eq!(email.lookup_digests.len(), 1);
        assert!(email.key_text.is_none() && !email.may_be_key());
        assert_eq!(
            id.identifier_type(Some("source_id")),
            Ok(IdentifierType::Lookup(0))
        );
        assert_eq!(
            id.identifier_type(Some("phone")).unwrap_err(),
            "identifier_type: must be one of key, source_id, email"
        );
    }
}
