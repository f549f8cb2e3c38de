//! The request message: reading it, and saying exactly what is wrong with one that is not valid.
//!
//! [`parse`] is the only way in: a message from the queue, a request over HTTP and `erasure
//! enqueue` all go through it, with the same limits, so whatever one intake accepts the worker
//! accepts too.
//!
//! Error messages name fields and rules, never the values: a bad message may still carry a
//! customer's identifiers, and these messages end up in logs, audit rows and deletion objects.

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use serde_json::Value;
use uuid::Uuid;

use crate::identity::{Identity, Naming};
use crate::text_enum::text_enum;

/// The largest request message accepted, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages up to this size are still read for their `request_id` when they are rejected.
const MAX_INSPECTED_BYTES: usize = 4 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq)]
pub struct ErasureRequest {
    pub request_id: Uuid,
    /// The customer's id or source id, 1 to 255 characters.
    pub customer_id: String,
    pub requested_by: String,
    pub reason: Option<String>,
    /// When the data subject asked; `None` means at receipt.
    pub requested_at: Option<DateTime<Utc>>,
    /// Which identifier `customer_id` is: `key`, or a lookup's column (`source_id`); `None`
    /// for whichever it names by the rule of [`crate::identity`].
    pub identifier_type: Option<String>,
}

text_enum! {
    /// Where a request came from, recorded on its deletion object and audit rows.
    pub enum Channel {
        /// A message from the queue.
        Amqp = "amqp",
        /// The HTTP API.
        Http = "http",
        /// `erasure` on a command line (and tests that call the engine directly).
        Cli = "cli",
        /// `erasure ledger replay`: a customer erased before, back after a backup was restored.
        Replay = "replay",
    }
}

/// A valid request as the service received it: what it asks, where it came from and when, and
/// what its identifier may be compared by (computed once, here, for every use after).
#[derive(Clone, Debug)]
pub struct Received {
    pub request: ErasureRequest,
    pub channel: Channel,
    pub received_at: DateTime<Utc>,
    /// The identifier's keyed hashes and its reading as a key ([`crate::identity`]).
    pub naming: Naming,
}

impl Received {
    /// `request` as received, or why it is not valid for this plan (an `identifier_type` that
    /// names neither the key nor a lookup).
    pub fn new(
        request: ErasureRequest,
        channel: Channel,
        received_at: DateTime<Utc>,
        identity: &Identity,
    ) -> Result<Self, InvalidRequest> {
        let kind = identity
            .identifier_type(request.identifier_type.as_deref())
            .map_err(|message| InvalidRequest {
                message,
                request_id: Some(request.request_id),
                customer_id: Some(request.customer_id.clone()),
                requested_by: Some(request.requested_by.clone()),
                requested_at: request.requested_at,
            })?;
        let naming = identity.naming(&request.customer_id, kind);
        Ok(Self {
            request,
            channel,
            received_at,
            naming,
        })
    }

    /// Keyed hash of `request.customer_id` as given: a repeat of the request id is told apart
    /// from its reuse for another customer by it, without keeping the identifier in clear.
    pub fn requested_hash(&self) -> &[u8] {
        &self.naming.requested_hash
    }

    pub fn request_id(&self) -> Uuid {
        self.request.request_id
    }

    /// When the data subject asked: as the request says, or at receipt.
    pub fn requested_at(&self) -> DateTime<Utc> {
        self.request.requested_at.unwrap_or(self.received_at)
    }
}

/// How far ahead of the receiving clock `requested_at` may be: clock skew between the upstream
/// service and us, no more. A later date would move `due_at` later than the law allows and keep
/// the request out of the overdue view.
pub const REQUESTED_AT_MAX_AHEAD: TimeDelta = TimeDelta::minutes(5);

/// The earliest `requested_at` accepted: the day the GDPR began to apply (25 May 2018). An
/// earlier date cannot be a GDPR request; it is a wrong field or a typo. A date after it but long
/// past is accepted: its `due_at` has passed and the request shows as overdue at once, which is
/// the truth about it.
pub fn requested_at_earliest() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2018, 5, 25, 0, 0, 0)
        .single()
        .expect("a valid date")
}

/// A message that is not a valid request, with whatever could still be read from it.
#[derive(Clone, Debug, PartialEq)]
pub struct InvalidRequest {
    pub message: String,
    pub request_id: Option<Uuid>,
    pub customer_id: Option<String>,
    pub requested_by: Option<String>,
    pub requested_at: Option<DateTime<Utc>>,
}

impl InvalidRequest {
    fn bare(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            request_id: None,
            customer_id: None,
            requested_by: None,
            requested_at: None,
        }
    }
}

