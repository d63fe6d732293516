//! Bounds and allowed characters for the values messages carry, applied when a message is
//! decoded, so a value the database, the object store or the broker cannot take is refused (or
//! made safe) before any work starts, with a precise DLQ reason instead of a failed statement.
//!
//! | value                          | rule                                           | otherwise            |
//! |--------------------------------|------------------------------------------------|----------------------|
//! | project id                     | 1 ..= 2^63-1 (a PostgreSQL `bigint`)           | `invalid_field`      |
//! | attachment and chunk ids       | 1 ..= 128 bytes of printable ASCII             | `invalid_field`      |
//! | attachment type                | 1 ..= 64 bytes of printable ASCII              | `invalid_field`      |
//! | attachments listed by an event | at most [`MAX_ATTACHMENTS_PER_EVENT`]          | `too_large`          |
//! | chunk count, chunk index       | below [`MAX_CHUNKS`]                           | `too_large`          |
//! | attachment name                | NUL and control characters removed, cut to 1024 bytes | (normalised)  |
//! | content type                   | a printable ASCII header value ≤ 255 bytes     | dropped (stored as none) |
//! | timestamps                     | years 1 ..= 9999 (`Timestamp`)                 | `invalid_field`      |
//! | JSON text (events, reports)    | `\u0000` becomes U+FFFD; numbers PostgreSQL cannot hold are rewritten | (normalised) |
//!
//! NUL in JSON text: PostgreSQL cannot store U+0000 in `jsonb` or `text`, while Sentry's SDKs
//! can send it, so an escaped NUL is replaced by U+FFFD (the replacement character), in place.
//! A number with more than [`MAX_NUMBER_CHARS`] characters or an exponent beyond ±1000 (`1e-20000`)
//! is rewritten as the nearest double (what Sentry's JSON parser reads); a number outside the
//! double range (`1e400`) cannot be read and the message is `undecodable`.

use super::dlq::{truncate_utf8, DlqReason, Rejection};

/// Longest attachment or chunk id.
pub const MAX_ID_BYTES: usize = 128;
/// Longest attachment type.
pub const MAX_ATTACHMENT_TYPE_BYTES: usize = 64;
/// Longest attachment name kept.
pub const MAX_NAME_BYTES: usize = 1024;
/// Longest content type kept.
pub const MAX_CONTENT_TYPE_BYTES: usize = 255;
/// Most attachments one event may list.
pub const MAX_ATTACHMENTS_PER_EVENT: usize = 100;
/// Chunk counts and indexes stay below this (1 TiB in Relay's 1 MiB chunks).
pub const MAX_CHUNKS: u32 = 1 << 20;
/// Longest number token kept as written in JSON text.
pub const MAX_NUMBER_CHARS: usize = 400;

crate::counter_vec!(
    fn normalised_total = "sluice_messages_normalised_total",
    "Values made safe to store when a message was decoded (NUL removed or replaced, a number rewritten, a content type dropped), by what.",
    ["what"]
);

/// Counts one normalised value.
pub fn normalised(what: &str) {
    normalised_total().with_label_values(&[what]).inc();
}

fn invalid(detail: String) -> Rejection {
    Rejection::new(DlqReason::InvalidField, detail)
}

/// A project id PostgreSQL can hold.
pub fn project_id(id: u64) -> Result<u64, Rejection> {
    if id == 0 || id > i64::MAX as u64 {
        return Err(invalid(format!("project_id {id} is out of range")));
    }
    Ok(id)
}

/// An id of 1..=`max` bytes of printable ASCII.
pub fn ascii_id(field: &str, value: &str, max: usize) -> Result<(), Rejection> {
    if value.is_empty() || value.len() > max {
        return Err(invalid(format!(
            "{field} must be 1 to {max} bytes long, not {}",
            value.len()
        )));
    }
    if let Some(b) = value.bytes().find(|b| !(0x21..=0x7e).contains(b)) {
        return Err(invalid(format!(
            "{field} {:?} holds the byte 0x{b:02x} (printable ASCII only)",
            truncate_utf8(value, 64)
        )));
    }
    Ok(())
}

/// `value` without NUL and other control characters (tab, newline and carriage return are
/// kept), cut to `max` bytes on a character boundary. `None` when nothing had to change.
pub fn clean_text(value: &str, max: usize) -> Option<String> {
    let bad = |c: char| c.is_control() && !matches!(c, '\t' | '\n' | '\r');
    if value.len() <= max && !value.chars().any(bad) {
        return None;
    }
    let cleaned: String = value.chars().filter(|c| !bad(*c)).collect();
    Some(truncate_utf8(&cleaned, max).to_owned())
}

/// Cleans `value` in place (see [`clean_text`]); returns whether it changed.
pub fn clean_in_place(value: &mut String, max: usize) -> bool {
    match clean_text(value, max) {
        Some(c) => {
            *value = c;
            true
        }
        None => false,
    }
}

