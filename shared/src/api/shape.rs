//! The shapes request fields must have, as regular expressions. `docs/openapi.yaml` uses these
//! very strings as its `pattern`s (a contract test compares them), so the document and the
//! implementation cannot disagree on what is well formed. They keep to ASCII character classes
//! and plain groups, which every regular-expression dialect (ECMA-262, Python, Rust) reads alike.

use std::sync::LazyLock;

use regex_lite::Regex;

/// Meta's numeric ids (`wabaId`, `phoneNumberId`).
pub const META_ID: &str = "^[0-9]{1,32}$";

/// The code `FB.login` returned: visible ASCII, no whitespace or control characters.
pub const SIGNUP_CODE: &str = "^[!-~]{1,2048}$";

/// A signup-link `state` token: `v1.<payload>.<signature>`, both parts base64url.
pub const SIGNUP_STATE: &str = r"^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$";
pub const MAX_STATE_LENGTH: usize = 1024;

// The parts of an `https` URL both URL shapes share: an optional port from 1 to 65535, and a
// path, query and fragment of RFC 3986 characters (anything else percent-encoded).
macro_rules! port_path_query_fragment {
    () => {
        concat!(
            r"(?::(?:[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?",
            r"(?:/(?:[A-Za-z0-9._~!$&'()*+,;=:@-]|%[0-9A-Fa-f]{2})*)*",
            r"(?:\?(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?",
            r"(?:#(?:[A-Za-z0-9._~!$&'()*+,;=:@/?-]|%[0-9A-Fa-f]{2})*)?$",
        )
    };
}

/// A webhook endpoint: an `https` URL on a DNS name of at least two labels, the last starting
/// with a letter (so never an IP address, whose reachability only resolution can tell), then
/// [`port_path_query_fragment`]. No credentials, no IPv6 literal.
pub const WEBHOOK_URL: &str = concat!(
    r"^https://(?:[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*\.)+[A-Za-z][A-Za-z0-9]*(?:-[A-Za-z0-9]+)*",
    port_path_query_fragment!(),
);

/// A signup link's `redirectUrl`: an `https` URL on any host name or IPv4 address
/// (`localhost` too, for development), then [`port_path_query_fragment`].
pub const REDIRECT_URL: &str = concat!(
    r"^https://[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*(?:\.[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*)*",
    port_path_query_fragment!(),
);
pub const MAX_URL_LENGTH: usize = 2048;

fn compiled(pattern: &'static str) -> Regex {
    Regex::new(pattern).unwrap_or_else(|e| unreachable!("{pattern} is a valid expression: {e}"))
}

static META_ID_RE: LazyLock<Regex> = LazyLock::new(|| compiled(META_ID));
static SIGNUP_CODE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SIGNUP_CODE));
static SIGNUP_STATE_RE: LazyLock<Regex> = LazyLock::new(|| compiled(SIGNUP_STATE));
static WEBHOOK_URL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(WEBHOOK_URL));
static REDIRECT_URL_RE: LazyLock<Regex> = LazyLock::new(|| compiled(REDIRECT_URL));

pub fn is_meta_id(value: &str) -> bool {
    META_ID_RE.is_match(value)
}

pub fn is_signup_code(value: &str) -> bool {
    SIGNUP_CODE_RE.is_match(value)
}

pub fn is_signup_state(value: &str) -> bool {
    value.len() <= MAX_STATE_LENGTH && SIGNUP_STATE_RE.is_match(value)
}

pub fn is_webhook_url(value: &str) -> bool {
    value.len() <= MAX_URL_LENGTH && WEBHOOK_URL_RE.is_match(value)
}

pub fn is_redirect_url(value: &str) -> bool {
    value.len() <= MAX_URL_LENGTH && REDIRECT_URL_RE.is_match(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_ids_are_one_to_32_digits() {
        assert!(is_meta_id("123456789012345"));
        assert!(is_meta_id(&"9".repeat(32)));
        for bad in ["", "12a", " 12", "12\n", &"9".repeat(33), "１２"] {
            assert!(!is_meta_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn codes_are_visible_ascii_without_whitespace() {
        assert!(is_signup_code("AQBx-_./+=~!"));
        assert!(is_signup_code(&"a".repeat(2048)));
        for bad in [
            "",
            " AQB",
            "AQB ",
            "A B",
            "\t",
            "\u{1}",
            "AQ\u{7f}",
            "é",
            &"a".repeat(2049),
        ] {
            assert!(!is_signup_code(bad), "{bad:?}");
        }
    }

    #[test]
    fn states_are_three_dot_separated_base64url_parts_starting_with_v1() {
        assert!(is_signup_state("v1.eyJhIjoiYWNjIn0.c2lnbmF0dXJl_-"));
        for bad in [
            "", "garbage", "v1.a", "v2.a.b", "v1.a.b.c", "v1.a=.b", "v1..b", "v1.a.b\n",
        ] {
            assert!(!is_signup_state(bad), "{bad:?}");
        }
        assert!(!is_signup_state(&format!("v1.{}.b", "a".repeat(1024))));
    }

    #[test]
    fn webhook_urls_need_https_a_dns_name_and_rfc_3986_characters() {
        for good in [
            "https://hooks.example.com",
            "https://hooks.example.com/",
            "https://a.b-c.io:8443/x/y?z=1&w=%20#frag",
            "https://Example.COM/path;p=1/@x:y",
            "https://x.y:65535/",
        ] {
            assert!(is_webhook_url(good), "{good}");
            assert!(is_redirect_url(good), "{good}");
        }
        for bad in [
            "",
            "http://hooks.example.com/",
            "https://localhost/",
            "https://127.0.0.1/",
            "https://10.1.2.3/x",
            "https://[::1]/",
            "https://user:pass@hooks.example.com/",
            "https://hooks.example.com:0/",
            "https://hooks.example.com:65536/",
            "https://hooks.example.com:/",
            "https://-a.example.com/",
            "https://xn--a.example.com/",
            "https://a.example.com/ space",
            "https://a.example.com/%zz",
            "https://a.example.com/x\n",
            "https://a.example.com\\x",
            "https://a.example.com/é",
        ] {
            assert!(!is_webhook_url(bad), "{bad:?}");
        }
        let long = format!("https://a.example.com/{}", "x".repeat(MAX_URL_LENGTH));
        assert!(!is_webhook_url(&long));
        assert!(!is_redirect_url(&long));
    }

    #[test]
    fn redirect_urls_may_name_any_host_or_ipv4_address_but_need_https() {
        for good in [
            "https://localhost:3000/done",
            "https://127.0.0.1/x",
            "https://app.example.com",
        ] {
            assert!(is_redirect_url(good), "{good}");
        }
        for bad in [
            "http://app.example.com/",
            "https://",
            "https://[::1]/",
            "https://u@app.example.com/",
            "https://app.example.com/a b",
            "ftp://app.example.com/",
        ] {
            assert!(!is_redirect_url(bad), "{bad:?}");
        }
    }
}
