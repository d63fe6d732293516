//! The issue search syntax the API understands: `is:unresolved|resolved|ignored|archived|muted`,
//! `issue.category:<name>`, `issue.type:<slug>` (several of a key are OR-ed, as in Sentry), and
//! free text, whose words must all appear in the title. Other `key:value` terms are refused
//! with 400 rather than silently ignored.

use sluice_core::issues::grouptype;
use sluice_core::messages::enums::{group_category as cat, group_status as st};

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Search {
    pub statuses: Option<Vec<i32>>,
    pub types: Option<Vec<i32>>,
    pub text: Vec<String>,
}

/// Sentry's category names.
pub fn category_name(category: i32) -> &'static str {
    match category {
        cat::ERROR => "error",
        cat::PERFORMANCE => "performance",
        cat::PROFILE => "profile",
        cat::CRON => "cron",
        cat::REPLAY => "replay",
        cat::FEEDBACK => "feedback",
        cat::UPTIME => "uptime",
        cat::METRIC_ALERT => "metric_alert",
        _ => "other",
    }
}

/// Parses `query`; the error is the 400 answer's detail.
pub fn parse(query: &str) -> Result<Search, String> {
    let mut out = Search::default();
    for term in split_terms(query) {
        let Some((key, value)) = term.split_once(':').filter(|(k, _)| !k.contains(' ')) else {
            out.text.push(term);
            continue;
        };
        let (negated, key) = match key.strip_prefix('!') {
            Some(k) => (true, k),
            None => (false, key),
        };
        if negated {
            return Err(format!("Negated search terms are not supported: {term}"));
        }
        match key {
            "is" => {
                let status = match value {
                    "unresolved" => st::UNRESOLVED,
                    "resolved" => st::RESOLVED,
                    "ignored" | "archived" | "muted" => st::IGNORED,
                    other => return Err(format!("Invalid value for \"is\" search: {other}")),
                };
                out.statuses.get_or_insert_with(Vec::new).push(status);
            }
            "issue.category" => {
                let wanted: Vec<i32> = grouptype::REGISTRY
                    .iter()
                    .filter(|t| category_name(t.category) == value)
                    .map(|t| t.id)
                    .collect();
                if wanted.is_empty() {
                    return Err(format!("Invalid issue.category: {value}"));
                }
                out.types.get_or_insert_with(Vec::new).extend(wanted);
            }
            "issue.type" => {
                let Some(t) = grouptype::REGISTRY.iter().find(|t| t.slug == value) else {
                    return Err(format!("Invalid issue.type: {value}"));
                };
                out.types.get_or_insert_with(Vec::new).push(t.id);
            }
            other => return Err(format!("Unsupported search key: {other}")),
        }
    }
    if let Some(s) = &mut out.statuses {
        s.sort_unstable();
        s.dedup();
    }
    Ok(out)
}

/// Splits on whitespace, keeping double-quoted phrases (without their quotes) as one term.
fn split_terms(query: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    for c in query.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !current.is_empty() {
                    terms.push(std::mem::take(&mut current));
                }
            }
            c => current.push(c),
        }
    }
    if !current.is_empty() {
        terms.push(current);
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_categories_and_text() {
        let s = parse("is:unresolved issue.category:feedback  Connection \"timed out\"")
            .unwrap_or_default();
        assert_eq!(s.statuses, Some(vec![st::UNRESOLVED]));
        assert!(s.types.as_ref().is_some_and(|t| t.contains(&6001)));
        assert_eq!(
            s.text,
            vec!["Connection".to_owned(), "timed out".to_owned()]
        );
        assert_eq!(
            parse("is:resolved is:ignored").map(|s| s.statuses),
            Ok(Some(vec![st::RESOLVED, st::IGNORED]))
        );
        assert_eq!(parse("").map(|s| s.statuses), Ok(None));
        assert!(parse("is:bogus").is_err());
        assert!(parse("assigned:me").is_err());
        assert!(parse("!is:resolved").is_err());
        assert!(parse("issue.category:nope").is_err());
    }
}
