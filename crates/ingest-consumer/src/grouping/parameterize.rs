//! Message and exception-value normalization for grouping: the first two non-empty lines, with
//! the variable parts of a message replaced by placeholders, so "Timeout after 3012 ms for
//! 10.0.0.7" and "Timeout after 2988 ms for 10.0.0.9" are one issue.
//!
//! One pass over the text; at each position the first pattern of the list below that matches
//! wins and becomes `<name>`:
//!
//! | name | example | becomes |
//! |---|---|---|
//! | email | `bob@example.com` | `<email>` |
//! | url | `https://x.io/a?b=1` | `<url>` |
//! | ip | `10.0.0.7`, `::1`, `fe80::1%eth0` | `<ip>` |
//! | traceparent | `00-<32 hex>-<16 hex>-01` | `<traceparent>` |
//! | uuid | `0b9ed5a1-6e51-4e6c-8a34-5b6f0c5e1c1d` | `<uuid>` |
//! | sha1, md5 | 40 or 32 hex digits | `<sha1>`, `<md5>` |
//! | date | `2024-05-01T10:00:00Z`, `Mon, 2 Jan 06 15:04 GMT`, `10:42:07`, `2024-05-01` | `<date>` |
//! | duration | `3012ms`, `1.5s` | `<duration>` |
//! | hex | `0xdeadbeef`, `7f3a9c0e12` (8+ hex digits with a digit) | `<hex>` |
//! | git_sha | `a1b2c3d` (7 hex, letters and digits) | `<git_sha>` |
//! | float | `3.14`, `-0.5` | `<float>` |
//! | int | `42`, `-7` (up to 7 digits; longer ones are hex) | `<int>` |
//! | quoted_str | `user='bob'` | `user=<quoted_str>` |
//! | bool | `flag=true` | `flag=<bool>` |
//!
//! Input is cut to [`MAX_INPUT_CHARS`] characters first, and the matcher's backtracking is
//! bounded: text it gives up on is used as it is (cut), never an error.

use fancy_regex::Regex;
use std::sync::LazyLock;

/// Longest text normalized, in characters: a hostile value costs a bounded amount of matching.
pub const MAX_INPUT_CHARS: usize = 2048;

