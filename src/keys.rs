//! API keys for the HTTP API.
//!
//! A key reads `erk_<id>_<secret>`: the id finds the row, the secret proves possession. Only a
//! SHA-256 of the secret is stored, compared in constant time. A key is shown once, when made.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::deletion::random_base62;

const PREFIX: &str = "erk_";
const ID_LEN: usize = 12;
const SECRET_LEN: usize = 32;

/// Who a verified key belongs to.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key_id: String,
    pub name: String,
    pub read_only: bool,
}

impl Caller {
    /// The key as the records name it.
    pub fn key_ref(&self) -> crate::deletion::KeyRef {
        crate::deletion::KeyRef {
            id: self.key_id.clone(),
            name: self.name.clone(),
        }
    }
}

/// A key as listed: never its secret.
#[derive(Clone, Debug, Serialize, sqlx::FromRow)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub read_only: bool,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("a key name is 1 to 100 printable characters")]
    InvalidName,
    #[error("a live key is already named {0:?}; revoke it or choose another name")]
    NameTaken(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Makes a key; the returned string is the key itself, which is not stored.
pub async fn create(pool: &PgPool, name: &str, read_only: bool) -> Result<String, KeyError> {
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(KeyError::InvalidName);
    }
    let id = random_base62(ID_LEN);
    let secret = random_base62(SECRET_LEN);
    let inserted = sqlx::query(
        "INSERT INTO erasure.api_keys (id, name, secret_hash, read_only) VALUES ($1, $2, $3, $4)",
    )
    .bind(&id)
    .bind(name)
    .bind(hash(&secret))
    .bind(read_only)
    .execute(pool)
    .await;
    match inserted {
        Ok(_) => Ok(format!("{PREFIX}{id}_{secret}")),
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(KeyError::NameTaken(name.to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every key, live and revoked, oldest first.
pub async fn list(pool: &PgPool) -> Result<Vec<KeyInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, name, read_only, created_at, revoked_at FROM erasure.api_keys \
         ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
}

/// Revokes the live key with this id or name; false when there is none.
pub async fn revoke(pool: &PgPool, id_or_name: &str) -> Result<bool, sqlx::Error> {
    let revoked = sqlx::query(
        "UPDATE erasure.api_keys SET revoked_at = now() \
         WHERE revoked_at IS NULL AND (id = $1 OR name = $1)",
    )
    .bind(id_or_name)
    .execute(pool)
    .await?;
    Ok(revoked.rows_affected() > 0)
}

/// The caller a presented key belongs to; `None` for a malformed, unknown or revoked key.
pub async fn verify(pool: &PgPool, presented: &str) -> Result<Option<Caller>, sqlx::Error> {
    let Some((id, secret)) = split(presented) else {
        return Ok(None);
    };
    let row: Option<(String, Vec<u8>, bool)> = sqlx::query_as(
        "SELECT name, secret_hash, read_only FROM erasure.api_keys \
         WHERE id = $1 AND revoked_at IS NULL",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?;
    Ok(row.and_then(|(name, stored, read_only)| {
        bool::from(hash(secret).ct_eq(&stored)).then(|| Caller {
            key_id: id.to_owned(),
            name,
            read_only,
        })
    }))
}

fn split(presented: &str) -> Option<(&str, &str)> {
    let rest = presented.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let well_formed = |part: &str, len: usize| {
        part.len() == len && part.bytes().all(|b| b.is_ascii_alphanumeric())
    };
    (well_formed(id, ID_LEN) && well_formed(secret, SECRET_LEN)).then_some((id, secret))
}

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_keys_are_looked_up() {
        let id = "A".repeat(ID_LEN);
        let secret = "b".repeat(SECRET_LEN);
        assert_eq!(
            split(&format!("erk_{id}_{secret}")),
            Some((id.as_str(), secret.as_str()))
        );
        assert_eq!(split(&format!("erk_{id}_{secret}x")), None);
        assert_eq!(split(&format!("key_{id}_{secret}")), None);
        assert_eq!(split(&format!("erk_{id}{secret}")), None);
        assert_eq!(split(&format!("erk_{id}_{}", "é".repeat(16))), None);
        assert_eq!(split(""), None);
    }
}
