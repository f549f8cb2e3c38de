//! What proves an erasure, from the console: the signed receipt, the evidence pack (one ZIP
//! holding the receipt, the public keys that check it, the deletion's audit rows with the seals
//! that list them, and how to check it all offline) and the printable certificate of erasure.
//! A session of any key may fetch them (they are reads).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{Datelike, Timelike, Utc};
use serde_json::Value;

use super::session::Session;
use super::{Page, failed, html, internal, signed_in, views};
use crate::deletion::{DeletionRow, DeletionStatus};
use crate::http::HttpState;
use crate::proof::signing::KeySet;

/// The signed receipt of a final deletion, or the console's page saying it has none yet.
async fn receipt_of(
    state: &HttpState,
    session: &Session,
    row: &DeletionRow,
) -> Result<Value, Response> {
    crate::proof::receipt::issue(row, &state.count_keys, &state.signer, Utc::now()).ok_or_else(
        || {
            failed(
                StatusCode::CONFLICT,
                Some(session),
                "No receipt yet",
                &format!(
                    "The deletion is {}: only a final deletion has a receipt. Come back once it has ended.",
                    row.status
                ),
            )
        },
    )
}

/// `value` as indented JSON.
fn pretty(value: &Value) -> Vec<u8> {
    serde_json::to_vec_pretty(value).expect("a JSON value serializes")
}

