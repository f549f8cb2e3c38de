//! Console sessions: an API key exchanged for an opaque cookie. The cookie holds 32 random
//! bytes; the database keeps only their SHA-256, with the key it was opened with, the token its
//! forms carry (CSRF), and its expiry. Every request looks the session up with its key, so a
//! revoked key ends its sessions at once.

use axum::http::HeaderMap;
use axum::http::header;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{Duration, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::keys::Caller;

/// The session cookie's name.
pub const COOKIE: &str = "erasure_session";

/// A signed-in console user.
#[derive(Clone, Debug)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    /// The lookups of the plan (their columns), by which the search box also finds requests.
    pub lookups: std::sync::Arc<[String]>,
}

impl Session {
    /// Whether `presented` is this session's form token.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(self.csrf.as_bytes().ct_eq(presented.as_bytes()))
    }
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::fill(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Opens a session for `caller`, valid for `hours`; returns the cookie's token.
pub async fn open(pool: &PgPool, caller: &Caller, hours: i64) -> Result<String, sqlx::Error> {
    let token = random_token();
    sqlx::query(
        "INSERT INTO erasure.console_sessions (token_hash, key_id, csrf_token, expires_at) \
         VALUES ($1, $2, $3, $4)",
    )
    .bind(hash(&token))
    .bind(&caller.key_id)
    .bind(random_token())
    .bind(Utc::now() + Duration::hours(hours))
    .execute(pool)
    .await?;
    // Expired sessions go as new ones come.
    sqlx::query("DELETE FROM erasure.console_sessions WHERE expires_at < now()")
        .execute(pool)
        .await?;
    Ok(token)
}

/// The live session the request's cookie names, if any: not expired, its key not revoked.
pub async fn find(pool: &PgPool, headers: &HeaderMap) -> Result<Option<Session>, sqlx::Error> {
    let Some(token) = cookie(headers) else {
        return Ok(None);
    };
    let row: Option<(String, String, bool, String)> = sqlx::query_as(
        "SELECT k.id, k.name, k.read_only, s.csrf_token FROM erasure.console_sessions s \
         JOIN erasure.api_keys k ON k.id = s.key_id \
         WHERE s.token_hash = $1 AND s.expires_at > now() AND k.revoked_at IS NULL",
    )
    .bind(hash(&token))
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(key_id, name, read_only, csrf)| Session {
        caller: Caller {
            key_id,
            name,
            read_only,
        },
        csrf,
        lookups: std::sync::Arc::from(Vec::new()),
    }))
}

/// Ends the session the request's cookie names.
pub async fn close(pool: &PgPool, headers: &HeaderMap) -> Result<(), sqlx::Error> {
    if let Some(token) = cookie(headers) {
        sqlx::query("DELETE FROM erasure.console_sessions WHERE token_hash = $1")
            .bind(hash(&token))
            .execute(pool)
            .await?;
    }
    Ok(())
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
}

/// The `Set-Cookie` value that stores `token` for `hours` (`Secure` when `secure`).
pub fn set_cookie(token: &str, hours: i64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        hours * 3600
    )
}

/// The `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}
