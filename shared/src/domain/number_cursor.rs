//! Where a page of numbers continues: the position of the last number of the page before in
//! the list order (`createdAt` descending, then id descending).

use crate::domain::time::{self, Timestamp};
use crate::domain::{Number, NumberId};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NumberCursor {
    pub created_at: Timestamp,
    pub number_id: NumberId,
}

/// The widest number id [`NumberId::parse`] takes.
const MAX_ID_CHARS: usize = 64;

impl NumberCursor {
    pub fn of(number: &Number) -> NumberCursor {
        NumberCursor {
            created_at: number.created_at,
            number_id: number.id.clone(),
        }
    }

    /// The sort key of the list order (the indexes' `{createdAt}#{id}`).
    pub fn sort_key(&self) -> String {
        format!("{}#{}", time::format(&self.created_at), self.number_id)
    }

    /// `{createdAt in unix milliseconds}.{numberId}`: plain, so the document's pattern for it
    /// (`^[0-9]{1,15}\.[a-z0-9]{1,64}$`) says exactly what [`NumberCursor::parse`] takes. It
    /// holds only a position: the account is always the caller's.
    pub fn encode(&self) -> String {
        format!("{}.{}", self.created_at.timestamp_millis(), self.number_id)
    }

    /// `None` for anything outside [`NumberCursor::encode`]'s shape.
    pub fn parse(text: &str) -> Option<NumberCursor> {
        let (millis, id) = text.split_once('.')?;
        let digits =
            !millis.is_empty() && millis.len() <= 15 && millis.bytes().all(|b| b.is_ascii_digit());
        if !digits || id.len() > MAX_ID_CHARS {
            return None;
        }
        let number_id = NumberId::parse(id)?;
        let created_at = chrono::DateTime::from_timestamp_millis(millis.parse().ok()?)?;
        Some(NumberCursor {
            created_at,
            number_id,
        })
    }
}

/// The longest `phoneNumber` taken (the document's `maxLength`).
pub const MAX_PHONE_CHARS: usize = 40;

/// The digits of a phone number as a customer types it (`+1 555-0100`, `15550100`): what the
/// display number is matched on. `None` unless it is E.164 (`+` and 1 to 15 digits) or 1 to 15
/// digits, optionally grouped by spaces, dashes, dots or parentheses.
pub fn phone_digits(text: &str) -> Option<String> {
    if text.len() > MAX_PHONE_CHARS {
        return None;
    }
    let rest = text.strip_prefix('+').unwrap_or(text);
    if !rest
        .chars()
        .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'))
    {
        return None;
    }
    let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
    (1..=15).contains(&digits.len()).then_some(digits)
}

/// The digits of a display number as Meta writes it (`+1 555-010-0100`), for its index entry.
pub fn display_digits(display_number: &str) -> Option<String> {
    let digits: String = display_number
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    (!digits.is_empty()).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_reads_back_as_it_was_written() {
        let cursor = NumberCursor {
            created_at: time::parse("2026-01-15T10:00:00.123Z").unwrap(),
            number_id: NumberId::parse("abc123").unwrap(),
        };
        assert_eq!(cursor.encode(), "1768471200123.abc123");
        assert_eq!(NumberCursor::parse(&cursor.encode()), Some(cursor));
    }

    #[test]
    fn a_malformed_cursor_is_refused() {
        for bad in [
            "",
            "abc",
            ".abc",
            "123.",
            "12a.abc",
            "123.ABC",
            "123.a-b",
            "1234567890123456.abc",
            &format!("1.{}", "a".repeat(65)),
        ] {
            assert_eq!(NumberCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn e164_and_grouped_digits_match_on_their_digits() {
        assert_eq!(phone_digits("+15550100123").as_deref(), Some("15550100123"));
        assert_eq!(phone_digits("15550100123").as_deref(), Some("15550100123"));
        assert_eq!(
            phone_digits("+1 (555) 010-0123").as_deref(),
            Some("15550100123")
        );
    }

    #[test]
    fn anything_but_a_phone_number_is_refused() {
        for bad in [
            "",
            "+",
            "abc",
            "+1555x",
            "1".repeat(16).as_str(),
            "++1555",
            "1555;",
        ] {
            assert_eq!(phone_digits(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_display_number_is_indexed_by_its_digits() {
        assert_eq!(
            display_digits("+1 555-010-0123").as_deref(),
            Some("15550100123")
        );
        assert_eq!(display_digits("n/a"), None);
    }
}