/// Reads a request message received at `received_at` (which bounds `requested_at`).
pub fn parse(body: &[u8], received_at: DateTime<Utc>) -> Result<ErasureRequest, InvalidRequest> {
    if body.len() > MAX_INSPECTED_BYTES {
        return Err(InvalidRequest::bare(format!(
            "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
            body.len()
        )));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        InvalidRequest::bare(format!(
            "message is not valid JSON (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    let Value::Object(fields) = value else {
        return Err(InvalidRequest::bare("message is not a JSON object"));
    };

    let mut problems = Vec::new();
    let request_id = match fields.get("request_id") {
        None | Some(Value::Null) => {
            problems.push("request_id: is required".to_string());
            None
        }
        Some(Value::String(s)) => match Uuid::parse_str(s) {
            Ok(id) => Some(id),
            Err(_) => {
                problems.push("request_id: must be a UUID".to_string());
                None
            }
        },
        Some(_) => {
            problems.push("request_id: must be a string holding a UUID".to_string());
            None
        }
    };
    let customer_id = bounded_text(&fields, "customer_id", 1, 255, true, &mut problems);
    let requested_by = bounded_text(&fields, "requested_by", 1, 255, true, &mut problems);
    let reason = bounded_text(&fields, "reason", 0, 1000, false, &mut problems);
    let identifier_type = bounded_text(&fields, "identifier_type", 1, 63, false, &mut problems);
    let requested_at = match fields.get("requested_at") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => match DateTime::parse_from_rfc3339(s) {
            Ok(at) => {
                let at = at.with_timezone(&Utc);
                if at < requested_at_earliest() {
                    problems.push(
                        "requested_at: must not be before 2018-05-25T00:00:00Z, when the GDPR began to apply"
                            .to_string(),
                    );
                    None
                } else if at > received_at + REQUESTED_AT_MAX_AHEAD {
                    problems.push(format!(
                        "requested_at: must not be more than {} minutes in the future",
                        REQUESTED_AT_MAX_AHEAD.num_minutes()
                    ));
                    None
                } else {
                    Some(at)
                }
            }
            Err(_) => {
                problems.push("requested_at: must be an RFC 3339 timestamp".to_string());
                None
            }
        },
        Some(_) => {
            problems.push("requested_at: must be a string holding an RFC 3339 timestamp".into());
            None
        }
    };
    if body.len() > MAX_MESSAGE_BYTES {
        problems.insert(
            0,
            format!(
                "message is {} bytes; the limit is {MAX_MESSAGE_BYTES}",
                body.len()
            ),
        );
    }

    match (request_id, customer_id, requested_by) {
        (Some(request_id), Some(customer_id), Some(requested_by)) if problems.is_empty() => {
            Ok(ErasureRequest {
                request_id,
                customer_id,
                requested_by,
                reason,
                requested_at,
                identifier_type,
            })
        }
        (request_id, customer_id, requested_by) => Err(InvalidRequest {
            message: problems.join("; "),
            request_id,
            customer_id,
            requested_by,
            requested_at,
        }),
    }
}

/// A request from the fields a caller gave (the HTTP API's body and path, a console form, the
/// command line's arguments), read by the same parser and limits as a queued message, so that
/// every way in accepts exactly the same requests.
pub fn from_fields(
    fields: serde_json::Map<String, Value>,
    received_at: DateTime<Utc>,
) -> Result<ErasureRequest, InvalidRequest> {
    parse(
        &serde_json::to_vec(&fields).expect("a JSON object serializes"),
        received_at,
    )
}

impl ErasureRequest {
    /// The request as the message the queue carries (what [`parse`] reads back).
    pub fn to_message(&self) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "request_id": self.request_id,
            "customer_id": self.customer_id,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "requested_at": self.requested_at,
            "identifier_type": self.identifier_type,
        }))
        .expect("a request serializes")
    }
}

/// Checks an identifier a caller gives (a customer id, a deletion id, a cursor) as a request's
/// `customer_id` is checked: 1 to 255 characters, no NUL. Every identifier is checked so before
/// it reaches the database, which cannot hold a NUL in text.
pub fn check_identifier(name: &str, value: &str) -> Result<(), String> {
    let fields = serde_json::Map::from_iter([(name.to_owned(), Value::from(value))]);
    let mut problems = Vec::new();
    bounded_text(&fields, name, 1, 255, true, &mut problems);
    match problems.pop() {
        None => Ok(()),
        Some(problem) => Err(problem),
    }
}

