//! The key receipts and audit seals are signed with (Ed25519), and the public keys that check
//! them.
//!
//! The signing key comes from the configuration (`proof.signing_key`, or a file named by
//! `proof.signing_key_file`): 32 random bytes, base64 or hex, as `erasure receipt new-key`
//! prints them. Its public half is recorded in `erasure.signing_keys`, where every key that ever
//! signed stays, so that receipts signed before a rotation still check. Without a configured
//! key, the service generates one once and keeps it in that table: receipts then work out of the
//! box, but whoever can read the database can sign with it, which is why a deployment should
//! configure its own (see the README, "Proving an erasure").
//!
//! A key's id is its RFC 7638 thumbprint, so that anyone holding the public key can compute it.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::config::ProofSettings;

/// The key this service signs with, and its id.
#[derive(Clone)]
pub struct Signer {
    key: SigningKey,
    id: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("id", &self.id).finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the signing key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "the signing key must be 32 bytes in base64 or hex (as `erasure receipt new-key` prints)"
    )]
    Malformed,
    #[error("cannot record the signing key: {0}")]
    Database(#[from] sqlx::Error),
}

impl Signer {
    /// A signer for the 32-byte secret `seed`.
    pub fn from_seed(seed: [u8; 32]) -> Self {
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(&key.verifying_key());
        Self { key, id }
    }

    /// A new random key.
    pub fn generate() -> Self {
        let mut seed = [0u8; 32];
        rand::fill(&mut seed);
        Self::from_seed(seed)
    }

    /// The key from `text`: 32 bytes in base64 (standard or URL-safe) or hex.
    pub fn parse(text: &str) -> Result<Self, KeyError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.chars().all(|c| c.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| KeyError::Malformed)?
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|_| KeyError::Malformed)?
        };
        let seed: [u8; 32] = bytes.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self::from_seed(seed))
    }

    /// The configured key, its public half recorded; or, with none configured, the key this
    /// installation generated (generating it the first time).
    pub async fn load(pool: &PgPool, settings: &ProofSettings) -> Result<Self, KeyError> {
        // An empty value is no value (a compose file passes an unset variable as "").
        let key = settings
            .signing_key
            .as_ref()
            .filter(|k| !k.expose().trim().is_empty());
        let file = settings
            .signing_key_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty());
        let configured = match (key, file) {
            (Some(secret), _) => Some(Self::parse(secret.expose())?),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Some(Self::parse(&text)?)
            }
            (None, None) => None,
        };
        if let Some(signer) = configured {
            sqlx::query(
                "INSERT INTO erasure.signing_keys (id, public_key) VALUES ($1, $2) \
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(&signer.id)
            .bind(signer.public_bytes().as_slice())
            .execute(pool)
            .await?;
            return Ok(signer);
        }
        let fresh = Self::generate();
        sqlx::query(
            "INSERT INTO erasure.signing_keys (id, public_key, private_key) VALUES ($1, $2, $3) \
             ON CONFLICT DO NOTHING",
        )
        .bind(&fresh.id)
        .bind(fresh.public_bytes().as_slice())
        .bind(fresh.key.to_bytes().as_slice())
        .execute(pool)
        .await?;
        let seed: Vec<u8> = sqlx::query_scalar(
            "SELECT private_key FROM erasure.signing_keys WHERE private_key IS NOT NULL",
        )
        .fetch_one(pool)
        .await?;
        let seed: [u8; 32] = seed.try_into().map_err(|_| KeyError::Malformed)?;
        Ok(Self::from_seed(seed))
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The secret, as `erasure receipt new-key` prints it (base64).
    pub fn secret_base64(&self) -> String {
        STANDARD.encode(self.key.to_bytes())
    }
}

/// A key's id: its RFC 7638 JWK thumbprint (base64url of the SHA-256 of its required members,
/// in lexicographic order, without whitespace).
pub fn key_id(key: &VerifyingKey) -> String {
    let members = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        URL_SAFE_NO_PAD.encode(key.as_bytes())
    );
    URL_SAFE_NO_PAD.encode(Sha256::digest(members.as_bytes()))
}

/// Public keys by id: what a receipt or a seal is checked against.
#[derive(Clone, Debug, Default)]
pub struct KeySet {
    keys: Vec<(String, VerifyingKey)>,
}

