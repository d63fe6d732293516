//! One SDK request, step by step: who sent it (key), what it holds (body, envelope), whether it
//! may pass (key state, size limits, rate limit), then its messages to the sink and its answer.
//! Validation is finished before anything is sent, so a refused request leaves nothing on the
//! topics.

use crate::auth::{self, AuthError, Credentials};
use crate::body::{self, BodyError, Encoding};
use crate::envelope::{Envelope, Item, ItemType};
use crate::error::EdgeError;
use crate::normalize::{self, Received};
use crate::translate::{self, Dropped, Origin, Outgoing};
use crate::{limits, metrics, State};
use axum::body::Body;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde_json::json;
use sluice_core::messages::enums::Outcome;
use sluice_core::messages::time::Timestamp;
use sluice_core::messages::OutcomeMessage;
use sluice_core::storage::project_keys::ProjectKey;
use std::sync::Arc;
use std::time::Instant;

/// Most items in one envelope (Sentry's per-type limits allow a few dozen in practice); beyond,
/// the envelope is refused with 413, so a small compressed body cannot expand into millions of
/// items.
const MAX_ITEMS: usize = 1_000;

fn auth_error(e: AuthError) -> EdgeError {
    match e {
        AuthError::Missing | AuthError::Multiple => EdgeError::Unauthorized {
            detail: e.to_string(),
            causes: Vec::new(),
        },
        AuthError::Invalid(cause) => EdgeError::Unauthorized {
            detail: "bad x-sentry-auth header".into(),
            causes: vec![cause],
        },
        AuthError::BadDsn(cause) => EdgeError::Unauthorized {
            detail: "bad envelope authentication header".into(),
            causes: vec![cause],
        },
        AuthError::BadKey(key) => EdgeError::BadRequest {
            detail: "bad sentry DSN public key".into(),
            causes: vec![format!("invalid project key {key:?}")],
        },
        AuthError::Version(_) => EdgeError::bad_request(e.to_string()),
    }
}

fn body_error(e: BodyError) -> EdgeError {
    match e {
        BodyError::TooLarge { what, .. } => EdgeError::TooLarge { what: what.into() },
        BodyError::UnsupportedEncoding(enc) => EdgeError::UnsupportedEncoding(enc),
        BodyError::Corrupt { .. } | BodyError::Read(_) => EdgeError::BadRequest {
            detail: "invalid request body".into(),
            causes: vec![e.to_string()],
        },
    }
}

fn project_id(raw: &str) -> Result<u64, EdgeError> {
    raw.parse::<u64>()
        .ok()
        .filter(|p| *p > 0 && *p <= i64::MAX as u64)
        .ok_or_else(|| EdgeError::BadRequest {
            detail: "bad project path parameter".into(),
            causes: vec![format!("{raw:?} is not a project id")],
        })
}

/// Reads and decodes the body, within `limit` bytes before and after decoding.
async fn read_body(
    state: &State,
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    what: &'static str,
) -> Result<(Bytes, body::Held), EdgeError> {
    let encoding = headers
        .get(http::header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("?"))
        // Some SDKs send an empty value or a charset here; Sentry ignores both.
        .filter(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("utf-8"));
    let encoding = Encoding::parse(encoding).map_err(body_error)?;
    let content_length = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<usize>().ok());
    let received = body::read(body, content_length, limit, what, &state.budget)
        .await
        .map_err(body_error)?;
    let mut held = received.held;
    let raw = received.bytes;
    let decoded = if encoding == Encoding::Identity {
        raw
    } else {
        // Decoded off the async workers (a small body can expand to the limit), and counted
        // against the budget too.
        let decoded = tokio::task::spawn_blocking(move || body::decode(raw, encoding, limit, what))
            .await
            .map_err(|e| EdgeError::bad_request(format!("decoding failed: {e}")))?
            .map_err(body_error)?;
        state
            .budget
            .take(decoded.len(), &mut held.permits)
            .await
            .map_err(body_error)?;
        decoded
    };
    if decoded.iter().all(u8::is_ascii_whitespace) {
        return Err(EdgeError::bad_request("empty request body"));
    }
    Ok((decoded, held))
}

