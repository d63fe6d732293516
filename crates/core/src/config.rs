//! Global settings: one TOML file given by `--config`, overridden by environment
//! variables `SLUICE_<SECTION>__<KEY>` (e.g. `SLUICE_FEEDBACK__MESSAGE_MAX_SIZE=8192`). Defaults
//! make a fresh install fully functional: nothing is shed, limited or dropped unless configured.
//! Unknown keys are start-up errors, so a typo never silently falls back to a default.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// Prefix of the environment variables that override config keys.
pub const ENV_PREFIX: &str = "SLUICE_";

/// Every global setting.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    pub feedback: FeedbackSettings,
    pub load_shed: LoadShedSettings,
    pub attachments: AttachmentSettings,
    pub issues: IssueSettings,
    /// librdkafka properties for every Kafka client (`crate::kafka::options`); `--kafka-option`
    /// overrides them.
    pub kafka: BTreeMap<String, ScalarText>,
}

impl Settings {
    /// The `[kafka]` table as text values.
    pub fn kafka_options(&self) -> BTreeMap<String, String> {
        self.kafka
            .iter()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect()
    }
}

/// User feedback and user reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedbackSettings {
    /// Organization slugs whose user reports and feedback are refused (`feedback.organizations.slug-denylist`).
    pub slug_denylist: Vec<String>,
    /// Messages longer than this many characters are truncated in the subtitle (`feedback.message.max-size`).
    pub message_max_size: usize,
    /// Drop empty and Unreal-unattended user reports (`feedback.filter_garbage_messages`).
    pub filter_garbage_messages: bool,
    /// URL of the HTTP spam classifier used by projects with `feedback.spam_detection = "http"`.
    pub spam_classifier_url: Option<String>,
    /// Classifier timeout; on timeout or error the feedback is treated as not spam.
    pub spam_classifier_timeout_ms: u64,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            slug_denylist: Vec::new(),
            message_max_size: 4096,
            filter_garbage_messages: false,
            spam_classifier_url: None,
            spam_classifier_timeout_ms: 500,
        }
    }
}

/// Load-shedding killswitches (`store.load-shed-*`): lists of conditions.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoadShedSettings {
    /// Messages matching any condition are dropped before processing (`store.load-shed-pipeline-projects`).
    pub pipeline_projects: Killswitch,
    /// Events matching any condition are dropped after parsing (`store.load-shed-parsed-pipeline-projects`).
    pub parsed_pipeline_projects: Killswitch,
}

/// Attachment handling.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttachmentSettings {
    /// Per-project attachment saves per second; 0 = unlimited (the default).
    pub project_per_sec_limit: u32,
    /// Per-project attachment saves per 5 minutes; 0 = unlimited (the default).
    pub project_per_5_minute_limit: u32,
    /// How long chunks wait in Postgres for their attachment or event.
    pub chunk_ttl_secs: u64,
    /// Where Relay uploads attachment bodies itself (its `objectstore_url`). Attachments it
    /// then sends by reference (`stored_id`) are recorded with `blob_path = "objectstore:<stored_id>"`
    /// and their declared size, the bytes staying there; unset (the default), such attachments
    /// get an INVALID outcome (`stored_attachment_unavailable`) instead of an empty row.
    pub relay_objectstore_url: Option<String>,
}

impl Default for AttachmentSettings {
    fn default() -> Self {
        AttachmentSettings {
            project_per_sec_limit: 0,
            project_per_5_minute_limit: 0,
            chunk_ttl_secs: 3600,
            relay_objectstore_url: None,
        }
    }
}

/// Issue-platform limits; all off by default (error occurrences are never subject to them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IssueSettings {
    /// Per-project, per-fingerprint occurrence rate limit.
    pub occurrence_rate_limit: Quota,
    /// Per-project, per-group-type issue creation quotas of the group-type registry.
    pub creation_quotas: bool,
    /// Noise reduction: hold back issue creation until a type's ignore limit is reached.
    pub noise_reduction: bool,
}