/// A string field of `min..=max` characters without NUL (PostgreSQL text cannot hold one).
fn bounded_text(
    fields: &serde_json::Map<String, Value>,
    name: &str,
    min: usize,
    max: usize,
    required: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    match fields.get(name) {
        None | Some(Value::Null) => {
            if required {
                problems.push(format!("{name}: is required"));
            }
            None
        }
        Some(Value::String(s)) => {
            let chars = s.chars().count();
            if chars < min || chars > max {
                problems.push(format!("{name}: must be {min} to {max} characters"));
                None
            } else if s.contains('\0') {
                problems.push(format!("{name}: must not contain NUL characters"));
                None
            } else {
                Some(s.clone())
            }
        }
        Some(_) => {
            problems.push(format!("{name}: must be a string"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = r#"{"request_id":"1b4e28ba-2fa1-4d3b-a3f5-ef19b5a7633b","customer_id":"cust_8Xk2",
        "requested_by":"support-portal","reason":"GDPR Art. 17 request #4411",
        "requested_at":"2026-11-23T09:30:00Z","extra":{"ignored":true}}"#;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap()
    }

    fn parse(body: &[u8]) -> Result<ErasureRequest, InvalidRequest> {
        super::parse(body, now())
    }

    fn with_requested_at(at: &str) -> Result<ErasureRequest, InvalidRequest> {
        parse(VALID.replace("2026-11-23T09:30:00Z", at).as_bytes())
    }

    #[test]
    fn a_valid_message_is_read_and_unknown_fields_are_ignored() {
        let request = parse(VALID.as_bytes()).unwrap();
        assert_eq!(request.customer_id, "cust_8Xk2");
        assert_eq!(
            request.reason.as_deref(),
            Some("GDPR Art. 17 request #4411")
        );
        assert_eq!(
            request.requested_at.unwrap().to_rfc3339(),
            "2026-11-23T09:30:00+00:00"
        );
    }

    #[test]
    fn errors_name_fields_but_never_echo_values() {
        let body =
            r#"{"request_id":"not-a-uuid","customer_id":"jane@example.com","requested_by":""}"#;
        let err = parse(body.as_bytes()).unwrap_err();
        assert_eq!(
            err.message,
            "request_id: must be a UUID; requested_by: must be 1 to 255 characters"
        );
        assert!(!err.message.contains("jane"));
        assert_eq!(err.customer_id.as_deref(), Some("jane@example.com"));
    }

    #[test]
    fn syntax_errors_give_a_position_not_the_text() {
        let err = parse(b"{\"customer_id\": \"jane@example.com\" oops").unwrap_err();
        assert!(err.message.starts_with("message is not valid JSON (line 1"));
        assert!(!err.message.contains("jane"));
    }

    #[test]
    fn a_too_large_message_keeps_its_request_id() {
        let body = VALID.replace("GDPR Art. 17 request #4411", &"x".repeat(MAX_MESSAGE_BYTES));
        let err = parse(body.as_bytes()).unwrap_err();
        assert!(err.message.starts_with("message is "), "{}", err.message);
        assert!(err.request_id.is_some());
    }

    #[test]
    fn lengths_count_characters_and_nul_is_refused() {
        let long = "é".repeat(255);
        let body = VALID.replace("cust_8Xk2", &long);
        assert_eq!(parse(body.as_bytes()).unwrap().customer_id, long);
        let body = VALID.replace("cust_8Xk2", "cust\\u0000x");
        let err = parse(body.as_bytes()).unwrap_err();
        assert_eq!(err.message, "customer_id: must not contain NUL characters");
    }

    #[test]
    fn requested_at_is_accepted_from_the_gdpr_start_to_a_few_minutes_ahead() {
        for accepted in [
            "2018-05-25T00:00:00Z",
            "2018-05-25T02:00:00+02:00",
            "2026-11-23T10:05:00Z",
            "2026-11-23T11:05:00+01:00",
        ] {
            assert!(with_requested_at(accepted).is_ok(), "{accepted}");
        }
        for (refused, rule) in [
            ("2018-05-24T23:59:59Z", "before 2018-05-25"),
            ("2018-05-25T01:59:59+02:00", "before 2018-05-25"),
            ("0001-01-01T00:00:00Z", "before 2018-05-25"),
            ("2026-11-23T10:05:00.001Z", "in the future"),
            ("9999-12-31T23:30:00-01:00", "in the future"),
        ] {
            let err = with_requested_at(refused).unwrap_err();
            assert!(err.message.contains(rule), "{refused}: {}", err.message);
            assert!(err.request_id.is_some());
        }
    }

    #[test]
    fn identifiers_are_bounded_and_never_hold_nul() {
        assert!(check_identifier("id", "del_x").is_ok());
        assert!(check_identifier("id", "abc\0def").is_err());
        assert!(check_identifier("id", "").is_err());
        assert!(check_identifier("id", &"x".repeat(256)).is_err());
    }

    #[test]
    fn a_json_array_is_not_a_request() {
        assert_eq!(
            parse(b"[1]").unwrap_err().message,
            "message is not a JSON object"
        );
    }
}