/// The key a request is for, checked against the project in its path.
async fn key_for(
    state: &State,
    credentials: &Credentials,
    project: u64,
) -> Result<ProjectKey, EdgeError> {
    let key =
        state
            .keys
            .get(&credentials.public_key)
            .await
            .map_err(|e| EdgeError::Unavailable {
                detail: "the service is overloaded".into(),
                cause: format!("database: {e}"),
            })?;
    match key {
        Some(k) if k.is_active && k.project_id as u64 == project => Ok(k),
        Some(k) if k.project_id as u64 == project => {
            // A disabled key: counted like Relay counts it.
            emit_outcomes(
                state,
                &k,
                &[Dropped {
                    item: "envelope",
                    outcome: Outcome::Invalid,
                    reason: "project_id".into(),
                    category: translate::category::DEFAULT,
                    quantity: 1,
                    event_id: None,
                }],
            );
            Err(EdgeError::Rejected {
                reason: "ProjectId",
            })
        }
        _ => Err(EdgeError::Rejected {
            reason: "ProjectId",
        }),
    }
}

fn emit_outcomes(state: &State, key: &ProjectKey, dropped: &[Dropped]) {
    if dropped.is_empty() {
        return;
    }
    // One outcome per (outcome, category, reason, event), quantities summed.
    type Key<'a> = (u8, u16, &'a str, Option<&'a str>);
    let mut grouped: std::collections::BTreeMap<Key<'_>, (Outcome, u64)> =
        std::collections::BTreeMap::new();
    for d in dropped {
        let slot = grouped
            .entry((
                d.outcome.as_u8(),
                d.category,
                d.reason.as_str(),
                d.event_id.as_deref(),
            ))
            .or_insert((d.outcome, 0));
        slot.1 += d.quantity;
    }
    let messages = grouped
        .into_iter()
        .map(|((_, category, reason, event_id), (outcome, quantity))| {
            let mut o = OutcomeMessage::new(
                key.organization_id as u64,
                key.project_id as u64,
                outcome,
                category,
            );
            o.key_id = Some(key.id as u64);
            o.reason = Some(reason.to_owned());
            o.event_id = event_id.map(str::to_owned);
            o.quantity = quantity;
            let billing = outcome.is_billing();
            Outgoing {
                topic: match (&state.outcomes_billing_topic, billing) {
                    (Some(t), true) => t.clone(),
                    _ => state.outcomes_topic.clone(),
                },
                key: [0; 16],
                payload: o.encode(),
            }
        })
        .collect();
    state.sink.send_detached(messages);
}

/// Whether the envelope's crash report makes its error event (it has no event item).
fn crash_makes_event(envelope: &Envelope) -> bool {
    !envelope.items.iter().any(|i| i.ty == ItemType::Event)
        && envelope.items.iter().any(crate::crash::is_crash_report)
}

/// Items that count against a key's rate limit: events (a crash report without an event item
/// makes one) and feedback.
fn rate_limited_units(envelope: &Envelope) -> u64 {
    let events = envelope
        .items
        .iter()
        .filter(|i| matches!(i.ty, ItemType::Event | ItemType::Feedback))
        .count() as u64;
    events + u64::from(crash_makes_event(envelope))
}

/// The item outcomes of a refused envelope.
fn outcomes_for_all(
    envelope: &Envelope,
    outcome: Outcome,
    reason: &str,
    event_id: &Option<String>,
) -> Vec<Dropped> {
    let mut out = Vec::new();
    if crash_makes_event(envelope) {
        // The error event the crash report would have made.
        out.push(Dropped {
            item: "event",
            outcome,
            reason: reason.to_owned(),
            category: translate::category::ERROR,
            quantity: 1,
            event_id: event_id.clone(),
        });
    }
    for item in &envelope.items {
        let (label, category) = match &item.ty {
            ItemType::Event => ("event", translate::category::ERROR),
            ItemType::Feedback | ItemType::UserReport => (
                translate::item_label(&item.ty),
                translate::category::USER_REPORT_V2,
            ),
            ItemType::Attachment => {
                out.extend(translate::attachment_outcomes(
                    item, outcome, reason, event_id,
                ));
                continue;
            }
            ItemType::Other(_) => continue,
        };
        out.push(Dropped {
            item: label,
            outcome,
            reason: reason.to_owned(),
            category,
            quantity: 1,
            event_id: event_id.clone(),
        });
    }
    out
}

