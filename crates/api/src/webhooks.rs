//! Webhook delivery: claims due rows of the outbox, builds each payload from what is stored
//! now, signs it and POSTs it, with bounded concurrency, in order per (subscription, issue).
//!
//! Request, as Sentry's integration platform sends it: `POST` with `Content-Type:
//! application/json`, `Request-ID` (new per attempt), `Sentry-Hook-Resource` (`issue`,
//! `user_report`), `Sentry-Hook-Timestamp` (Unix seconds), `Sentry-Hook-Signature` (hex
//! HMAC-SHA256 of the body with the subscription's secret), plus `Sentry-Hook-Delivery-Id`, the
//! same on every attempt of one delivery, for deduplication. Body: `{"action", "installation":
//! {"uuid"}, "data", "actor"}`, with the actor `{"type": "application", "id": "sentry", "name":
//! "Sentry"}` for what sluice does on its own.
//!
//! Any answer but 2xx, a timeout or a refused connection is retried with exponential backoff
//! (2 s doubling to 10 minutes); a delivery still failing `give_up_after` after it was queued is
//! recorded as failed (`failed_at`, `last_error`) and counted.

use crate::serialize;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use sluice_core::storage::webhooks::{self, event, Due};
use sluice_core::storage::{read, Db, DbError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

sluice_core::counter_vec!(
    fn attempts_metric = "sluice_webhook_attempts_total",
    "Webhook delivery attempts, by event and result (delivered, retry, failed).",
    ["event", "result"]
);

sluice_core::gauge_vec!(
    fn pending_metric = "sluice_webhook_pending",
    "Webhook deliveries queued and not yet delivered nor given up on.",
    []
);

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Deliveries in flight at once.
    pub concurrency: usize,
    /// Time for one attempt.
    pub timeout: Duration,
    /// How long after it was queued a delivery is given up on.
    pub give_up_after: Duration,
    /// How often to look for due deliveries when there were none.
    pub poll: Duration,
    /// The public URL of the API (links in payloads).
    pub base_url: String,
}

/// The HMAC-SHA256 signature of `body` with `secret`, in hex.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => unreachable!("HMAC takes keys of any length"),
    };
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The resource and action of an outbox event.
fn resource_action(name: &str) -> (&'static str, &'static str) {
    match name {
        event::ISSUE_RESOLVED => ("issue", "resolved"),
        event::ISSUE_IGNORED => ("issue", "ignored"),
        event::ISSUE_UNRESOLVED => ("issue", "unresolved"),
        event::USER_REPORT_CREATED => ("user_report", "created"),
        _ => ("issue", "created"),
    }
}

/// The `data` of a delivery, from the stored rows; `None` when what it is about is gone.
fn data(c: &mut diesel::PgConnection, d: &Due, base: &str) -> Result<Option<Value>, DbError> {
    let Some(org) = read::organization_of_project(c, d.project_id)? else {
        return Ok(None);
    };
    let group = match d.group_id {
        Some(g) => read::group(c, org.id, g)?,
        None => None,
    };
    let issue = |g: &read::Group| serialize::group(g, &org.slug, base);
    Ok(match d.event.as_str() {
        event::USER_REPORT_CREATED => {
            let Some(id) = d.data.get("report_id").and_then(Value::as_i64) else {
                return Ok(None);
            };
            read::user_report(c, id)?.map(
                |r| json!({"user_report": serialize::user_report(&r, group.as_ref().map(issue))}),
            )
        }
        event::ISSUE_CREATED | event::FEEDBACK_SPAM => group.map(|g| {
            let mut i = serde_json::Map::new();
            i.insert(
                "url".into(),
                json!(format!(
                    "{base}/api/0/organizations/{}/issues/{}/",
                    org.slug, g.id
                )),
            );
            i.insert(
                "web_url".into(),
                json!(serialize::issue_web_url(base, &org.slug, &g)),
            );
            i.insert(
                "project_url".into(),
                json!(format!(
                    "{base}/organizations/{}/issues/?project={}",
                    org.slug, g.project_id
                )),
            );
            if let Value::Object(rest) = issue(&g) {
                i.extend(rest);
            }
            json!({ "issue": Value::Object(i) })
        }),
        _ => group.map(|g| {
            let mut v = json!({});
            if let Some(Value::Object(extra)) = d.data.get("extra") {
                for (k, x) in extra {
                    v[k] = x.clone();
                }
            }
            let mut i = issue(&g);
            // The status the change set, even when a later one already moved the group on.
            if let Some(s) = d.data.get("substatus").filter(|s| !s.is_null()) {
                i["substatus"] = s.clone();
            }
            // Status changes: the action names the status.
            i["status"] = json!(resource_action(&d.event).1);
            v["issue"] = i;
            v
        }),
    })
}

