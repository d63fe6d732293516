//! Sentry's envelope size limits (defaults as Relay's). An envelope over a limit is refused as
//! a whole with 413 and an INVALID outcome `too_large:<type>`.

use crate::envelope::{Envelope, ItemType};

const MIB: usize = 1024 * 1024;

/// The limits, in bytes and items.
#[derive(Debug, Clone, clap::Args)]
pub struct SizeLimits {
    /// Largest request body, decompressed.
    #[arg(long, env = "MAX_ENVELOPE_SIZE", default_value_t = 200 * MIB)]
    pub max_envelope_size: usize,
    /// Largest event or feedback item, and largest `/store/` body.
    #[arg(long, env = "MAX_EVENT_SIZE", default_value_t = MIB)]
    pub max_event_size: usize,
    /// Largest attachment.
    #[arg(long, env = "MAX_ATTACHMENT_SIZE", default_value_t = 200 * MIB)]
    pub max_attachment_size: usize,
    /// Largest sum of an envelope's attachments and user reports.
    #[arg(long, env = "MAX_ATTACHMENTS_SIZE", default_value_t = 200 * MIB)]
    pub max_attachments_size: usize,
    /// Most attachments and user reports in one envelope.
    #[arg(long, env = "MAX_ATTACHMENT_COUNT", default_value_t = 30)]
    pub max_attachment_count: usize,
    /// Largest sum of an envelope's client reports.
    #[arg(long, env = "MAX_CLIENT_REPORTS_SIZE", default_value_t = 100 * 1024)]
    pub max_client_reports_size: usize,
    /// Largest sum of an envelope's session items.
    #[arg(long, env = "MAX_SESSIONS_SIZE", default_value_t = 10 * MIB)]
    pub max_sessions_size: usize,
}

impl Default for SizeLimits {
    fn default() -> SizeLimits {
        SizeLimits {
            max_envelope_size: 200 * MIB,
            max_event_size: MIB,
            max_attachment_size: 200 * MIB,
            max_attachments_size: 200 * MIB,
            max_attachment_count: 30,
            max_client_reports_size: 100 * 1024,
            max_sessions_size: 10 * MIB,
        }
    }
}

/// Items that share a limit.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Bucket {
    /// One event-like item per envelope.
    Event,
    Attachment,
    ClientReport,
    Session,
    Other,
}

fn bucket(ty: &ItemType) -> Bucket {
    match ty {
        ItemType::Event | ItemType::Feedback => Bucket::Event,
        ItemType::Attachment | ItemType::UserReport => Bucket::Attachment,
        ItemType::Other(s) => match s.as_str() {
            "transaction" | "security" | "raw_security" | "replay_event" | "form_data" => {
                Bucket::Event
            }
            "unreal_report" => Bucket::Attachment,
            "client_report" => Bucket::ClientReport,
            "session" | "sessions" => Bucket::Session,
            _ => Bucket::Other,
        },
    }
}

/// The item type an envelope is over the limits for (`event`, `attachment:attachment`, …), as
/// Relay names it in the 413 and the outcome reason.
pub fn check(envelope: &Envelope, limits: &SizeLimits) -> Result<(), String> {
    let (mut events, mut attachments, mut attachment_bytes) = (0usize, 0usize, 0usize);
    let (mut reports, mut sessions) = (0usize, 0usize);
    for item in &envelope.items {
        let len = item.payload.len();
        match bucket(&item.ty) {
            Bucket::Event => {
                events += 1;
                if events > 1 || len > limits.max_event_size {
                    return Err("event".into());
                }
            }
            Bucket::Attachment => {
                attachments += 1;
                attachment_bytes += len;
                let name = match item.ty {
                    ItemType::UserReport => "user_report".to_owned(),
                    _ => format!(
                        "attachment:{}",
                        match item.attachment_type.as_deref() {
                            Some("event.minidump") => "minidump",
                            Some("event.applecrashreport") => "apple_crash_report",
                            Some("unreal.context") => "unreal_context",
                            Some("unreal.logs") => "unreal_logs",
                            Some("event.view_hierarchy") => "view_hierarchy",
                            _ => "attachment",
                        }
                    ),
                };
                if len > limits.max_attachment_size
                    || attachments > limits.max_attachment_count
                    || attachment_bytes > limits.max_attachments_size
                {
                    return Err(name);
                }
            }
            Bucket::ClientReport => {
                reports += len;
                if reports > limits.max_client_reports_size {
                    return Err("client_report".into());
                }
            }
            Bucket::Session => {
                sessions += len;
                if sessions > limits.max_sessions_size {
                    return Err("session".into());
                }
            }
            Bucket::Other => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn env(items: &[(&str, usize)]) -> Envelope {
        let mut body = b"{}\n".to_vec();
        for (ty, len) in items {
            body.extend(format!("{{\"type\":\"{ty}\",\"length\":{len}}}\n").bytes());
            body.extend(std::iter::repeat_n(b'x', *len));
            body.push(b'\n');
        }
        Envelope::parse(Bytes::from(body)).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn limits_per_bucket() {
        let l = SizeLimits {
            max_attachment_count: 2,
            max_attachments_size: 10,
            ..SizeLimits::default()
        };
        assert_eq!(check(&env(&[("event", 10), ("attachment", 5)]), &l), Ok(()));
        assert_eq!(
            check(&env(&[("event", 2), ("feedback", 2)]), &l),
            Err("event".into())
        );
        assert_eq!(check(&env(&[("event", MIB + 1)]), &l), Err("event".into()));
        assert_eq!(
            check(&env(&[("attachment", 6), ("attachment", 6)]), &l),
            Err("attachment:attachment".into())
        );
        assert_eq!(
            check(
                &env(&[("attachment", 1), ("user_report", 1), ("attachment", 1)]),
                &l
            ),
            Err("attachment:attachment".into())
        );
        assert_eq!(
            check(&env(&[("client_report", 200 * 1024)]), &l),
            Err("client_report".into())
        );
        assert_eq!(check(&env(&[("span", 3 * MIB)]), &l), Ok(()));
    }
}