/// Checks, plans and sends an envelope for `key`; the answer's body.
async fn accept(
    state: &State,
    key: &ProjectKey,
    envelope: Envelope,
    remote_addr: Option<String>,
) -> Result<serde_json::Value, EdgeError> {
    let header_id = match envelope.headers.event_id.as_deref() {
        None => None,
        Some(raw) => Some(
            normalize::event_id(raw)
                .ok_or_else(|| EdgeError::invalid_envelope("invalid envelope header"))?,
        ),
    };
    let needs_id = envelope.items.iter().any(|i| match &i.ty {
        ItemType::Other(t) => matches!(
            t.as_str(),
            "transaction"
                | "security"
                | "raw_security"
                | "unreal_report"
                | "form_data"
                | "replay_event"
                | "profile"
        ),
        _ => true,
    });
    let event_id =
        header_id.or_else(|| needs_id.then(|| uuid::Uuid::new_v4().simple().to_string()));

    if envelope.items.len() > MAX_ITEMS {
        return Err(EdgeError::TooLarge {
            what: "items".into(),
        });
    }
    if let Err(what) = limits::check(&envelope, &state.limits) {
        emit_outcomes(
            state,
            key,
            &outcomes_for_all(
                &envelope,
                Outcome::Invalid,
                &format!("too_large:{what}"),
                &event_id,
            ),
        );
        for item in &envelope.items {
            metrics::item(translate::item_label(&item.ty), "refused");
        }
        return Err(EdgeError::TooLarge { what });
    }

    let units = rate_limited_units(&envelope);
    if let (Some(count), Some(window), true) =
        (key.rate_limit_count, key.rate_limit_window, units > 0)
    {
        let now = chrono::Utc::now().timestamp().max(0) as u64;
        if let Err(limited) = state.rate_limits.check(
            key.id,
            count.max(0) as u64,
            window.max(1) as u64,
            now,
            units,
        ) {
            emit_outcomes(
                state,
                key,
                &outcomes_for_all(&envelope, Outcome::RateLimited, KEY_QUOTA, &event_id),
            );
            for item in &envelope.items {
                metrics::item(translate::item_label(&item.ty), "refused");
            }
            return Err(EdgeError::RateLimited {
                retry_after: limited.retry_after,
                header: format!("{}::key:{KEY_QUOTA}", limited.retry_after),
            });
        }
    }

    let now = chrono::Utc::now();
    let origin = Origin {
        org_id: key.organization_id as u64,
        received: Received {
            project_id: key.project_id as u64,
            key_id: key.id,
            at: now.timestamp_micros() as f64 / 1e6,
            event_id: None,
        },
        start_time: Timestamp(now),
        remote_addr,
    };
    let plan = translate::plan(&envelope, event_id.as_deref(), &origin, &state.topics);
    if !plan.waves.is_empty() {
        state
            .sink
            .send(plan.waves)
            .await
            .map_err(|e| EdgeError::Unavailable {
                detail: "failed to queue envelope".into(),
                cause: e.0,
            })?;
    }
    for ty in &plan.accepted {
        metrics::item(ty, "accepted");
    }
    for ty in &plan.ignored {
        metrics::item(ty, "ignored");
    }
    for d in &plan.dropped {
        metrics::item(d.item, "dropped");
    }
    emit_outcomes(state, key, &plan.dropped);
    Ok(match event_id {
        Some(id) => json!({ "id": id }),
        None => json!({}),
    })
}

/// The reason code of a key's rate limit, as Sentry names it.
const KEY_QUOTA: &str = "key_quota";

