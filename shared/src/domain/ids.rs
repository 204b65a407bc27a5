use std::fmt;

use serde::{Deserialize, Serialize};

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
    /// cuid2: opaque, URL-safe, collision-resistant; never derived from the phone or account.
    pub fn generate() -> Self {
        Self(cuid2::create_id())
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
        Self(format!("acc_{}", cuid2::create_id()))
    }
}

impl ApiKeyId {
    pub fn generate() -> Self {
        Self(format!("key_{}", cuid2::create_id()))
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
    fn ids_with_foreign_characters_are_not_parsed() {
        assert!(NumberId::parse("../etc").is_none());
        assert!(NumberId::parse("").is_none());
        assert!(NumberId::parse("ABC").is_none());
    }
}
