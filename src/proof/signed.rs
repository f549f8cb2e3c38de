//! Signed JSON objects, as receipts and ledger lines are: the `signature` member is the Ed25519
//! signature (base64url) of the canonical JSON (RFC 8785) of every other member, `key_id` among
//! them, made with the key `key_id` names.

use serde_json::{Map, Value};

use super::signing::{KeySet, Signer, base64url, from_base64url};
use crate::canonical;

/// `members`, with `key_id` and `signature` added.
pub fn sign(mut members: Map<String, Value>, signer: &Signer) -> Map<String, Value> {
    members.insert("key_id".into(), Value::String(signer.id().to_owned()));
    members.remove("signature");
    let signature = signer.sign(&canonical::bytes(&members));
    members.insert("signature".into(), Value::String(base64url(&signature)));
    members
}

/// Checks the signature of `members` (an object of the kind `what` names, for the messages)
/// against `keys`; the id of the key that signed it.
pub fn check(members: &Map<String, Value>, keys: &KeySet, what: &str) -> Result<String, String> {
    let text = |name: &str| -> Result<&str, String> {
        members
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("the {what} has no {name:?}"))
    };
    let signature = from_base64url(text("signature")?)
        .ok_or(format!("the {what}'s \"signature\" is not base64url"))?;
    let key_id = text("key_id")?;
    let signed: Map<String, Value> = members
        .iter()
        .filter(|(name, _)| name.as_str() != "signature")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect();
    keys.check(key_id, &canonical::bytes(&signed), &signature)?;
    Ok(key_id.to_owned())
}
