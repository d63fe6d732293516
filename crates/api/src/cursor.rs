//! Sentry's cursors (`value:offset:is_prev`) and its `Link` header.
//!
//! A list is read from a position: rows whose order score is at most `value` (every row when
//! the value is 0 in an offset-only list), skipping `offset` of those. The next page's cursor
//! is the score of the page's last row with the number of rows on the page that share it, so
//! paging stays exact when rows are added at the top meanwhile.

use axum::http::HeaderValue;
use sluice_core::storage::read::Position;

/// A parsed `cursor` parameter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub value: i64,
    pub offset: i64,
    pub is_prev: bool,
}

impl Cursor {
    /// Parses `value:offset:is_prev` (Sentry's format); `None` when malformed.
    pub fn parse(s: &str) -> Option<Cursor> {
        let mut parts = s.split(':');
        let value = parts.next()?.parse::<f64>().ok()?;
        let offset = parts.next()?.parse::<i64>().ok()?;
        let is_prev = match parts.next()? {
            "0" => false,
            "1" => true,
            _ => return None,
        };
        if parts.next().is_some() || offset < 0 || !value.is_finite() {
            return None;
        }
        Some(Cursor {
            value: value as i64,
            offset,
            is_prev,
        })
    }

    /// The keyset position of a scored list (value 0 = from the top).
    pub fn position(self) -> Position {
        Position {
            score: (self.value != 0).then_some(self.value),
            offset: self.offset,
        }
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.value,
            self.offset,
            u8::from(self.is_prev)
        )
    }
}

/// The cursor after a page of scored rows read from `at`: the last row's score and how many
/// rows of the page share it (plus the skipped ones when the score did not change).
pub fn next_scored(at: Position, scores: &[i64]) -> Cursor {
    let Some(&last) = scores.last() else {
        return Cursor::default();
    };
    let same = scores.iter().rev().take_while(|s| **s == last).count() as i64;
    let carried = if at.score == Some(last) && same as usize == scores.len() {
        at.offset
    } else {
        0
    };
    Cursor {
        value: last,
        offset: same + carried,
        is_prev: false,
    }
}

/// The cursor of an offset-only list (events, user reports) at row `offset`.
pub fn at_offset(offset: i64) -> Cursor {
    Cursor {
        value: 0,
        offset,
        is_prev: false,
    }
}

/// The `Link` header of a page: `previous` (never with results: earlier pages are not served)
/// and `next` (results when more rows follow).
pub fn link(base: &str, query: &[(String, String)], next: Option<Cursor>) -> HeaderValue {
    let url = |c: &Cursor| {
        let mut q = url::form_urlencoded::Serializer::new(String::new());
        for (k, v) in query.iter().filter(|(k, _)| k != "cursor") {
            q.append_pair(k, v);
        }
        q.append_pair("cursor", &c.to_string());
        format!("{base}?{}", q.finish())
    };
    let p = Cursor {
        is_prev: true,
        ..Cursor::default()
    };
    let n = next.unwrap_or_default();
    let text = format!(
        "<{}>; rel=\"previous\"; results=\"false\"; cursor=\"{}\", <{}>; rel=\"next\"; results=\"{}\"; cursor=\"{}\"",
        url(&p),
        p,
        url(&n),
        next.is_some(),
        n
    );
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_and_print_as_sentry_does() {
        let c = Cursor::parse("1700000000000:3:0");
        assert_eq!(
            c,
            Some(Cursor {
                value: 1_700_000_000_000,
                offset: 3,
                is_prev: false
            })
        );
        assert_eq!(
            c.map(|c| c.to_string()).as_deref(),
            Some("1700000000000:3:0")
        );
        assert_eq!(Cursor::parse("0:100:1").map(|c| c.is_prev), Some(true));
        for bad in ["", "1", "1:2", "1:2:3", "a:0:0", "1:-1:0", "1:0:0:0"] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn next_cursor_counts_ties() {
        let at = Position::default();
        assert_eq!(next_scored(at, &[9, 8, 8]).to_string(), "8:2:0");
        // A page made only of the cursor's score carries its offset.
        let at = Position {
            score: Some(8),
            offset: 2,
        };
        assert_eq!(next_scored(at, &[8, 8]).to_string(), "8:4:0");
        assert_eq!(next_scored(at, &[8, 7]).to_string(), "7:1:0");
    }

    #[test]
    fn link_header_has_both_relations() {
        let q = vec![("query".to_owned(), "is:unresolved".to_owned())];
        let h = link(
            "http://h/api/0/x/",
            &q,
            Some(Cursor {
                value: 5,
                offset: 1,
                is_prev: false,
            }),
        );
        let s = h.to_str().unwrap_or_default();
        assert!(
            s.contains(r#"rel="previous"; results="false"; cursor="0:0:1""#),
            "{s}"
        );
        assert!(
            s.contains(r#"rel="next"; results="true"; cursor="5:1:0""#),
            "{s}"
        );
        assert!(s.contains("query=is%3Aunresolved&cursor=5%3A1%3A0"), "{s}");
    }
}