/// Whether `value` can be sent as an HTTP header value and stored: printable ASCII (space
/// included), at most [`MAX_CONTENT_TYPE_BYTES`].
pub fn is_header_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CONTENT_TYPE_BYTES
        && value.bytes().all(|b| (0x20..=0x7e).contains(&b))
}

/// What [`normalise_json_text`] changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct JsonFix {
    /// Escaped NUL characters replaced by U+FFFD.
    pub nul: usize,
    /// Whether a number PostgreSQL cannot hold was found: the text must be rewritten from its
    /// parsed value.
    pub rewrite_numbers: bool,
}

/// Replaces every escaped NUL (`\u0000`) in JSON text by `\ufffd` in place (the same length),
/// and reports numbers too long or with too large an exponent for PostgreSQL. Escapes are
/// followed exactly: `\\u0000` (an escaped backslash, then text) is left alone.
pub fn normalise_json_text(bytes: &mut [u8]) -> JsonFix {
    let mut fix = JsonFix::default();
    let (mut i, mut in_string) = (0, false);
    while i < bytes.len() {
        if in_string {
            // Only a backslash or a quote matters inside a string: skip to the next one.
            match memchr::memchr2(b'\\', b'"', &bytes[i..]) {
                Some(at) => i += at,
                None => break,
            }
            match bytes[i] {
                b'\\' => {
                    if bytes.get(i + 1..i + 6) == Some(b"u0000") {
                        bytes[i + 2..i + 6].copy_from_slice(b"fffd");
                        fix.nul += 1;
                        i += 6;
                    } else {
                        i += 2;
                    }
                }
                _ => {
                    in_string = false;
                    i += 1;
                }
            }
            continue;
        }
        match bytes[i] {
            b'"' => {
                in_string = true;
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                let mut exponent_at = None;
                while i < bytes.len()
                    && matches!(bytes[i], b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
                {
                    if matches!(bytes[i], b'e' | b'E') {
                        exponent_at = Some(i + 1);
                    }
                    i += 1;
                }
                let too_long = i - start > MAX_NUMBER_CHARS;
                let big_exponent = exponent_at.is_some_and(|at| {
                    let digits: Vec<u8> = bytes[at..i]
                        .iter()
                        .copied()
                        .filter(u8::is_ascii_digit)
                        .collect();
                    let digits = std::str::from_utf8(&digits).unwrap_or("0");
                    digits.trim_start_matches('0').len() > 3
                        || digits.parse::<u32>().is_ok_and(|e| e > 1000)
                });
                fix.rewrite_numbers |= too_long || big_exponent;
            }
            _ => i += 1,
        }
    }
    fix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed(text: &str) -> (String, JsonFix) {
        let mut b = text.as_bytes().to_vec();
        let fix = normalise_json_text(&mut b);
        (String::from_utf8(b).unwrap_or_default(), fix)
    }

    #[test]
    fn nul_escapes_become_replacement_characters() {
        let (t, f) = fixed(r#"{"a":"x\u0000y","\u0000":1}"#);
        assert_eq!(t, r#"{"a":"x\ufffdy","\ufffd":1}"#);
        assert_eq!(f.nul, 2);
        let v: serde_json::Value = serde_json::from_str(&t).unwrap_or_default();
        assert_eq!(v["a"], "x\u{fffd}y");
    }

    #[test]
    fn an_escaped_backslash_before_u0000_is_text() {
        let (t, f) = fixed(r#"{"a":"\\u0000","b":"\\\u0000"}"#);
        assert_eq!(t, r#"{"a":"\\u0000","b":"\\\ufffd"}"#);
        assert_eq!(f.nul, 1);
    }

    #[test]
    fn numbers_postgres_cannot_hold_are_flagged() {
        assert!(fixed(r#"{"a":1e-20000}"#).1.rewrite_numbers);
        assert!(fixed(r#"[1E+00001001]"#).1.rewrite_numbers);
        assert!(
            fixed(&format!("[0.{}1]", "0".repeat(500)))
                .1
                .rewrite_numbers
        );
        assert!(
            !fixed(r#"{"a":1.5e-300,"b":-12,"c":"1e-20000"}"#)
                .1
                .rewrite_numbers
        );
        assert!(!fixed(r#"{"a":18446744073709551616}"#).1.rewrite_numbers);
    }

    #[test]
    fn ids_and_text() {
        assert!(ascii_id("id", "9c1d2b3a-0000-4000-8000-000000000000", 128).is_ok());
        assert!(ascii_id("id", "a\0b", 128).is_err());
        assert!(ascii_id("id", "", 128).is_err());
        assert!(ascii_id("id", &"x".repeat(129), 128).is_err());
        assert_eq!(clean_text("ok name.txt", 1024), None);
        assert_eq!(clean_text("a\0b\u{7}c\td", 1024).as_deref(), Some("abc\td"));
        assert_eq!(clean_text("ééé", 3).as_deref(), Some("é"));
        assert!(is_header_value("text/plain; charset=utf-8"));
        assert!(!is_header_value("text/plain\r\nx: y"));
        assert!(project_id(0).is_err() && project_id(u64::MAX).is_err() && project_id(1).is_ok());
    }
}