/// A sliding-window quota.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    pub enabled: bool,
    pub window_seconds: u64,
    pub granularity_seconds: u64,
    pub limit: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            enabled: false,
            window_seconds: 3600,
            granularity_seconds: 60,
            limit: 1000,
        }
    }
}

/// A killswitch: a context matches when **any** condition matches; a condition matches when
/// **every** key it lists equals the context's value for that key, compared as strings. An empty
/// list never matches.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Killswitch(pub Vec<BTreeMap<String, ScalarText>>);

impl Killswitch {
    /// Whether `context` (key → stringified value) matches any condition.
    pub fn matches(&self, context: &[(&str, &str)]) -> bool {
        self.0.iter().any(|cond| {
            cond.iter()
                .all(|(k, v)| context.iter().any(|(ck, cv)| ck == k && *cv == v.0))
        })
    }
}

/// A config scalar (string, integer, float or bool) kept as its string form.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct ScalarText(pub String);

impl<'de> Deserialize<'de> for ScalarText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            I(i64),
            U(u64),
            F(f64),
            B(bool),
            S(String),
        }
        Ok(ScalarText(match Any::deserialize(d)? {
            Any::I(v) => v.to_string(),
            Any::U(v) => v.to_string(),
            Any::F(v) => v.to_string(),
            Any::B(v) => v.to_string(),
            Any::S(v) => v,
        }))
    }
}

/// A settings file or override that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Settings {
    /// Defaults, then the TOML file (if given; it must exist), then `SLUICE_*` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Settings, ConfigError> {
        Self::load_with_env(path, Env::prefixed(ENV_PREFIX).split("__"))
    }

    fn load_with_env(path: Option<&Path>, env: Env) -> Result<Settings, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Settings::default()));
        if let Some(p) = path {
            if !p.is_file() {
                return Err(ConfigError(format!(
                    "config file {} does not exist",
                    p.display()
                )));
            }
            fig = fig.merge(Toml::file(p));
        }
        fig.merge(env)
            .extract()
            .map_err(|e| ConfigError(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature
mod tests {
    use super::*;

    #[test]
    fn defaults_lose_nothing() {
        let s = Settings::load_with_env(None, Env::prefixed("SLUICE_TEST_NOTHING_"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, Settings::default());
        assert_eq!(s.feedback.message_max_size, 4096);
        assert!(!s.issues.occurrence_rate_limit.enabled && !s.issues.creation_quotas);
        assert_eq!(s.attachments.project_per_sec_limit, 0);
        assert!(!s
            .load_shed
            .pipeline_projects
            .matches(&[("project_id", "1")]));
    }

    #[test]
    fn file_then_env_overrides() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "sluice.toml",
                r#"
                [feedback]
                message_max_size = 100
                slug_denylist = ["spammy"]

                [[load_shed.pipeline_projects]]
                project_id = 42

                [[load_shed.pipeline_projects]]
                project_id = "7"
                event_type = "transaction"
                "#,
            )?;
            jail.set_env("SLUICE_FEEDBACK__MESSAGE_MAX_SIZE", "8192");
            let s = Settings::load(Some(Path::new("sluice.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(s.feedback.message_max_size, 8192, "env wins over file");
            assert_eq!(s.feedback.slug_denylist, vec!["spammy".to_owned()]);
            let ks = &s.load_shed.pipeline_projects;
            assert!(ks.matches(&[("project_id", "42")]));
            assert!(
                !ks.matches(&[("project_id", "7")]),
                "every key of a condition must match"
            );
            assert!(ks.matches(&[("project_id", "7"), ("event_type", "transaction")]));
            assert!(!ks.matches(&[("project_id", "8")]));
            Ok(())
        });
    }

    #[test]
    fn typos_and_missing_files_are_errors() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "[feedback]\nmessage_max_sise = 1\n")?;
            assert!(Settings::load(Some(Path::new("bad.toml"))).is_err());
            assert!(Settings::load(Some(Path::new("absent.toml"))).is_err());
            Ok(())
        });
    }
}