fn download(content_type: &'static str, filename: String, body: Vec<u8>) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

/// `GET /deletions/{id}/receipt`: the signed receipt, as `GET /v1/.../receipt` answers it.
pub(super) async fn receipt(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let row = super::named_deletion(&state, &session, &id).await?;
    let receipt = receipt_of(&state, &session, &row).await?;
    Ok(download(
        "application/json",
        format!("receipt-{}.json", row.id),
        pretty(&receipt),
    ))
}

/// The public keys receipts and seals are checked against, as `GET /v1/receipt-keys` publishes
/// them.
async fn published_keys(state: &HttpState) -> Result<KeySet, sqlx::Error> {
    match &state.pinned {
        Some(pinned) => Ok(pinned.clone()),
        None => KeySet::published(&state.pool).await,
    }
}

/// `GET /deletions/{id}/evidence`: the evidence pack, a ZIP.
pub(super) async fn evidence(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let row = super::named_deletion(&state, &session, &id).await?;
    let receipt = receipt_of(&state, &session, &row).await?;
    let safe = |e: sqlx::Error| internal(crate::db::SafeError(&e));
    let keys = published_keys(&state).await.map_err(safe)?;
    let audit = crate::proof::seal::evidence(&state.pool, &row.id, row.request_id)
        .await
        .map_err(safe)?;
    let files = [
        ("receipt.json", pretty(&receipt)),
        ("receipt-keys.json", pretty(&keys.to_jwks())),
        ("audit.json", pretty(&audit)),
        (
            "HOW-TO-CHECK.txt",
            how_to_check(&row, &receipt, &audit, state.pinned.is_some()).into_bytes(),
        ),
    ];
    Ok(download(
        "application/zip",
        format!("evidence-{}.zip", row.id),
        zip(&files),
    ))
}

fn how_to_check(row: &DeletionRow, receipt: &Value, audit: &Value, pinned: bool) -> String {
    let rows = audit["rows"].as_array().map_or(0, Vec::len);
    let unsealed = audit["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|r| r["seal"].is_null())
        .count();
    let keys = if pinned {
        "receipt-keys.json is the key set this service is configured to trust (proof.trusted_keys)."
    } else {
        "receipt-keys.json holds the keys this service's own database holds: no key set was pinned \
         (proof.trusted_keys), so the check proves only that the records agree with those keys."
    };
    format!(
        "Evidence of deletion {id} ({status}), made {made}.\n\
         \n\
         receipt.json       the signed receipt: what the erasure recorded, when it was asked, done\n\
         \u{20}                  and due, the plan applied, and what the check after commit found\n\
         receipt-keys.json  the public keys (a JWK set) that check the receipt and the seals\n\
         audit.json         the deletion's {rows} audit rows, each with the signed seal that lists it\n\
         \u{20}                  ({unsealed} not sealed yet when this pack was made)\n\
         \n\
         To check it offline, on any machine with the erasure binary (no database, no network):\n\
         \n\
         \u{20}   erasure receipt verify receipt.json --key receipt-keys.json --audit audit.json\n\
         \n\
         It prints \"receipt checks: ...\" and \"audit rows check: ...\" and exits 0. It exits 1,\n\
         saying what does not fit, if any member of the receipt or any audit row was changed after\n\
         it was signed or sealed, or if another key signed it.\n\
         \n\
         A check is only as good as the keys it trusts. {keys} Compare receipt-keys.json with the key\n\
         set your organisation keeps apart from this service, or give that set as --key instead.\n\
         The receipt says where its signing key is kept (key_custody: {custody}).\n\
         \n\
         Any RFC 8785 and Ed25519 implementation can check the receipt too: remove \"signature\",\n\
         canonicalize the rest (RFC 8785), and verify the signature (base64url) with the key\n\
         \"key_id\" names. A seal signs the SHA-256 of the canonical JSON of what it says; it lists\n\
         each row's id and the SHA-256 of the row's canonical JSON.\n",
        id = row.id,
        status = row.status,
        made = crate::deletion::millis(Utc::now()),
        custody = receipt["key_custody"].as_str().unwrap_or("unknown"),
    )
}

/// `GET /deletions/{id}/certificate`: the certificate of erasure of a DONE deletion, a page to
/// print.
pub(super) async fn certificate(
    State(state): State<HttpState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Page {
    let session = signed_in(&state, &headers).await?;
    let row = super::named_deletion(&state, &session, &id).await?;
    if row.status != DeletionStatus::Done {
        return Err(failed(
            StatusCode::CONFLICT,
            Some(&session),
            "No certificate",
            &format!(
                "The deletion is {}: only a DONE deletion has a certificate of erasure.",
                row.status
            ),
        ));
    }
    let receipt = receipt_of(&state, &session, &row).await?;
    let object = state.deletion(&row);
    Ok(html(views::certificate(&session, &row, &object, &receipt)))
}

/// A ZIP archive of `files`, stored (not compressed): small JSON and text files that any
/// operating system opens.
pub fn zip(files: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let now = Utc::now();
    let time = ((now.hour() << 11) | (now.minute() << 5) | (now.second() / 2)) as u16;
    let date = (((now.year() - 1980).max(0) as u32) << 9 | now.month() << 5 | now.day()) as u16;
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in files {
        let offset = out.len() as u32;
        let crc = crc32(data);
        let size = data.len() as u32;
        let mut common = Vec::new();
        common.extend_from_slice(&20u16.to_le_bytes()); // version needed
        common.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
        common.extend_from_slice(&0u16.to_le_bytes()); // stored
        common.extend_from_slice(&time.to_le_bytes());
        common.extend_from_slice(&date.to_le_bytes());
        common.extend_from_slice(&crc.to_le_bytes());
        common.extend_from_slice(&size.to_le_bytes());
        common.extend_from_slice(&size.to_le_bytes());
        common.extend_from_slice(&(name.len() as u16).to_le_bytes());
        common.extend_from_slice(&0u16.to_le_bytes()); // extra field length
        out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
        out.extend_from_slice(&common);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(data);
        central.extend_from_slice(&0x0201_4b50u32.to_le_bytes());
        central.extend_from_slice(&20u16.to_le_bytes()); // version made by
        central.extend_from_slice(&common);
        central.extend_from_slice(&0u16.to_le_bytes()); // comment length
        central.extend_from_slice(&0u16.to_le_bytes()); // disk
        central.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
        central.extend_from_slice(&0u32.to_le_bytes()); // external attributes
        central.extend_from_slice(&offset.to_le_bytes());
        central.extend_from_slice(name.as_bytes());
    }
    let directory_at = out.len() as u32;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(files.len() as u16).to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&directory_at.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out
}

/// CRC-32 (IEEE), as ZIP needs it.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for byte in data {
        crc ^= u32::from(*byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_is_the_ieee_one() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn a_zip_lists_its_files_in_its_central_directory() {
        let archive = zip(&[("a.txt", b"hello".to_vec()), ("b.json", b"{}".to_vec())]);
        assert_eq!(&archive[..4], &0x0403_4b50u32.to_le_bytes());
        let end = archive.len() - 22;
        assert_eq!(&archive[end..end + 4], &0x0605_4b50u32.to_le_bytes());
        assert_eq!(
            u16::from_le_bytes([archive[end + 10], archive[end + 11]]),
            2
        );
        assert!(archive.windows(5).any(|w| w == b"hello"));
    }
}
