//! Sentry's envelope format, as SDKs send it to `/api/{project_id}/envelope/`:
//!
//! ```text
//! {"event_id":"…","dsn":"…","sent_at":"…"}\n          envelope headers: one line of JSON
//! {"type":"event","length":41}\n                    item headers: one line of JSON
//! {"message":"hello","level":"error"}\n              payload: `length` bytes, or up to the next newline
//! {"type":"attachment","length":5,"filename":"a.txt"}\n
//! hello
//! ```
//!
//! Every header line must be a JSON object. An item with `length` must have exactly that many
//! bytes followed by a newline or the end of the body; without `length`, its payload runs to the
//! next newline. Whitespace between items and at the end is allowed. Item types this crate does
//! not know are kept as [`ItemType::Other`], so the caller decides what to do with them.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Why a body is not an envelope (the text is what the client is told).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("empty envelope")]
    Empty,
    #[error("invalid envelope header: {0}")]
    InvalidHeader(String),
    #[error("invalid item header at byte {offset}: {message}")]
    InvalidItemHeader { offset: usize, message: String },
    #[error("missing newline after header or payload at byte {0}")]
    MissingNewline(usize),
    #[error("item at byte {offset} declares {length} bytes but only {available} follow")]
    UnexpectedEof {
        offset: usize,
        length: usize,
        available: usize,
    },
}

/// The envelope's first line.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct EnvelopeHeaders {
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub dsn: Option<String>,
    /// Every other header, kept as sent.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// An item's kind. Only the kinds sluice processes are named; everything else is `Other`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemType {
    Event,
    Attachment,
    UserReport,
    Feedback,
    /// Any other type, as the SDK named it (transactions, sessions, client reports, …).
    Other(String),
}

impl ItemType {
    fn parse(s: &str) -> ItemType {
        match s {
            "event" => ItemType::Event,
            "attachment" => ItemType::Attachment,
            "user_report" => ItemType::UserReport,
            "feedback" => ItemType::Feedback,
            other => ItemType::Other(other.to_owned()),
        }
    }

    /// The type's name on the wire.
    pub fn name(&self) -> &str {
        match self {
            ItemType::Event => "event",
            ItemType::Attachment => "attachment",
            ItemType::UserReport => "user_report",
            ItemType::Feedback => "feedback",
            ItemType::Other(s) => s,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct RawItemHeaders {
    #[serde(rename = "type")]
    ty: String,
    #[serde(default)]
    length: Option<u64>,
    #[serde(default)]
    filename: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    attachment_type: Option<String>,
}

/// One item.
#[derive(Debug, Clone)]
pub struct Item {
    pub ty: ItemType,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub attachment_type: Option<String>,
    pub payload: Bytes,
}

/// A parsed envelope. Item payloads share the body's buffer.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub headers: EnvelopeHeaders,
    pub items: Vec<Item>,
}

/// The end of the JSON object that starts at `bytes[0]` (after leading whitespace), parsed.
fn json_line<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
) -> Option<Result<(T, usize), serde_json::Error>> {
    let mut stream = serde_json::Deserializer::from_slice(bytes).into_iter::<T>();
    match stream.next()? {
        Ok(v) => Some(Ok((v, stream.byte_offset()))),
        Err(e) => Some(Err(e)),
    }
}

/// After a header or payload ending at `end`, the body must end or continue with a newline;
/// returns where the next part starts.
fn after_line(body: &[u8], end: usize) -> Result<usize, EnvelopeError> {
    match body.get(end) {
        None => Ok(end),
        Some(b'\n') => Ok(end + 1),
        Some(b'\r') if body.get(end + 1) == Some(&b'\n') => Ok(end + 2),
        Some(_) => Err(EnvelopeError::MissingNewline(end)),
    }
}

fn only_whitespace(bytes: &[u8]) -> bool {
    bytes.iter().all(u8::is_ascii_whitespace)
}

impl Envelope {
    /// Parses a whole envelope body.
    pub fn parse(body: Bytes) -> Result<Envelope, EnvelopeError> {
        if only_whitespace(&body) {
            return Err(EnvelopeError::Empty);
        }
        let (headers, end): (EnvelopeHeaders, usize) = match json_line(&body) {
            Some(Ok(v)) => v,
            Some(Err(e)) => return Err(EnvelopeError::InvalidHeader(e.to_string())),
            None => return Err(EnvelopeError::Empty),
        };
        let mut at = after_line(&body, end)?;
        let mut items = Vec::new();
        while !only_whitespace(&body[at..]) {
            let (raw, header_len): (RawItemHeaders, usize) = match json_line(&body[at..]) {
                Some(Ok(v)) => v,
                Some(Err(e)) => {
                    return Err(EnvelopeError::InvalidItemHeader {
                        offset: at,
                        message: e.to_string(),
                    })
                }
                None => break,
            };
            let header_end = at + header_len;
            let start = after_line(&body, header_end)?;
            let end = match raw.length {
                Some(length) => {
                    let available = body.len() - start;
                    let length = usize::try_from(length).unwrap_or(usize::MAX);
                    if length > available {
                        return Err(EnvelopeError::UnexpectedEof {
                            offset: start,
                            length,
                            available,
                        });
                    }
                    start + length
                }
                None => body[start..]
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(body.len(), |p| start + p),
            };
            // A line-delimited payload may end in "\r\n".
            let payload_end = if raw.length.is_none() && end > start && body[end - 1] == b'\r' {
                end - 1
            } else {
                end
            };
            items.push(Item {
                ty: ItemType::parse(&raw.ty),
                filename: raw.filename,
                content_type: raw.content_type,
                attachment_type: raw.attachment_type,
                payload: body.slice(start..payload_end),
            });
            at = after_line(&body, end)?;
        }
        Ok(Envelope { headers, items })
    }
}

#[cfg(test)]
#[path = "envelope_tests.rs"]
mod tests;
