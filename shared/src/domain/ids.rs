use std::fmt;

use rand::Rng;
use serde::{Deserialize, Serialize};

/// How long [`random_id`]s are, and the alphabet after their first letter.
const RANDOM_ID_LENGTH: usize = 24;
const ID_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// An opaque id for something this service names (numbers, events, webhooks, links, traces):
/// 24 characters of `[a-z0-9]`, the first a letter, as the cuid2 ids written before it. Drawn
/// from the thread's CSPRNG (seeded by the OS), about 124 bits: no two ever meet, and nothing
/// of the phone, the account or the time can be read from one. Our own rather than cuid2's,
/// whose SHA-3 and big-integer code were a tenth of every function's package.
pub fn random_id() -> String {
    let mut rng = rand::rng();
    (0..RANDOM_ID_LENGTH)
        .map(|position| {
            let letters_only = if position == 0 { 26 } else { ID_ALPHABET.len() };
            char::from(ID_ALPHABET[rng.random_range(0..letters_only)])
        })
        .collect()
}

macro_rules! id_type {
    ($name:ident) => {
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<String> for $name {
            fn from(value: String) -> Self {
                Self(value)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(NumberId);
id_type!(AccountId);
id_type!(ApiKeyId);

impl NumberId {
    /// Opaque, URL-safe, collision-resistant ([`random_id`]); never derived from the phone or
    /// account.
    pub fn generate() -> Self {
        Self(random_id())
    }

    /// Ids come from URLs; anything that could not have been generated is simply not found.
    pub fn parse(text: &str) -> Option<Self> {
        let plausible = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
        plausible.then(|| Self(text.to_string()))
    }
}

impl AccountId {
    pub fn generate() -> Self {
        Self(format!("acc_{}", random_id()))
    }
}

impl ApiKeyId {
    pub fn generate() -> Self {
        Self(format!("key_{}", random_id()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_number_ids_are_url_safe_and_distinct() {
        let a = NumberId::generate();
        let b = NumberId::generate();
        assert_ne!(a, b);
        assert!(NumberId::parse(a.as_str()).is_some());
    }

    #[test]
    fn random_ids_are_24_lowercase_letters_and_digits_starting_with_a_letter() {
        for _ in 0..1_000 {
            let id = random_id();
            assert_eq!(id.len(), RANDOM_ID_LENGTH, "{id}");
            assert!(id.as_bytes()[0].is_ascii_lowercase(), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()),
                "{id}"
            );
        }
    }

    #[test]
    fn random_ids_use_the_whole_alphabet_and_do_not_repeat() {
        let ids: Vec<String> = (0..2_000).map(|_| random_id()).collect();
        let distinct: std::collections::HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        let seen: std::collections::HashSet<u8> = ids.iter().flat_map(|id| id.bytes()).collect();
        assert_eq!(seen.len(), ID_ALPHABET.len());
    }

    #[test]
    fn ids_with_foreign_characters_are_not_parsed() {
        assert!(NumberId::parse("../etc").is_none());
        assert!(NumberId::parse("").is_none());
        assert!(NumberId::parse("ABC").is_none());
    }
}
