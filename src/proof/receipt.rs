//! The receipt of a final deletion: what it recorded, signed, so that anyone holding the public
//! key can check it offline, without our database.
//!
//! A receipt is a JSON object. Its `signature` is the Ed25519 signature (base64url) of the
//! canonical JSON (RFC 8785) of every other member, made with the key `key_id` names (its RFC
//! 7638 thumbprint, a key of `GET /v1/receipt-keys`). It names no person: the customer's key is
//! its only identifier, as in the deletion object.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::signed;
use super::signing::{KeySet, Signer};
use crate::deletion::{DeletionRow, auto, millis};

/// What a receipt's `object` member says.
pub const OBJECT: &str = "erasure_receipt";

/// The signed receipt of `row` (read with what the check after commit recorded of it), issued
/// at `now`; `None` while the deletion is not final.
pub fn issue(
    row: &DeletionRow,
    count_keys: &[String],
    signer: &Signer,
    now: DateTime<Utc>,
) -> Option<Value> {
    if !row.is_final() {
        return None;
    }
    let object = row.to_object(count_keys);
    let receipt = json!({
        "object": OBJECT,
        "version": 1,
        "deletion_id": row.id,
        "request_id": row.request_id,
        "related_object": "customer",
        "related_object_id": row.related_object_id,
        "status": row.status,
        "already_erased": row.already_erased,
        "error_key": row.error_key,
        "data_json": object.data_json,
        "requested_at": auto(row.requested_at),
        "created_at": millis(row.created_at),
        "completed_at": row.completed_at.map(millis),
        "due_at": auto(row.due_at),
        "plan_hash": row.plan_hash,
        "verification": row.verification(),
        // What the erasure left behind (a DONE deletion's; null otherwise). Receipts issued
        // before it was recorded, and by earlier versions, lack it or say it is pending.
        "residue": object.residue,
        "issued_at": millis(now),
        // Where the signing key is kept: "database" means whoever can read the database can
        // sign such a receipt.
        "key_custody": signer.custody().as_str(),
    });
    let Value::Object(members) = receipt else {
        unreachable!("a receipt is an object")
    };
    Some(Value::Object(signed::sign(members, signer)))
}

/// What a receipt that checks says, in short.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checked {
    pub deletion_id: String,
    pub status: String,
    pub key_id: String,
}

/// Checks `receipt` against `keys`, saying why when it does not check.
pub fn check(receipt: &Value, keys: &KeySet) -> Result<Checked, String> {
    let Value::Object(members) = receipt else {
        return Err("a receipt is a JSON object".into());
    };
    let text = |name: &str| -> Result<String, String> {
        members
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| format!("the receipt has no {name:?}"))
    };
    if members.get("object").and_then(Value::as_str) != Some(OBJECT) {
        return Err(format!("not a receipt: its \"object\" is not {OBJECT:?}"));
    }
    let key_id = signed::check(members, keys, "receipt")?;
    Ok(Checked {
        deletion_id: text("deletion_id")?,
        status: text("status")?,
        key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deletion::DeletionStatus;
    use chrono::TimeZone;

    fn row(status: DeletionStatus) -> DeletionRow {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
        DeletionRow {
            id: "del_000000000000000000000001".into(),
            request_id: uuid::Uuid::nil(),
            related_object_id: Some("cust_1".into()),
            status,
            data_json: json!({"events": 3, "customer": 1}),
            already_erased: false,
            error_key: None,
            error_message: None,
            requested_by: Some("crm".into()),
            requested_at: at,
            due_at: crate::deletion::due_at(at),
            created_at: at,
            completed_at: status.is_final().then_some(at),
            plan_hash: Some("sha256:00".into()),
            scheduled_at: None,
            reason: None,
            started_at: Some(at),
            requested_by_key_id: None,
            requested_by_key_name: None,
            extended_due_at: None,
            retry_of: None,
            verified_at: Some(at),
            verification: Some(json!({"outcome": "passed"})),
            residue: None,
        }
    }

    fn keys() -> Vec<String> {
        vec!["events".into(), "customer".into()]
    }

    /// The receipt `signer` issues now for a deletion in `status` whose check passed.
    fn receipt(status: DeletionStatus, signer: &Signer) -> Option<Value> {
        issue(&row(status), &keys(), signer, Utc::now())
    }

    #[test]
    fn a_receipt_checks_with_the_key_that_signed_it() {
        let signer = Signer::generate();
        let receipt = receipt(DeletionStatus::Done, &signer).unwrap();
        let checked = check(&receipt, &KeySet::of(&signer)).unwrap();
        assert_eq!(checked.status, "DONE");
        assert_eq!(checked.key_id, signer.id());
        assert_eq!(receipt["verification"]["outcome"], "passed");
        assert_eq!(receipt["data_json"], json!({"events": 3, "customer": 1}));
        // Key order and whitespace are not what is signed.
        let relaid: Value =
            serde_json::from_str(&serde_json::to_string_pretty(&receipt).unwrap()).unwrap();
        assert!(check(&relaid, &KeySet::of(&signer)).is_ok());
    }

    #[test]
    fn changing_any_member_breaks_the_signature() {
        let signer = Signer::generate();
        let receipt = receipt(DeletionStatus::Done, &signer).unwrap();
        for name in receipt.as_object().unwrap().keys() {
            if name == "signature" || name == "key_id" || name == "object" {
                continue;
            }
            let mut changed = receipt.clone();
            changed[name] = json!("changed");
            let why = check(&changed, &KeySet::of(&signer)).unwrap_err();
            assert!(why.contains("does not check"), "{name}: {why}");
        }
        let mut added = receipt.clone();
        added["note"] = json!("added");
        assert!(check(&added, &KeySet::of(&signer)).is_err());
    }

    #[test]
    fn another_key_or_a_forged_key_id_does_not_check() {
        let signer = Signer::generate();
        let other = Signer::generate();
        let receipt = receipt(DeletionStatus::Done, &signer).unwrap();
        let why = check(&receipt, &KeySet::of(&other)).unwrap_err();
        assert!(why.contains("no key with id"), "{why}");
        let mut claimed = receipt.clone();
        claimed["key_id"] = json!(other.id());
        let why = check(&claimed, &KeySet::of(&other)).unwrap_err();
        assert!(why.contains("does not check"), "{why}");
    }

    #[test]
    fn open_deletions_have_no_receipt() {
        let signer = Signer::generate();
        assert!(receipt(DeletionStatus::Pending, &signer).is_none());
        assert!(receipt(DeletionStatus::InProgress, &signer).is_none());
        let failed = receipt(DeletionStatus::Failed, &signer).unwrap();
        assert_eq!(failed["verification"]["outcome"], "not_applicable");
    }
}