fn finish(
    endpoint: &str,
    started: Instant,
    result: Result<serde_json::Value, EdgeError>,
) -> Response {
    let response = match result {
        Ok(body) => axum::Json(body).into_response(),
        Err(e) => {
            tracing::debug!(endpoint, error = ?e, "SDK request refused");
            e.into_response()
        }
    };
    metrics::request(
        endpoint,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// The client's address as the proxy in front reports it (`X-Forwarded-For`'s first entry, or
/// `X-Real-IP`).
fn remote(headers: &HeaderMap) -> Option<String> {
    let first = headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .or_else(|| headers.get("x-real-ip").and_then(|v| v.to_str().ok()))?;
    first
        .trim()
        .parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| ip.to_string())
}

/// `POST /api/{project_id}/envelope/`.
pub async fn envelope(
    AxState(state): AxState<Arc<State>>,
    Path(project): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        let project = project_id(&project)?;
        let from_request = auth::from_request(&headers, uri.query()).map_err(auth_error)?;
        // A key named in the request is checked before its body is read.
        let checked = match &from_request {
            Some(c) => Some(key_for(&state, c, project).await?),
            None => None,
        };
        let limit = state.limits.max_envelope_size;
        let (bytes, _held) = read_body(&state, &headers, body, limit, "envelope").await?;
        let envelope =
            Envelope::parse(bytes).map_err(|e| EdgeError::invalid_envelope(e.to_string()))?;
        let key = match (from_request, checked, envelope.headers.dsn.as_deref()) {
            (Some(_), Some(key), None) => key,
            (Some(c), Some(checked_key), Some(dsn)) => {
                // Both: the envelope's DSN must name the same key and project.
                let (key, dsn_project) = auth::from_dsn(dsn).map_err(auth_error)?;
                if dsn_project.is_some_and(|p| p != project) {
                    return Err(EdgeError::invalid_envelope(
                        "project id header mismatch between envelope and request",
                    ));
                }
                if key != c.public_key {
                    return Err(EdgeError::invalid_envelope(
                        "public key header mismatch between envelope and request",
                    ));
                }
                checked_key
            }
            (None, _, Some(dsn)) => {
                let (key, _) = auth::from_dsn(dsn).map_err(|e| match e {
                    AuthError::BadKey(_) | AuthError::BadDsn(_) => {
                        auth_error(AuthError::BadDsn(e.to_string()))
                    }
                    other => auth_error(other),
                })?;
                let credentials = Credentials {
                    public_key: key,
                    client: None,
                };
                key_for(&state, &credentials, project).await?
            }
            _ => return Err(auth_error(AuthError::Missing)),
        };
        accept(&state, &key, envelope, remote(&headers)).await
    }
    .await;
    finish("envelope", started, result)
}

/// `POST /api/{project_id}/store/`: one event as JSON (or, from old SDKs, base64 of zlib'd
/// JSON), or an envelope when sent with `Content-Type: application/x-sentry-envelope`.
pub async fn store(
    AxState(state): AxState<Arc<State>>,
    Path(project): Path<String>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let result = async {
        let project = project_id(&project)?;
        let credentials = auth::from_request(&headers, uri.query())
            .map_err(auth_error)?
            .ok_or_else(|| auth_error(AuthError::Missing))?;
        let key = key_for(&state, &credentials, project).await?;
        let is_envelope = headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-sentry-envelope"));
        let limit = if is_envelope {
            state.limits.max_envelope_size
        } else {
            state.limits.max_event_size
        };
        let (bytes, _held) = read_body(&state, &headers, body, limit, "event").await?;
        let envelope = if is_envelope {
            Envelope::parse(bytes).map_err(|e| EdgeError::invalid_envelope(e.to_string()))?
        } else {
            legacy_event(bytes, state.limits.max_event_size)?
        };
        accept(&state, &key, envelope, remote(&headers)).await
    }
    .await;
    finish("store", started, result)
}

/// A `/store/` body as a one-item envelope. The item is an event, a feedback or a transaction
/// by the payload's `type`; its `event_id` (or a new one) is the envelope's.
fn legacy_event(bytes: Bytes, limit: usize) -> Result<Envelope, EdgeError> {
    let invalid_body = |cause: String| EdgeError::BadRequest {
        detail: "invalid request body".into(),
        causes: vec![cause],
    };
    let json = if bytes.first() == Some(&b'{') {
        bytes
    } else {
        let text: Vec<u8> = bytes
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(&text)
            .map_err(|e| invalid_body(format!("not JSON, nor base64: {e}")))?;
        if decoded.first() == Some(&b'{') {
            Bytes::from(decoded)
        } else {
            body::decode(Bytes::from(decoded), Encoding::Deflate, limit, "event")
                .map_err(body_error)?
        }
    };
    #[derive(serde::Deserialize)]
    struct Minimal {
        #[serde(default)]
        event_id: Option<serde_json::Value>,
        #[serde(default, rename = "type")]
        ty: Option<serde_json::Value>,
    }
    let minimal: Minimal = serde_json::from_slice(&json)
        .map_err(|e| EdgeError::bad_request(format!("invalid JSON data: {e}")))?;
    let event_id = minimal
        .event_id
        .as_ref()
        .and_then(serde_json::Value::as_str)
        .and_then(normalize::event_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
    let ty = match minimal.ty.as_ref().and_then(serde_json::Value::as_str) {
        Some("transaction") => ItemType::Other("transaction".into()),
        Some("feedback") => ItemType::Feedback,
        _ => ItemType::Event,
    };
    Ok(Envelope {
        headers: crate::envelope::EnvelopeHeaders {
            event_id: Some(event_id),
            ..Default::default()
        },
        items: vec![Item {
            ty,
            filename: None,
            content_type: Some("application/json".into()),
            attachment_type: None,
            payload: json,
        }],
    })
}
