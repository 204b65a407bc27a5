//! API keys: random, shown once, stored only as a SHA-256 hash.
//!
//! Keys issued now are `mk_live_` + 43 base62 characters of randomness (256 bits) + a 6-character
//! base62 CRC32 of those 43 characters (GitHub's token format): a secret scanner finds them
//! with [`SCANNER_REGEX`] and drops look-alikes by the checksum, offline
//! (`muchaw-admin api-key verify`). Keys issued before (`mk_` + base64url of 32 bytes) and keys
//! imported with [`PlainApiKey::from_existing`] keep working: authentication looks a key up by
//! its hash, whatever its format.

use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// Every key authentication accepts starts with this.
const PREFIX: &str = "mk_";
/// Keys issued now start with this.
pub const CHECKSUMMED_PREFIX: &str = "mk_live_";
const RANDOM_CHARS: usize = 43;
const CHECKSUM_CHARS: usize = 6;
/// The length of a key issued now.
pub const CHECKSUMMED_LENGTH: usize = CHECKSUMMED_PREFIX.len() + RANDOM_CHARS + CHECKSUM_CHARS;
/// What secret scanners match (then confirm with the checksum): documented in docs/SECURITY.md.
pub const SCANNER_REGEX: &str = r"\bmk_live_[0-9A-Za-z]{49}\b";

/// The plain key. It exists only between generation and the one response that shows it.
pub struct PlainApiKey(String);

impl PlainApiKey {
    pub fn generate() -> PlainApiKey {
        let random: String = rand::rng()
            .sample_iter(Alphanumeric)
            .take(RANDOM_CHARS)
            .map(char::from)
            .collect();
        let checksum = checksum(&random);
        PlainApiKey(format!("{CHECKSUMMED_PREFIX}{random}{checksum}"))
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

/// CRC32 of the random part, as 6 base62 characters (62^6 > 2^32), zero-padded.
fn checksum(random: &str) -> String {
    let encoded = base62::encode(crc32fast::hash(random.as_bytes()));
    format!("{encoded:0>CHECKSUM_CHARS$}")
}

/// What a key's shape says about it, without any lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyFormat {
    /// `mk_live_…` with a matching checksum: issued by this system since keys carry one.
    Checksummed,
    /// An older (or imported) `mk_` key: no checksum to check; still accepted.
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeyCheckError {
    #[error("not a Muchaw API key: keys start with mk_ and hold only letters, digits, _ and -")]
    NotAKey,
    #[error(
        "an mk_live_ key is {CHECKSUMMED_LENGTH} characters, all letters and digits after the prefix"
    )]
    Malformed,
    #[error("the checksum does not match: the key is mistyped, cut short or not one Muchaw issued")]
    BadChecksum,
}

/// Checks a key's shape and checksum offline. Never includes the key in its answer.
pub fn check_key(key: &str) -> Result<KeyFormat, KeyCheckError> {
    if let Some(rest) = key.strip_prefix(CHECKSUMMED_PREFIX) {
        if key.len() != CHECKSUMMED_LENGTH || !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(KeyCheckError::Malformed);
        }
        let (random, sum) = rest.split_at(RANDOM_CHARS);
        return if checksum(random) == sum {
            Ok(KeyFormat::Checksummed)
        } else {
            Err(KeyCheckError::BadChecksum)
        };
    }
    if well_formed(key) {
        Ok(KeyFormat::Legacy)
    } else {
        Err(KeyCheckError::NotAKey)
    }
}

fn well_formed(key: &str) -> bool {
    key.starts_with(PREFIX)
        && key.len() <= 128
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// What a key may do: `read` keys only read (`GET`), `write` keys do everything. Keys stored
/// before scopes existed carry none and are `write`, as they always were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyScope {
    Read,
    #[default]
    Write,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a key's scope is read or write, not {0:?}")]
pub struct UnknownScope(pub String);

impl KeyScope {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyScope::Read => "read",
            KeyScope::Write => "write",
        }
    }

    /// The scope as stored; absent (a key from before scopes) is `write`.
    pub fn from_stored(stored: Option<&str>) -> Result<KeyScope, UnknownScope> {
        stored.map_or(Ok(KeyScope::Write), str::parse)
    }

    /// Whether a request with this method is within the scope: a read key may only make
    /// requests that change nothing.
    pub fn allows(self, method: &http::Method) -> bool {
        match self {
            KeyScope::Write => true,
            KeyScope::Read => matches!(*method, http::Method::GET | http::Method::HEAD),
        }
    }
}

impl std::str::FromStr for KeyScope {
    type Err = UnknownScope;

    fn from_str(text: &str) -> Result<KeyScope, UnknownScope> {
        match text {
            "read" => Ok(KeyScope::Read),
            "write" => Ok(KeyScope::Write),
            other => Err(UnknownScope(other.to_string())),
        }
    }
}

impl std::fmt::Display for KeyScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The start of the hour a key was last used in (unix seconds): last use is kept to the hour
/// so that recording it costs one write per key per hour, not one per request.
pub fn use_hour(at: chrono::DateTime<chrono::Utc>) -> i64 {
    let seconds = at.timestamp();
    seconds - seconds.rem_euclid(3_600)
}

