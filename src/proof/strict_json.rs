//! JSON read as RFC 8785 requires its input to be (I-JSON, RFC 7493): an object with the same
//! member twice, anything after the value, or a number a double cannot hold exactly is
//! refused, with the reason. A lenient reader keeps the last of two members where another keeps
//! the first, so a signed document with a repeated member could say one thing to the checker
//! and another to its reader.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// The largest integer a double holds exactly (2^53).
const EXACT: u64 = 1 << 53;

/// `text` as one JSON value, read strictly.
pub fn parse(text: &str) -> Result<Value, String> {
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let value = Strict
        .deserialize(&mut deserializer)
        .map_err(|e| e.to_string())?;
    deserializer
        .end()
        .map_err(|_| "something follows the JSON value".to_string())?;
    Ok(value)
}

struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        if v.unsigned_abs() > EXACT {
            return Err(E::custom(format!(
                "the number {v} is larger than a double holds exactly (I-JSON)"
            )));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        if v > EXACT {
            return Err(E::custom(format!(
                "the number {v} is larger than a double holds exactly (I-JSON)"
            )));
        }
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number that is not finite (I-JSON)"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Strict)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format!(
                    "the member {name:?} appears twice (I-JSON)"
                )));
            }
            let value = map.next_value_seed(Strict)?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_document_reads_as_it_is() {
        let value = parse(r#"{"a": [1, 2.5, "x", null, true], "b": {"c": -3}}"#).unwrap();
        assert_eq!(value["b"]["c"], -3);
    }

    #[test]
    fn a_member_twice_anything_after_or_an_inexact_number_is_refused() {
        let why = parse(r#"{"status": "FAILED", "status": "DONE"}"#).unwrap_err();
        assert!(why.contains("\"status\" appears twice"), "{why}");
        let why = parse(r#"{"a": {"b": 1, "b": 2}}"#).unwrap_err();
        assert!(why.contains("appears twice"), "{why}");
        let why = parse(r#"{"a": 1} {"a": 2}"#).unwrap_err();
        assert!(why.contains("follows"), "{why}");
        let why = parse(r#"{"a": 9007199254740993}"#).unwrap_err();
        assert!(why.contains("exactly"), "{why}");
        assert!(parse(r#"{"a": 9007199254740992}"#).is_ok());
        assert!(parse(r#"{"a": "\ud800"}"#).is_err());
    }
}
