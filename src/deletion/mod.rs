//! The deletion object: the record of one erasure request, as compliance staff and auditors
//! see it (modelled on Voucherify's permanent-deletion object).
//!
//! - this file: the object, its states and error keys, its ids and its due date;
//! - [`store`]: every read and write of `erasure.deletions` but the end of a deletion;
//! - [`completer`]: the end of a deletion (outside the erasure statement), written with its
//!   audit row and what it owes, in one place;
//! - [`audit`]: the append-only audit trail, `erasure.audit_log`;
//! - [`claims`]: the customers chunked erasures hold, `erasure.claims`;
//! - [`statement`]: what the erasure statement writes to both, as SQL fragments;
//! - [`owed`]: what a written deletion owes (its event, its request message, its check after
//!   commit), claimed in batches;
//! - [`lifecycle`]: holding a request for the grace period, and canceling it;
//! - [`deadlines`]: what is owed and overdue, due soon or done late, and extending a deadline,
//!   with the notes that give staff's reasons;
//! - [`report`]: what the console shows of them;
//! - [`ledger`]: final deletions as the ledger kept outside the database, and the
//!   suppression check;
//! - [`residue`]: what a DONE deletion's erasure left behind and what was cleared of it.

pub mod audit;
pub mod claims;
pub mod completer;
pub mod deadlines;
pub mod ledger;
pub mod lifecycle;
pub mod owed;
pub mod report;
pub mod residue;
pub mod statement;
pub mod store;

use chrono::{DateTime, Months, SecondsFormat, Utc};
use rand::Rng;
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::text_enum::text_enum;

pub use store::find;

/// The columns every query that returns a deletion object selects, in [`DeletionRow`]'s order.
pub const COLUMNS: &str = "id, request_id, related_object_id, status, data_json, already_erased, \
     error_key, error_message, requested_by, requested_at, due_at, created_at, completed_at, \
     plan_hash, scheduled_at, reason, started_at, requested_by_key_id, requested_by_key_name, \
     extended_due_at, retry_of";

/// [`COLUMNS`], what the check after commit recorded and what the erasure left behind (each a
/// primary-key lookup), for
/// queries that read deletions from `erasure.deletions` (not aliased) for people: the API's
/// answers, the console. The erasure path reads [`COLUMNS`] alone.
pub fn read_columns() -> String {
    format!(
        "{COLUMNS}, \
         (SELECT v.verified_at FROM erasure.verifications v WHERE v.deletion_id = erasure.deletions.id) AS verified_at, \
         (SELECT v.outcome FROM erasure.verifications v WHERE v.deletion_id = erasure.deletions.id) AS verification, \
         (SELECT r.record FROM erasure.residue r WHERE r.deletion_id = erasure.deletions.id) AS residue"
    )
}

text_enum! {
    /// Where a deletion stands. DONE and FAILED are final: nothing changes a final deletion.
    pub enum DeletionStatus {
        /// Accepted over HTTP, not yet taken by a worker.
        Pending = "PENDING",
        /// A worker has started on it (a redelivery was counted, or a chunked erasure began).
        InProgress = "IN_PROGRESS",
        Done = "DONE",
        Failed = "FAILED",
        /// Withdrawn while PENDING (`DELETE /v1/permanent-deletions/{id}`): nothing was erased,
        /// and a message of the request arriving later changes nothing.
        Canceled = "CANCELED",
    }
}

impl DeletionStatus {
    /// The statuses nothing changes any more.
    pub const FINAL: &'static [DeletionStatus] = &[
        DeletionStatus::Done,
        DeletionStatus::Failed,
        DeletionStatus::Canceled,
    ];
    /// The statuses a worker may still carry forward.
    pub const OPEN: &'static [DeletionStatus] =
        &[DeletionStatus::Pending, DeletionStatus::InProgress];

    pub fn is_final(self) -> bool {
        Self::FINAL.contains(&self)
    }
}