/// Pulls the key out of `Authorization: Bearer <key>`; `None` for any other shape.
pub fn bearer_key(header: &str) -> Option<&str> {
    let (scheme, rest) = header.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = rest.trim();
    well_formed(key).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_stored_without_a_scope_is_a_write_key() {
        assert_eq!(KeyScope::from_stored(None), Ok(KeyScope::Write));
        assert_eq!(KeyScope::from_stored(Some("read")), Ok(KeyScope::Read));
        assert!(KeyScope::from_stored(Some("admin")).is_err());
    }

    #[test]
    fn a_read_key_allows_only_get_and_head() {
        use http::Method;
        assert!(KeyScope::Read.allows(&Method::GET));
        assert!(KeyScope::Read.allows(&Method::HEAD));
        for method in [Method::POST, Method::DELETE, Method::PATCH, Method::PUT] {
            assert!(!KeyScope::Read.allows(&method), "{method}");
            assert!(KeyScope::Write.allows(&method), "{method}");
        }
    }

    #[test]
    fn last_use_is_rounded_down_to_the_hour() {
        let at = crate::domain::time::parse("2026-03-01T10:59:59.999Z").unwrap();
        assert_eq!(
            use_hour(at),
            crate::domain::time::parse("2026-03-01T10:00:00Z")
                .unwrap()
                .timestamp()
        );
    }

    #[test]
    fn generated_keys_are_distinct_and_prefixed() {
        let a = PlainApiKey::generate();
        let b = PlainApiKey::generate();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().starts_with("mk_live_"));
        assert_eq!(a.expose().len(), CHECKSUMMED_LENGTH);
    }

    #[test]
    fn a_generated_key_passes_its_checksum_and_the_bearer_check() {
        for _ in 0..200 {
            let key = PlainApiKey::generate();
            assert_eq!(check_key(key.expose()), Ok(KeyFormat::Checksummed));
            let header = format!("Bearer {}", key.expose());
            assert_eq!(bearer_key(&header), Some(key.expose()));
        }
    }

    #[test]
    fn a_key_with_one_character_changed_fails_its_checksum() {
        // Given a valid key
        let key = PlainApiKey::generate().expose().to_string();
        // When any one character after the prefix is changed
        for i in CHECKSUMMED_PREFIX.len()..key.len() {
            let mut bytes = key.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            // Then the checksum catches it
            assert_eq!(check_key(&typo), Err(KeyCheckError::BadChecksum), "at {i}");
        }
    }

    #[test]
    fn a_cut_or_non_base62_checksummed_key_is_malformed() {
        let key = PlainApiKey::generate().expose().to_string();
        assert_eq!(
            check_key(&key[..key.len() - 1]),
            Err(KeyCheckError::Malformed)
        );
        let dashed = format!("{}-{}", &key[..20], &key[21..]);
        assert_eq!(check_key(&dashed), Err(KeyCheckError::Malformed));
    }

    #[test]
    fn old_format_keys_are_legacy_and_other_strings_are_not_keys() {
        let legacy = "mk_0A7yb3x-Qz_Lw9fT2pVn5uK8sHd4cJe6gRiMoXaYtBl";
        assert_eq!(check_key(legacy), Ok(KeyFormat::Legacy));
        assert!(PlainApiKey::from_existing(legacy.into()).is_some());
        assert_eq!(check_key("ghp_abc"), Err(KeyCheckError::NotAKey));
        assert_eq!(check_key("mk_a b"), Err(KeyCheckError::NotAKey));
    }

    #[test]
    fn the_scanner_regex_finds_new_keys_and_no_old_or_longer_tokens() {
        use base64::Engine;
        let scanner = regex::Regex::new(SCANNER_REGEX).unwrap();
        // Given a new key pasted into a config file
        let key = PlainApiKey::generate();
        let text = format!("MUCHAW_API_KEY={}\nOTHER=1\n", key.expose());
        // Then the scanner finds exactly it
        let found: Vec<&str> = scanner.find_iter(&text).map(|m| m.as_str()).collect();
        assert_eq!(found, [key.expose()]);
        // and nothing in old-format keys, the example key, or a longer token
        for _ in 0..1000 {
            let mut bytes = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rng(), &mut bytes);
            let old = format!(
                "mk_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
            );
            assert!(!scanner.is_match(&old), "{old}");
        }
        assert!(!scanner.is_match("mk_example_local_key_0000000000000000000000000000"));
        assert!(!scanner.is_match(&format!("{}X", key.expose())));
        assert!(!scanner.is_match(&format!("x{}", key.expose())));
    }

    #[test]
    fn the_checksum_is_six_base62_characters_even_for_small_crcs() {
        // "A" has CRC32 0xD3D99E8B; the empty string has CRC32 0, which pads to "000000".
        assert_eq!(checksum(""), "000000");
        let sum = checksum("A");
        assert_eq!(sum.len(), 6);
        assert!(sum.bytes().all(|b| b.is_ascii_alphanumeric()));
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
