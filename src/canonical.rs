//! Canonical JSON (RFC 8785, the JSON Canonicalization Scheme): one byte string for one JSON
//! value, whatever the order of its keys or the spelling of its numbers, so that a signature or
//! a hash made here checks anywhere the same value is canonicalized again.

use serde::Serialize;
use sha2::{Digest, Sha256};

/// The canonical bytes of `value`.
pub fn bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serializing a value already held in memory fails only for a map with non-string keys,
    // which no caller builds.
    serde_jcs::to_vec(value).expect("a JSON value canonicalizes")
}

/// The SHA-256 of the canonical bytes of `value`.
pub fn sha256<T: Serialize + ?Sized>(value: &T) -> [u8; 32] {
    Sha256::digest(bytes(value)).into()
}

/// `sha256:` and the hex SHA-256 of `value`'s canonical bytes.
pub fn sha256_tagged<T: Serialize + ?Sized>(value: &T) -> String {
    format!("sha256:{}", hex(&sha256(value)))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_sorted_and_whitespace_dropped() {
        let a = json!({"b": 1, "a": [true, null, "x"], "c": {"z": 1.0, "y": "é"}});
        assert_eq!(
            String::from_utf8(bytes(&a)).unwrap(),
            r#"{"a":[true,null,"x"],"b":1,"c":{"y":"é","z":1}}"#
        );
    }

    #[test]
    fn equal_values_hash_alike_however_written() {
        let a: serde_json::Value = serde_json::from_str(r#"{"x": 1, "y": [1, 2]}"#).unwrap();
        let b: serde_json::Value = serde_json::from_str("{\"y\":[1,2],\n \"x\":1}").unwrap();
        assert_eq!(sha256(&a), sha256(&b));
        assert_ne!(sha256(&a), sha256(&json!({"x": 2, "y": [1, 2]})));
    }
}