text_enum! {
    /// Why a deletion FAILED.
    pub enum ErrorKey {
        /// No customer has the identifier, and none was erased under it before.
        NotFound = "not_found",
        /// A guard of the plan holds (an order in status OPEN, say): nothing was changed.
        Conflict = "conflict",
        /// The message was not a valid request.
        InvalidRequest = "invalid_request",
        /// The erasure could not be carried out (an error that will not pass, retries run out,
        /// a poison message).
        Internal = "internal",
        /// The schema refused what the plan asked, and will again: a constraint the plan does
        /// not cover (a table referencing the customer's rows without a step, a fixed value on
        /// a unique column, a null for a column that cannot be null). The message names the
        /// constraint and the change to the plan that covers it.
        PlanGap = "plan_gap",
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DeletionRow {
    pub id: String,
    pub request_id: Uuid,
    pub related_object_id: Option<String>,
    pub status: DeletionStatus,
    pub data_json: Value,
    pub already_erased: bool,
    pub error_key: Option<ErrorKey>,
    pub error_message: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub due_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The hash of the plan the deletion applied ([`crate::plan::Plan::hash`]).
    pub plan_hash: Option<String>,
    /// With a grace period: when the request may be carried out.
    pub scheduled_at: Option<DateTime<Utc>>,
    /// Why it was asked, as the caller said (the console shows it).
    pub reason: Option<String>,
    /// When the service started carrying it out (the erasing transaction's start).
    pub started_at: Option<DateTime<Utc>>,
    /// The API key that submitted it (over the API or the console); none from the queue, the
    /// command line or a ledger replay.
    pub requested_by_key_id: Option<String>,
    pub requested_by_key_name: Option<String>,
    /// The deadline as extended (GDPR Art. 12(3)), when it was.
    pub extended_due_at: Option<DateTime<Utc>>,
    /// The FAILED deletion this request tries again, when it is a retry.
    pub retry_of: Option<String>,
    /// What the check after commit recorded, where the query read it ([`read_columns`]).
    #[sqlx(default)]
    pub verified_at: Option<DateTime<Utc>>,
    #[sqlx(default)]
    pub verification: Option<Value>,
    /// What the erasure left behind, as recorded after it ([`residue`]), where the query read
    /// it.
    #[sqlx(default)]
    pub residue: Option<Value>,
}

text_enum! {
    /// What the check after commit found of a DONE deletion's customer.
    pub enum VerificationOutcome {
        /// Not run yet (it runs in the background, seconds after the commit).
        Pending = "pending",
        /// Nothing of the customer is left where the plan erases.
        Passed = "passed",
        /// Something is left: the tables are named.
        Failed = "failed",
        /// Only DONE deletions erased anything to check.
        NotApplicable = "not_applicable",
    }
}

/// The check after commit, as receipts show it.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct Verification {
    pub outcome: VerificationOutcome,
    pub verified_at: Option<String>,
    /// The tables where something of the customer was found left.
    pub failed_tables: Vec<String>,
}

impl DeletionRow {
    /// What the check after commit found: pending until it ran (or where the query did not
    /// read it); not applicable unless DONE.
    pub fn verification(&self) -> Verification {
        let recorded = self.verified_at.zip(self.verification.clone());
        let recorded = recorded.as_ref();
        let outcome = match (self.status, recorded) {
            (DeletionStatus::Done, None) => VerificationOutcome::Pending,
            (DeletionStatus::Done, Some((_, v))) => {
                match v.get("outcome").and_then(Value::as_str) {
                    Some("passed") => VerificationOutcome::Passed,
                    _ => VerificationOutcome::Failed,
                }
            }
            _ => VerificationOutcome::NotApplicable,
        };
        let failed_tables = recorded
            .and_then(|(_, v)| v.get("tables"))
            .and_then(Value::as_array)
            .map(|tables| {
                tables
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        Verification {
            outcome,
            verified_at: recorded.map(|(at, _)| millis(*at)),
            failed_tables,
        }
    }

    pub fn is_final(&self) -> bool {
        self.status.is_final()
    }

    /// The deadline as it stands: extended, or one month after the request was asked.
    pub fn effective_due(&self) -> DateTime<Utc> {
        self.extended_due_at.unwrap_or(self.due_at)
    }

    /// The API key that submitted the request, if one did.
    pub fn requested_by_key(&self) -> Option<KeyRef> {
        Some(KeyRef {
            id: self.requested_by_key_id.clone()?,
            name: self.requested_by_key_name.clone()?,
        })
    }

    /// What the erasure left behind, as recorded after it; until then (or where the query did
    /// not read it), pending: `recorded_at` null and no classes.
    pub fn residue(&self) -> Value {
        self.residue.clone().unwrap_or_else(|| {
            serde_json::json!({
                "recorded_at": null,
                "committed_at": self.completed_at.map(millis),
                "classes": {},
            })
        })
    }

    /// The public shape; `count_keys` orders `data_json` (every key present, 0 when absent).
    pub fn to_object(&self, count_keys: &[String]) -> DeletionObject {
        let mut counts = Map::new();
        for key in count_keys {
            let n = self.data_json.get(key).and_then(Value::as_i64).unwrap_or(0);
            counts.insert(key.clone(), Value::from(n));
        }
        // Keys recorded under an earlier plan stay visible.
        if let Some(recorded) = self.data_json.as_object() {
            for (key, value) in recorded {
                if !counts.contains_key(key) {
                    counts.insert(key.clone(), value.clone());
                }
            }
        }
        DeletionObject {
            id: self.id.clone(),
            object: "permanent_deletion".into(),
            request_id: self.request_id,
            related_object: "customer".into(),
            related_object_id: self.related_object_id.clone(),
            status: self.status,
            created_at: millis(self.created_at),
            completed_at: self.completed_at.map(millis),
            requested_by: self.requested_by.clone(),
            requested_at: auto(self.requested_at),
            due_at: auto(self.due_at),
            data_json: Value::Object(counts),
            already_erased: self.already_erased,
            scheduled_at: self.scheduled_at.map(millis),
            requested_by_key: self.requested_by_key(),
            extended_due_at: self.extended_due_at.map(auto),
            retry_of: self.retry_of.clone(),
            verification: (self.status == DeletionStatus::Done).then(|| self.verification()),
            residue: (self.status == DeletionStatus::Done).then(|| self.residue()),
            error: self.error_key.map(|key| ErrorObject {
                key,
                message: self.error_message.clone().unwrap_or_default(),
            }),
        }
    }
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct DeletionObject {
    pub id: String,
    pub object: String,
    pub request_id: Uuid,
    pub related_object: String,
    pub related_object_id: Option<String>,
    pub status: DeletionStatus,
    pub created_at: String,
    pub completed_at: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: String,
    pub due_at: String,
    pub data_json: Value,
    pub already_erased: bool,
    /// With a grace period: when the request may be carried out; null without one.
    pub scheduled_at: Option<String>,
    /// The API key that submitted the request (over the API or the console); null for one from
    /// the queue or the command line.
    pub requested_by_key: Option<KeyRef>,
    /// The deadline as extended (at most three months after `requested_at`, GDPR Art. 12(3));
    /// null unless it was. `due_at` stays one month after `requested_at`.
    pub extended_due_at: Option<String>,
    /// The deletion id of the FAILED request this one tries again; null unless it is a retry.
    pub retry_of: Option<String>,
    /// For a DONE deletion, what the check after commit found; null otherwise.
    pub verification: Option<Verification>,
    /// For a DONE deletion, what its erasure left behind and what was cleared of it; null
    /// otherwise.
    #[serde(default)]
    pub residue: Option<Value>,
    pub error: Option<ErrorObject>,
}

/// An API key as the records name it: its id, and its name when it acted.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct KeyRef {
    pub id: String,
    pub name: String,
}

#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct ErrorObject {
    pub key: ErrorKey,
    pub message: String,
}

pub fn millis(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Whole seconds stay whole ("2026-11-23T09:30:00Z"), as requests usually give them.
pub fn auto(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// A new deletion id: `del_` and 24 base62 characters (about 143 random bits).
pub fn new_id() -> String {
    format!("del_{}", random_base62(24))
}

/// `len` random base62 characters from the operating system's generator.
pub fn random_base62(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// One calendar month after `requested_at` (GDPR Art. 12(3)); the 31st of January gives the
/// last day of February.
pub fn due_at(requested_at: DateTime<Utc>) -> DateTime<Utc> {
    requested_at
        .checked_add_months(Months::new(1))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn due_at_is_one_calendar_month_later() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
        assert_eq!(auto(due_at(at)), "2026-12-23T09:30:00Z");
        let end_of_january = Utc.with_ymd_and_hms(2027, 1, 31, 12, 0, 0).unwrap();
        assert_eq!(auto(due_at(end_of_january)), "2027-02-28T12:00:00Z");
    }

    #[test]
    fn final_and_open_statuses_split_them_all() {
        for status in DeletionStatus::ALL {
            assert_ne!(
                DeletionStatus::FINAL.contains(status),
                DeletionStatus::OPEN.contains(status),
                "{status}"
            );
        }
        assert_eq!(
            DeletionStatus::sql_list(DeletionStatus::FINAL),
            "('DONE', 'FAILED', 'CANCELED')"
        );
    }

    fn row(status: DeletionStatus, data_json: Value) -> DeletionRow {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 9, 30, 0).unwrap();
        DeletionRow {
            id: "del_x".into(),
            request_id: Uuid::nil(),
            related_object_id: Some("cust_1".into()),
            status,
            data_json,
            already_erased: false,
            error_key: None,
            error_message: None,
            requested_by: Some("crm".into()),
            requested_at: at,
            due_at: due_at(at),
            created_at: at,
            completed_at: Some(at),
            plan_hash: None,
            scheduled_at: None,
            reason: None,
            started_at: None,
            requested_by_key_id: None,
            requested_by_key_name: None,
            extended_due_at: None,
            retry_of: None,
            verified_at: None,
            verification: None,
            residue: None,
        }
    }

    #[test]
    fn counts_name_every_table_of_the_plan_in_its_order_and_keep_those_of_an_earlier_plan() {
        let recorded = row(
            DeletionStatus::Done,
            serde_json::json!({"events": 3, "notes": 2}),
        );
        let object = recorded.to_object(&["orders".into(), "events".into(), "customer".into()]);
        assert_eq!(
            object.data_json,
            serde_json::json!({"orders": 0, "events": 3, "customer": 0, "notes": 2})
        );
        let keys: Vec<&str> = object
            .data_json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, ["orders", "events", "customer", "notes"]);
    }

    #[test]
    fn ids_have_the_documented_shape() {
        let id = new_id();
        assert_eq!(id.len(), 28);
        assert!(id.starts_with("del_"));
        assert!(id[4..].chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(id, new_id());
    }
}