/// The alternatives, in priority order (named groups; the name is the placeholder).
const PATTERNS: &[(&str, &str)] = &[
    // The local part is bounded (64 characters, as RFC 5321), so a long run of letters without
    // an `@` costs a bounded scan per position.
    (
        "email",
        r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]{1,64}@[a-zA-Z0-9-]{1,63}(?:\.[a-zA-Z0-9-]{1,63})*",
    ),
    ("url", r"\b(?:wss?|https?|ftp)://[^\s/$.?#].[^\s]*"),
    (
        "ip",
        concat!(
            r"(?<![0-9a-zA-Z_])(?:",
            r"fe80:(?::[0-9a-fA-F]{0,4}){0,4}%[0-9a-zA-Z]+",
            r"|(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}",
            r"|(?:[0-9a-fA-F]{1,4}:){1,7}:",
            r"|(?:[0-9a-fA-F]{1,4}:){1,6}:[0-9a-fA-F]{1,4}",
            r"|(?:[0-9a-fA-F]{1,4}:){1,5}(?::[0-9a-fA-F]{1,4}){1,2}",
            r"|(?:[0-9a-fA-F]{1,4}:){1,4}(?::[0-9a-fA-F]{1,4}){1,3}",
            r"|(?:[0-9a-fA-F]{1,4}:){1,3}(?::[0-9a-fA-F]{1,4}){1,4}",
            r"|(?:[0-9a-fA-F]{1,4}:){1,2}(?::[0-9a-fA-F]{1,4}){1,5}",
            r"|[0-9a-fA-F]{1,4}:(?::[0-9a-fA-F]{1,4}){1,6}",
            r"|::(?:[0-9a-fA-F]{1,4}:){0,5}[0-9a-fA-F]{1,4}",
            r"|::1\b",
            r"|::(?:ffff(?::0{1,4})?:)?(?:(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])\.){3}(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])",
            r")(?![0-9a-zA-Z])",
            r"|\b(?:(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])\.){3}(?:25[0-5]|(?:2[0-4]|1?[0-9])?[0-9])\b",
        ),
    ),
    (
        "traceparent",
        r"\b00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]\b|\b1-[0-9a-f]{8}-[0-9a-f]{24}\b",
    ),
    (
        "uuid",
        r"\b[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}\b",
    ),
    ("sha1", r"\b[0-9a-fA-F]{40}\b"),
    ("md5", r"\b[0-9a-fA-F]{32}\b"),
    (
        "date",
        concat!(
            // RFC 822 / 1123: Mon, 02 Jan 06 15:04:05 GMT
            r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d{1,2} (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{2,4} \d{2}:\d{2}(?::\d{2})? (?:[+-]\d{4}|UT|GMT|[ECMP][SD]T|[A-IK-Z])",
            // Jan 02, 2006
            r"|(?:(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{2}, \d{4}",
            // RFC 3339 and ISO 8601 date-times, with or without an offset
            r"|\d{4}-?[01]\d-?[0-3]\d[\sT][0-2]\d:?[0-5]\d(?::?[0-5]\d(?:\.\d+)?)?(?:[+-][0-2]\d:?[0-5]\d|Z)?",
            // JavaScript's Date#toString
            r"|(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{2} \d{4} \d{2}:\d{2}:\d{2} GMT[+-]\d{4}(?: \([^)]*\))?",
            // 12- and 24-hour clock times
            r"|(?<!\d)(?:[1-9]|1[0-2]):[0-5]\d(?::[0-5]\d)?(?![\d:])\s?[aApP][Mm]",
            r"|(?<!\d)(?:0?\d|1\d|2[0-3]):[0-5]\d(?::[0-5]\d)?(?![\d:])",
            r"|\d{4}-[01]\d-[0-3]\d",
            r"|datetime\.datetime\(.*?\)",
        ),
    ),
    ("duration", r"\b\d+ms\b|\b\d+(?:\.\d+)?s\b"),
    (
        "hex",
        r"\b0[xX][0-9a-fA-F]+\b|\b(?=[a-f]*[0-9])[0-9a-f]{8,128}\b|\b(?=[A-F]*[0-9])[0-9A-F]{8,128}\b",
    ),
    ("git_sha", r"\b(?=[a-f]*[0-9])(?=[0-9]*[a-f])[0-9a-f]{7}\b"),
    ("float", r"-\d+\.\d+\b|\b\d+\.\d+\b"),
    ("int", r"(?:\b|(?<!\w)-)\d{1,7}\b"),
    ("quoted_str", r#"(?<==)(?:'[^']+'|"[^"]+")"#),
    ("bool", r"(?<==)(?:True|true|False|false)\b"),
];

static MATCHER: LazyLock<Option<Regex>> = LazyLock::new(|| {
    let alternation = PATTERNS
        .iter()
        .map(|(name, p)| format!("(?P<{name}>{p})"))
        .collect::<Vec<_>>()
        .join("|");
    fancy_regex::RegexBuilder::new(&alternation)
        .backtrack_limit(200_000)
        .build()
        .map_err(|e| tracing::error!(error = %e, "grouping: the parameterization patterns do not compile"))
        .ok()
});

/// The text as grouping uses it: at most two non-empty lines (`...` appended when more was cut),
/// variable parts replaced.
pub fn normalize(text: &str) -> String {
    parameterize(&first_lines(text))
}

/// The first two lines that are not blank, joined with a newline, with `...` when that is not
/// the whole text.
pub fn first_lines(text: &str) -> String {
    let cut: String = text.chars().take(MAX_INPUT_CHARS).collect();
    let kept: Vec<&str> = cut
        .lines()
        .filter(|l| !l.trim().is_empty())
        .take(2)
        .collect();
    let joined = kept.join("\n");
    if joined == text {
        joined
    } else {
        format!("{joined}...")
    }
}

/// Replaces the variable parts of `text` (see the module docs).
pub fn parameterize(text: &str) -> String {
    let text = super::prefix(text, MAX_INPUT_CHARS);
    let Some(re) = MATCHER.as_ref() else {
        return text.to_owned();
    };
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for caps in re.captures_iter(text) {
        let Ok(caps) = caps else {
            // Backtracking limit: the rest stays as it is.
            break;
        };
        let Some(whole) = caps.get(0) else { continue };
        let Some(name) = PATTERNS
            .iter()
            .map(|(n, _)| *n)
            .find(|n| caps.name(n).is_some())
        else {
            continue;
        };
        out.push_str(&text[last..whole.start()]);
        out.push('<');
        out.push_str(name);
        out.push('>');
        last = whole.end();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_parts_become_placeholders() {
        let cases = [
            (
                "Timeout after 3012 ms for 10.0.0.7",
                "Timeout after <int> ms for <ip>",
            ),
            ("Timeout after 3012ms", "Timeout after <duration>"),
            ("took 1.5s", "took <duration>"),
            ("0.0.0.0:80", "<ip>:<int>"),
            ("user bob@example.com not found", "user <email> not found"),
            (
                "GET https://api.example.com/v1/x?id=3 failed",
                "GET <url> failed",
            ),
            (
                "order 0b9ed5a1-6e51-4e6c-8a34-5b6f0c5e1c1d missing",
                "order <uuid> missing",
            ),
            ("blob d41d8cd98f00b204e9800998ecf8427e", "blob <md5>"),
            (
                "commit da39a3ee5e6b4b0d3255bfef95601890afd80709",
                "commit <sha1>",
            ),
            ("at 0x7ffe1234", "at <hex>"),
            ("id 12345678901", "id <hex>"),
            ("deploy a1b2c3d", "deploy <git_sha>"),
            ("ratio 3.25 too high", "ratio <float> too high"),
            ("temp -7 below", "temp <int> below"),
            ("b='1'", "b=<quoted_str>"),
            ("a=true", "a=<bool>"),
            ("Bee::buzz()", "Bee::buzz()"),
            ("::1 refused", "<ip> refused"),
            ("via fe80::1%eth0 down", "via <ip> down"),
            ("at 2024-05-01T10:00:00Z", "at <date>"),
            ("at 2024-05-01 10:00:00+02:00", "at <date>"),
            ("since 2024-05-01", "since <date>"),
            ("at 10:42:07 daily", "at <date> daily"),
            ("Mon, 2 Jan 06 15:04 GMT", "<date>"),
            (
                "testing testing 1, 2, 3",
                "testing testing <int>, <int>, <int>",
            ),
            ("nothing variable here", "nothing variable here"),
        ];
        for (input, want) in cases {
            assert_eq!(parameterize(input), want, "{input}");
        }
    }

    #[test]
    fn two_non_empty_lines_are_kept() {
        assert_eq!(first_lines("a\n\nb\nc"), "a\nb...");
        assert_eq!(first_lines("foo\n"), "foo...");
        assert_eq!(first_lines("a\nb"), "a\nb");
        assert_eq!(
            normalize("got 5\n\n  \nthen 6\nmore"),
            "got <int>\nthen <int>..."
        );
    }

    #[test]
    fn long_and_hostile_input_is_bounded() {
        let started = std::time::Instant::now();
        for text in [
            "a".repeat(100_000),
            "1".repeat(100_000),
            "a@".repeat(50_000),
        ] {
            let out = parameterize(&text);
            // Cut first: a placeholder is at most 13 characters for at least one of the input.
            assert!(out.chars().count() <= 13 * MAX_INPUT_CHARS, "cut first");
        }
        // Not a timing assertion on the result: a generous bound that only a quadratic blow-up
        // on 100 kB inputs would cross.
        assert!(started.elapsed() < std::time::Duration::from_secs(30));
        let long = "1.".repeat(50_000);
        let out = normalize(&long);
        assert!(out.len() < MAX_INPUT_CHARS * 2);
        let hosts = format!("{}x", "a-".repeat(20_000));
        let _ = normalize(&hosts);
    }
}
