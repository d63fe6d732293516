//! Spam detection for feedback, per project option `feedback.spam_detection`: `off` (default),
//! `heuristic` (local and explainable), or `http` (the configured classifier; fails open).

use std::time::Duration;

/// Phrases that, next to a link, make a message spam.
pub const SPAM_PHRASES: &[&str] = &[
    "buy now",
    "cheap",
    "viagra",
    "casino",
    "crypto",
    "click here",
    "free money",
    "bitcoin",
    "loan",
    "discount",
    "promo code",
    "earn money",
    "work from home",
    "seo services",
    "limited offer",
];

/// Links at or above this count make a message spam on their own.
const MAX_LINKS: usize = 3;

/// The detection mode of a project.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Off,
    Heuristic,
    Http,
}

impl Mode {
    /// From the project option (unknown values are `off`, logged by the caller).
    pub fn from_option(value: Option<&str>) -> Mode {
        match value {
            Some("heuristic") => Mode::Heuristic,
            Some("http") => Mode::Http,
            _ => Mode::Off,
        }
    }
}

/// The decisive heuristic: 3 or more links, or a link together with a known spam phrase.
/// Returns the reason when the message is spam.
pub fn heuristic(message: &str) -> Option<String> {
    let lower = message.to_lowercase();
    let links = lower
        .split(|c: char| c.is_whitespace() || c == '(' || c == ')' || c == '<' || c == '>')
        .filter(|w| w.starts_with("http://") || w.starts_with("https://") || w.starts_with("www."))
        .count();
    if links >= MAX_LINKS {
        return Some(format!("{links} links"));
    }
    if links > 0 {
        if let Some(p) = SPAM_PHRASES.iter().find(|p| lower.contains(*p)) {
            return Some(format!("link with spam phrase \"{p}\""));
        }
    }
    None
}

/// Asks the HTTP classifier: POST `{"message": ...}`, answer `{"spam": bool, "reason": str?}`.
/// Any error or timeout counts as not spam (fail open).
pub async fn classify(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    message: &str,
) -> Option<String> {
    let req = client
        .post(url)
        .timeout(timeout)
        .json(&serde_json::json!({ "message": message }));
    match req.send().await {
        Ok(resp) if resp.status().is_success() => match resp.json::<serde_json::Value>().await {
            Ok(v) if v.get("spam").and_then(serde_json::Value::as_bool) == Some(true) => Some(
                v.get("reason")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("classifier")
                    .to_owned(),
            ),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "spam classifier answered garbage; treating as not spam");
                None
            }
        },
        Ok(resp) => {
            tracing::warn!(status = %resp.status(), "spam classifier failed; treating as not spam");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, "spam classifier unreachable; treating as not spam");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decisive_examples() {
        assert_eq!(
            heuristic("BUY CHEAP WATCHES http://a.example http://b.example http://c.example")
                .as_deref(),
            Some("3 links")
        );
        assert_eq!(
            heuristic("Click here for free crypto: http://x.example").as_deref(),
            Some("link with spam phrase \"crypto\"")
        );
        assert_eq!(heuristic("The export button does nothing on Safari"), None);
        assert_eq!(
            heuristic("See https://status.example/incident/42, same error as yesterday"),
            None
        );
        assert_eq!(
            heuristic("cheap crypto casino, no links"),
            None,
            "phrases alone are not decisive"
        );
        let trace = "at module.fn (file.js:10:5)\n".repeat(260);
        assert_eq!(heuristic(&trace), None);
    }

    #[test]
    fn modes() {
        assert_eq!(Mode::from_option(None), Mode::Off);
        assert_eq!(Mode::from_option(Some("heuristic")), Mode::Heuristic);
        assert_eq!(Mode::from_option(Some("http")), Mode::Http);
        assert_eq!(Mode::from_option(Some("llm")), Mode::Off);
    }
}
