//! The keyed hash (HMAC-SHA256) that stands in for identifiers the worker must not keep in
//! clear: source ids, and whatever identifier a request named.
//!
//! The erasure statement hashes the customer's source id inside PostgreSQL (the worker never
//! reads it), with the built-in `sha256()` and the two padded key blocks of RFC 2104 bound as
//! parameters; [`KeyedHash::sql`] writes that expression. Both sides give the same digest.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

const BLOCK: usize = 64;

#[derive(Clone)]
pub struct KeyedHash {
    key: Vec<u8>,
    inner_pad: Vec<u8>,
    outer_pad: Vec<u8>,
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash([redacted])")
    }
}

impl KeyedHash {
    pub fn new(key: &[u8]) -> Self {
        // RFC 2104: a key longer than the block is hashed first, then zero-padded.
        let mut block = if key.len() > BLOCK {
            Sha256::digest(key).to_vec()
        } else {
            key.to_vec()
        };
        block.resize(BLOCK, 0);
        Self {
            key: key.to_vec(),
            inner_pad: block.iter().map(|b| b ^ 0x36).collect(),
            outer_pad: block.iter().map(|b| b ^ 0x5c).collect(),
        }
    }

    pub fn digest(&self, value: &str) -> Vec<u8> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(value.as_bytes());
        mac.finalize().into_bytes().to_vec()
    }

    /// The padded key blocks, in the order [`KeyedHash::sql`] expects them as parameters.
    pub fn pads(&self) -> (&[u8], &[u8]) {
        (&self.inner_pad, &self.outer_pad)
    }

    /// SQL for the digest of the text expression `value`, given the parameters holding the
    /// inner and outer pads. NULL in, NULL out.
    pub fn sql(value: &str, inner_param: &str, outer_param: &str) -> String {
        format!(
            "sha256({outer_param}::bytea || sha256({inner_param}::bytea || convert_to({value}, 'UTF8')))"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_matches_rfc_4231_test_case_2() {
        let hash = KeyedHash::new(b"Jefe");
        let hex: String = hash
            .digest("what do ya want for nothing?")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn long_keys_are_hashed_into_the_block() {
        let long = vec![0xaa; 131];
        let hash = KeyedHash::new(&long);
        assert_eq!(hash.pads().0.len(), BLOCK);
        assert_ne!(hash.digest("x"), KeyedHash::new(&long[..64]).digest("x"));
    }
}