/// The body of a delivery.
fn body(d: &Due, data: Value) -> Value {
    let (_, action) = resource_action(&d.event);
    json!({
        "action": action,
        "installation": {"uuid": d.installation},
        "data": data,
        "actor": {"type": "application", "id": "sentry", "name": "Sentry"},
    })
}

/// Delivers until `shutdown`.
pub async fn run(db: Db, settings: Settings, shutdown: CancellationToken) {
    let client = match reqwest::Client::builder()
        .timeout(settings.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; webhooks are not delivered");
            return;
        }
    };
    let lease = (settings.timeout.as_secs() as i64 + 30).max(60);
    tracing::info!(
        concurrency = settings.concurrency,
        "webhook delivery started"
    );
    while !shutdown.is_cancelled() {
        let limit = (settings.concurrency * 4) as i64;
        let due = db
            .run(move |c| Ok::<_, DbError>(webhooks::claim(c, limit, lease)?))
            .await;
        let due = match due {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhook outbox unavailable; retrying");
                Vec::new()
            }
        };
        if let Ok(n) = db.run(|c| Ok::<_, DbError>(webhooks::pending(c)?)).await {
            pending_metric().with_label_values(&[] as &[&str]).set(n);
        }
        if due.is_empty() {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(settings.poll) => continue,
            }
        }
        use futures::StreamExt;
        futures::stream::iter(due)
            .for_each_concurrent(settings.concurrency.max(1), |d| {
                let (db, client, settings) = (db.clone(), client.clone(), settings.clone());
                async move { deliver(&db, &client, &settings, d).await }
            })
            .await;
    }
    tracing::info!("webhook delivery stopped");
}

async fn deliver(db: &Db, client: &reqwest::Client, settings: &Settings, d: Due) {
    let base = settings.base_url.clone();
    let due = d.clone();
    let built = db.run(move |c| data(c, &due, &base)).await;
    let data = match built {
        Ok(Some(v)) => v,
        Ok(None) => {
            record(
                db,
                &d,
                Err("what the notification is about is no longer stored".into()),
                true,
                settings,
            )
            .await;
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "webhook payload could not be read; retrying");
            record(db, &d, Err(e.to_string()), false, settings).await;
            return;
        }
    };
    let body = match serde_json::to_vec(&body(&d, data)) {
        Ok(b) => b,
        Err(e) => {
            record(db, &d, Err(e.to_string()), true, settings).await;
            return;
        }
    };
    let (resource, _) = resource_action(&d.event);
    let result = client
        .post(&d.url)
        .header("Content-Type", "application/json")
        .header("Request-ID", uuid::Uuid::new_v4().simple().to_string())
        .header("Sentry-Hook-Resource", resource)
        .header(
            "Sentry-Hook-Timestamp",
            chrono::Utc::now().timestamp().to_string(),
        )
        .header("Sentry-Hook-Signature", sign(&d.secret, &body))
        .header("Sentry-Hook-Delivery-Id", d.id.to_string())
        .body(body)
        .send()
        .await;
    let outcome = match result {
        Ok(r) if r.status().is_success() => Ok(()),
        Ok(r) => Err(format!("receiver answered {}", r.status())),
        Err(e) => Err(format!("request failed: {e}")),
    };
    record(db, &d, outcome, false, settings).await;
}

/// Records an attempt's outcome; `final_failure` gives up at once.
async fn record(
    db: &Db,
    d: &Due,
    outcome: Result<(), String>,
    final_failure: bool,
    settings: &Settings,
) {
    let id = d.id;
    let m = attempts_metric();
    let result = match outcome {
        Ok(()) => {
            m.with_label_values(&[d.event.as_str(), "delivered"]).inc();
            db.run(move |c| Ok::<_, DbError>(webhooks::delivered(c, id)?))
                .await
        }
        Err(e) => {
            let age = (chrono::Utc::now() - d.date_added)
                .to_std()
                .unwrap_or_default();
            let give_up = final_failure || age >= settings.give_up_after;
            let backoff = 2f64.powi(d.attempts.clamp(1, 12)).min(600.0);
            m.with_label_values(&[d.event.as_str(), if give_up { "failed" } else { "retry" }])
                .inc();
            if give_up {
                tracing::warn!(delivery = id, url = %d.url, error = %e, "webhook delivery given up");
            } else {
                tracing::info!(delivery = id, url = %d.url, error = %e, retry_in_secs = backoff, "webhook delivery failed; will retry");
            }
            db.run(move |c| {
                Ok::<_, DbError>(webhooks::attempt_failed(c, id, &e, backoff, give_up)?)
            })
            .await
        }
    };
    if let Err(e) = result {
        // The lease expires and the delivery is attempted again.
        tracing::warn!(error = %e, delivery = id, "webhook outcome could not be recorded");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