impl KeySet {
    /// Every key that ever signed here, oldest first.
    pub async fn published(pool: &PgPool) -> Result<Self, sqlx::Error> {
        let rows: Vec<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT id, public_key FROM erasure.signing_keys ORDER BY created_at, id",
        )
        .fetch_all(pool)
        .await?;
        let keys = rows
            .into_iter()
            .filter_map(|(id, public)| {
                let bytes: [u8; 32] = public.try_into().ok()?;
                Some((id, VerifyingKey::from_bytes(&bytes).ok()?))
            })
            .collect();
        Ok(Self { keys })
    }

    /// The keys as a JWK set (RFC 7517, Ed25519 keys as in RFC 8037).
    pub fn to_jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(id, key)| {
                json!({
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": URL_SAFE_NO_PAD.encode(key.as_bytes()),
                    "kid": id,
                    "use": "sig",
                    "alg": "EdDSA",
                })
            })
            .collect();
        json!({ "keys": keys })
    }

    /// The Ed25519 keys of a JWK set. A key whose `kid` is not its thumbprint is refused: ids
    /// are computed, never trusted.
    pub fn from_jwks(jwks: &Value) -> Result<Self, String> {
        let list = jwks
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("the key set has no \"keys\" array")?;
        let mut keys = Vec::new();
        for (i, jwk) in list.iter().enumerate() {
            let field = |name: &str| jwk.get(name).and_then(Value::as_str);
            if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
                continue;
            }
            let x = field("x").ok_or(format!("key {i} has no \"x\""))?;
            let bytes: [u8; 32] = URL_SAFE_NO_PAD
                .decode(x)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or(format!("key {i}: \"x\" is not 32 bytes of base64url"))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| format!("key {i} is not a valid Ed25519 public key"))?;
            let id = key_id(&key);
            if let Some(kid) = field("kid").filter(|kid| *kid != id) {
                return Err(format!(
                    "key {i}: its kid {kid:?} is not its thumbprint {id:?}"
                ));
            }
            keys.push((id, key));
        }
        if keys.is_empty() {
            return Err("the key set holds no Ed25519 key".into());
        }
        Ok(Self { keys })
    }

    /// A set of one key.
    pub fn of(signer: &Signer) -> Self {
        Self {
            keys: vec![(signer.id.clone(), signer.key.verifying_key())],
        }
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Checks `signature` over `message` with the key `key_id`, saying why when it fails.
    pub fn check(&self, key_id: &str, message: &[u8], signature: &[u8]) -> Result<(), String> {
        let (_, key) = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .ok_or_else(|| {
                format!(
                    "no key with id {key_id:?} in the key set (it holds {})",
                    self.ids().join(", ")
                )
            })?;
        let signature = Signature::from_slice(signature)
            .map_err(|_| "the signature is not 64 bytes".to_string())?;
        key.verify(message, &signature).map_err(|_| {
            format!(
                "the signature does not check with key {key_id:?}: what it signs was changed \
                 after signing, or another key signed it"
            )
        })
    }
}

pub fn base64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

pub fn from_base64url(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_reads_back_from_what_new_key_prints() {
        let signer = Signer::generate();
        let again = Signer::parse(&signer.secret_base64()).unwrap();
        assert_eq!(again.id(), signer.id());
        let hex: String = signer
            .key
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(Signer::parse(&hex).unwrap().id(), signer.id());
        assert!(matches!(
            Signer::parse("too short"),
            Err(KeyError::Malformed)
        ));
    }

    #[test]
    fn the_key_id_is_the_rfc_7638_thumbprint() {
        // RFC 8037, appendix A.3: the thumbprint of its example Ed25519 key.
        let x = URL_SAFE_NO_PAD
            .decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo")
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        assert_eq!(key_id(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
    }

    #[test]
    fn a_signature_checks_with_its_key_only() {
        let signer = Signer::generate();
        let other = Signer::generate();
        let signature = signer.sign(b"message");
        let set = KeySet::from_jwks(&KeySet::of(&signer).to_jwks()).unwrap();
        assert!(set.check(signer.id(), b"message", &signature).is_ok());
        let changed = set.check(signer.id(), b"massage", &signature).unwrap_err();
        assert!(changed.contains("does not check"), "{changed}");
        let unknown = set.check(other.id(), b"message", &other.sign(b"message"));
        assert!(unknown.unwrap_err().contains("no key with id"));
    }

    #[test]
    fn a_key_set_with_a_wrong_kid_is_refused() {
        let mut jwks = KeySet::of(&Signer::generate()).to_jwks();
        jwks["keys"][0]["kid"] = "forged".into();
        assert!(KeySet::from_jwks(&jwks).unwrap_err().contains("thumbprint"));
    }
}
