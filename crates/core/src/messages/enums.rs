//! Sentry's numeric enumerations; the numbers matter on the wire and in the database.

/// Outcome of an item, as sent on the outcomes topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Outcome {
    Accepted = 0,
    Filtered = 1,
    RateLimited = 2,
    Invalid = 3,
    Abuse = 4,
    ClientDiscard = 5,
    CardinalityLimited = 6,
}

impl Outcome {
    /// The wire value.
    pub fn as_u8(self) -> u8 {
        self as u8
    }
    /// Parses a wire value.
    pub fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            0 => Self::Accepted,
            1 => Self::Filtered,
            2 => Self::RateLimited,
            3 => Self::Invalid,
            4 => Self::Abuse,
            5 => Self::ClientDiscard,
            6 => Self::CardinalityLimited,
            _ => return None,
        })
    }
    /// Billing outcomes go to the billing topic when one is configured.
    pub fn is_billing(self) -> bool {
        matches!(self, Self::Accepted | Self::RateLimited)
    }
    /// Lower-case name, used as a metric label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Filtered => "filtered",
            Self::RateLimited => "rate_limited",
            Self::Invalid => "invalid",
            Self::Abuse => "abuse",
            Self::ClientDiscard => "client_discard",
            Self::CardinalityLimited => "cardinality_limited",
        }
    }
}

/// Data categories shared with Relay (only the ones this pipeline emits are named).
pub mod data_category {
    pub const DEFAULT: u16 = 0;
    pub const ERROR: u16 = 1;
    pub const TRANSACTION: u16 = 2;
    pub const ATTACHMENT: u16 = 4;
    /// User feedback (UserReportV2).
    pub const USER_REPORT_V2: u16 = 14;
}

/// Group status values.
pub mod group_status {
    pub const UNRESOLVED: i32 = 0;
    pub const RESOLVED: i32 = 1;
    pub const IGNORED: i32 = 2;
    pub const PENDING_DELETION: i32 = 3;
    pub const DELETION_IN_PROGRESS: i32 = 4;
    pub const PENDING_MERGE: i32 = 5;
    pub const REPROCESSING: i32 = 6;
}

/// Group substatus values (IGNORED: 1, 4, 5; UNRESOLVED: 2, 3, 6, 7; RESOLVED: none).
pub mod group_substatus {
    pub const UNTIL_ESCALATING: i32 = 1;
    pub const ESCALATING: i32 = 2;
    pub const ONGOING: i32 = 3;
    pub const UNTIL_CONDITION_MET: i32 = 4;
    pub const FOREVER: i32 = 5;
    pub const REGRESSED: i32 = 6;
    pub const NEW: i32 = 7;
}

/// Issue priority levels.
pub mod priority {
    pub const LOW: i32 = 25;
    pub const MEDIUM: i32 = 50;
    pub const HIGH: i32 = 75;
}

/// Group categories of the group-type registry.
pub mod group_category {
    pub const ERROR: i32 = 1;
    pub const PERFORMANCE: i32 = 2;
    pub const PROFILE: i32 = 3;
    pub const CRON: i32 = 4;
    pub const REPLAY: i32 = 5;
    pub const FEEDBACK: i32 = 6;
    pub const UPTIME: i32 = 7;
    pub const METRIC_ALERT: i32 = 8;
    pub const TEST_NOTIFICATION: i32 = 9;
    pub const FRONTEND: i32 = 14;
    pub const AI_DETECTED: i32 = 16;
    pub const PREPROD: i32 = 17;
    pub const INSTRUMENTATION: i32 = 18;
    pub const CONFIGURATION: i32 = 19;
}

/// Sentry's log level numbers (`LOG_LEVELS_MAP`); unknown names map to `None`.
pub fn log_level(name: &str) -> Option<i32> {
    Some(match name.to_ascii_lowercase().as_str() {
        "debug" => 10,
        "info" => 20,
        "warning" | "warn" => 30,
        "error" => 40,
        "fatal" | "critical" => 50,
        _ => return None,
    })
}

/// Where a feedback came from (the `source` header on the feedback topic).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FeedbackSource {
    NewFeedbackEnvelope,
    UserReportSentryDjangoEndpoint,
    UserReportEnvelope,
    CrashReportEmbedForm,
    UpdateUserReportsTask,
}

impl FeedbackSource {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NewFeedbackEnvelope => "new_feedback_envelope",
            Self::UserReportSentryDjangoEndpoint => "user_report_sentry_django_endpoint",
            Self::UserReportEnvelope => "user_report_envelope",
            Self::CrashReportEmbedForm => "crash_report_embed_form",
            Self::UpdateUserReportsTask => "update_user_reports_task",
        }
    }
    /// Parses a header value; `None` for anything unknown.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::NewFeedbackEnvelope,
            Self::UserReportSentryDjangoEndpoint,
            Self::UserReportEnvelope,
            Self::CrashReportEmbedForm,
            Self::UpdateUserReportsTask,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
    /// Feedback sent through the new feedback envelope (the rest are legacy user reports).
    pub fn is_new_feedback(self) -> bool {
        self == Self::NewFeedbackEnvelope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_values_round_trip() {
        for v in 0..=6u8 {
            assert_eq!(Outcome::from_u8(v).map(Outcome::as_u8), Some(v));
        }
        assert_eq!(Outcome::from_u8(7), None);
        assert!(Outcome::Accepted.is_billing() && Outcome::RateLimited.is_billing());
        assert!(!Outcome::Invalid.is_billing());
    }

    #[test]
    fn levels_and_sources() {
        assert_eq!(log_level("ERROR"), Some(40));
        assert_eq!(log_level("warning"), Some(30));
        assert_eq!(log_level("loud"), None);
        assert_eq!(
            FeedbackSource::parse("user_report_envelope"),
            Some(FeedbackSource::UserReportEnvelope)
        );
        assert_eq!(FeedbackSource::parse("nope"), None);
        assert!(FeedbackSource::NewFeedbackEnvelope.is_new_feedback());
    }
}
