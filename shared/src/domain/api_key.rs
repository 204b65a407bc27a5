//! API keys: random, shown once, stored only as a SHA-256 hash.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

const PREFIX: &str = "mk_";
const RANDOM_BYTES: usize = 32;

/// The plain key. It exists only between generation and the one response that shows it.
pub struct PlainApiKey(String);

impl PlainApiKey {
    pub fn generate() -> PlainApiKey {
        let mut bytes = [0u8; RANDOM_BYTES];
        rand::rng().fill_bytes(&mut bytes);
        PlainApiKey(format!("{PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    /// A key issued elsewhere (an import from another system, fixed example keys).
    pub fn from_existing(key: String) -> Option<PlainApiKey> {
        bearer_key(&format!("Bearer {key}"))
            .is_some()
            .then_some(PlainApiKey(key))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn hash(&self) -> KeyHash {
        KeyHash::of(&self.0)
    }
}

impl std::fmt::Debug for PlainApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainApiKey(<redacted>)")
    }
}

/// Hex SHA-256 of a presented key. Looking keys up by their hash means no comparison of the
/// secret itself ever happens, so nothing about it can leak through timing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KeyHash(String);

impl KeyHash {
    pub fn of(presented: &str) -> KeyHash {
        KeyHash(hex::encode(Sha256::digest(presented.as_bytes())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_stored(hex: String) -> KeyHash {
        KeyHash(hex)
    }
}

/// Pulls the key out of `Authorization: Bearer <key>`; `None` for any other shape.
pub fn bearer_key(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = rest.trim();
    let well_formed = key.starts_with(PREFIX)
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    well_formed.then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_distinct_and_prefixed() {
        let a = PlainApiKey::generate();
        let b = PlainApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("mk_"));
        assert!(a.expose().len() > 40);
    }

    #[test]
    fn the_hash_is_hex_sha256_of_the_key() {
        assert_eq!(
            KeyHash::of("abc").as_str(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn bearer_keys_are_read_only_from_the_bearer_scheme() {
        assert_eq!(bearer_key("Bearer mk_abc"), Some("mk_abc"));
        assert_eq!(bearer_key("bearer mk_abc"), Some("mk_abc"));
        assert_eq!(bearer_key("Basic mk_abc"), None);
        assert_eq!(bearer_key("Bearer"), None);
        assert_eq!(bearer_key("Bearer not-a-key"), None);
        assert_eq!(bearer_key("Bearer mk_a b"), None);
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let key = PlainApiKey::generate();
        assert!(!format!("{key:?}").contains(key.expose()));
    }
}
