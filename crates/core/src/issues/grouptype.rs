//! The group-type registry (Sentry's `grouptype.py`): ids, slugs, categories, default
//! priorities, whether a type is released (unreleased types need an organization option, see
//! [`GroupType::allows_ingest`]), creation quotas and noise configuration.
//!
//! Synced with getsentry/sentry `src/sentry/issues/grouptype.py` at commit
//! `05590ddad11ef6221d8a2bd907b1d7509cff56ac` and the modules that register types of their own
//! (`monitors`, `uptime`, `incidents`, `feedback`, `preprod`, `workflow_engine`), with the legacy
//! category numbers (1 to 9 and 16 to 19). Types that later commits removed (1017, 2004, 2006,
//! 2008, 2010, 4002, 4003, 5001, 8002, as of commit `0008e9225012b533e26508dc1171844f1be6c228`)
//! stay registered, so services on older Sentry versions are still served. Noise reduction uses
//! Sentry's `NoiseConfig`: an issue is created at the `ignore_limit`-th occurrence of a
//! fingerprint within 24 hours.

use crate::messages::enums::{group_category as cat, priority};

/// One registered group type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupType {
    pub id: i32,
    pub slug: &'static str,
    pub category: i32,
    pub default_priority: i32,
    pub released: bool,
    /// (window seconds, granularity seconds, limit) of the issue creation quota.
    pub creation_quota: (u64, u64, u64),
    /// Occurrences needed before an issue is created (noise reduction), if any.
    pub noise_ignore_limit: Option<u64>,
}

/// Sentry's default creation quota: 5 new issues per hour, per project and type.
const DEFAULT_QUOTA: u64 = 5;

/// One row: id, slug, category, priority, released, creation quota per hour, noise ignore limit
/// (0: none).
const fn g(
    id: i32,
    slug: &'static str,
    category: i32,
    default_priority: i32,
    released: bool,
    quota: u64,
    noise: u64,
) -> GroupType {
    GroupType {
        id,
        slug,
        category,
        default_priority,
        released,
        creation_quota: (3600, 60, quota),
        noise_ignore_limit: if noise == 0 { None } else { Some(noise) },
    }
}

use priority::{HIGH as H, LOW as L, MEDIUM as M};
const Q: u64 = DEFAULT_QUOTA;

/// Every registered type.
pub const REGISTRY: &[GroupType] = &[
    g(1, "error", cat::ERROR, M, true, Q, 0),
    g(
        1001,
        "performance_slow_db_query",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        100,
    ),
    g(
        1004,
        "performance_render_blocking_asset_span",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1006,
        "performance_n_plus_one_db_queries",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1007,
        "performance_consecutive_db_queries",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        15,
    ),
    g(
        1008,
        "performance_file_io_main_thread",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1009,
        "performance_consecutive_http",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        5,
    ),
    g(
        1010,
        "performance_n_plus_one_api_calls",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1011,
        "performance_m_n_plus_one_db_queries",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1012,
        "performance_uncompressed_assets",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        100,
    ),
    g(
        1013,
        "performance_db_main_thread",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1015,
        "performance_large_http_payload",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        3,
    ),
    g(
        1016,
        "performance_http_overhead",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        20,
    ),
    g(
        1017,
        "performance_duration_regression",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        0,
    ),
    g(
        1018,
        "performance_p95_endpoint_regression",
        cat::PERFORMANCE,
        M,
        true,
        Q,
        0,
    ),
    g(
        1019,
        "performance_streamed_spans_exp",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        0,
    ),
    g(
        1020,
        "db_query_injection_vulnerability",
        cat::PERFORMANCE,
        M,
        false,
        Q,
        5,
    ),
    g(
        1021,
        "query_injection_vulnerability",
        cat::PERFORMANCE,
        M,
        false,
        Q,
        10,
    ),
    g(
        1906,
        "performance_n_plus_one_db_queries_experimental",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        3,
    ),
    g(
        1910,
        "performance_n_plus_one_api_calls_experimental",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        3,
    ),
    g(
        1911,
        "performance_m_n_plus_one_db_queries_experimental",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        3,
    ),
    g(
        2001,
        "profile_file_io_main_thread",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        0,
    ),
    g(
        2002,
        "profile_image_decode_main_thread",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        0,
    ),
    g(
        2003,
        "profile_json_decode_main_thread",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        0,
    ),
    g(
        2004,
        "profile_core_data_main_exp",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        0,
    ),
    g(
        2006,
        "profile_view_is_slow_experimental",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        0,
    ),
    g(
        2007,
        "profile_regex_main_thread",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        0,
    ),
    g(
        2008,
        "profile_frame_drop_experimental",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        0,
    ),
    g(
        2009,
        "profile_frame_drop",
        cat::PERFORMANCE,
        L,
        true,
        Q,
        2000,
    ),
    g(
        2010,
        "profile_function_regression_exp",
        cat::PERFORMANCE,
        L,
        false,
        Q,
        0,
    ),
    g(
        2011,
        "profile_function_regression",
        cat::PERFORMANCE,
        M,
        true,
        Q,
        0,
    ),
    g(
        3501,
        "llm_detected_experimental",
        cat::AI_DETECTED,
        M,
        false,
        Q,
        0,
    ),
    g(
        3502,
        "llm_detected_experimental_v2",
        cat::AI_DETECTED,
        M,
        false,
        Q,
        0,
    ),
    g(
        4001,
        "monitor_check_in_failure",
        cat::CRON,
        H,
        true,
        60_000,
        0,
    ),
    // Deprecated subclasses of 4001: Sentry registers them under 4001's slug.
    g(
        4002,
        "monitor_check_in_failure",
        cat::CRON,
        H,
        true,
        60_000,
        0,
    ),
    g(
        4003,
        "monitor_check_in_failure",
        cat::CRON,
        H,
        true,
        60_000,
        0,
    ),
    g(5001, "replay_click_dead", cat::REPLAY, M, false, Q, 0),
    g(5002, "replay_click_rage", cat::REPLAY, M, true, Q, 0),
    g(5003, "replay_hydration_error", cat::REPLAY, M, true, Q, 0),
    g(6001, "feedback", cat::FEEDBACK, M, true, 1000, 0),
    g(7001, "uptime_domain_failure", cat::UPTIME, H, true, 1000, 0),
    g(8001, "metric_issue", cat::METRIC_ALERT, H, false, 100, 0),
    g(8002, "metric_issue_poc", cat::METRIC_ALERT, H, false, Q, 0),
    g(
        9001,
        "send-test-notification",
        cat::TEST_NOTIFICATION,
        M,
        false,
        1000,
        0,
    ),
    g(10001, "web_vitals", cat::PERFORMANCE, M, true, Q, 0),
    g(11001, "preprod_static", cat::PREPROD, L, false, Q, 0),
    g(11002, "preprod_delta", cat::PREPROD, L, false, Q, 0),
    g(11003, "preprod_size_analysis", cat::PREPROD, L, false, Q, 0),
    g(
        12001,
        "instrumentation_issue_experimental",
        cat::INSTRUMENTATION,
        L,
        false,
        100,
        0,
    ),
    g(
        13001,
        "sourcemap_configuration",
        cat::CONFIGURATION,
        L,
        false,
        100,
        0,
    ),
];

/// The type registered under `id`.
pub fn get(id: i32) -> Option<&'static GroupType> {
    REGISTRY.iter().find(|g| g.id == id)
}

impl GroupType {
    /// The organization option that lets an unreleased type in: `<slug with _ → ->-ingest`.
    /// Sentry's own feature name, `issue-<slug with _ → ->-ingest`, is accepted too.
    pub fn ingest_option(&self) -> String {
        format!("{}-ingest", self.slug.replace('_', "-"))
    }

    /// Whether occurrences of this type are accepted for an organization with `org_options`.
    pub fn allows_ingest(&self, org_options: &serde_json::Value) -> bool {
        let option = self.ingest_option();
        self.released
            || [option.clone(), format!("issue-{option}")]
                .iter()
                .any(|o| org_options.get(o).and_then(serde_json::Value::as_bool) == Some(true))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_matches_sentry() {
        let err = get(1).map(|g| (g.category, g.default_priority, g.released));
        assert_eq!(err, Some((cat::ERROR, priority::MEDIUM, true)));
        assert_eq!(get(6001).map(|g| g.category), Some(cat::FEEDBACK));
        assert_eq!(
            get(4001).map(|g| (g.default_priority, g.creation_quota.2)),
            Some((priority::HIGH, 60_000))
        );
        assert_eq!(get(1006).and_then(|g| g.noise_ignore_limit), Some(3));
        assert_eq!(get(1001).and_then(|g| g.noise_ignore_limit), Some(100));
        assert_eq!(get(2009).and_then(|g| g.noise_ignore_limit), Some(2000));
        assert_eq!(
            get(2008).map(|g| g.slug),
            Some("profile_frame_drop_experimental")
        );
        assert_eq!(get(5001).map(|g| g.slug), Some("replay_click_dead"));
        for id in [
            1011, 1017, 1018, 1019, 2004, 2006, 2009, 2010, 2011, 4002, 4003, 5002, 5003, 8002,
        ] {
            assert!(get(id).is_some(), "{id} registered");
        }
        assert!(get(300).is_none());
        let ids: std::collections::HashSet<i32> = REGISTRY.iter().map(|g| g.id).collect();
        assert_eq!(ids.len(), REGISTRY.len(), "ids are unique");
    }

    #[test]
    fn unreleased_types_need_the_org_option() {
        let Some(profile) = get(2004) else {
            panic!("2004 registered")
        };
        assert_eq!(profile.ingest_option(), "profile-core-data-main-exp-ingest");
        assert!(!profile.allows_ingest(&serde_json::json!({})));
        assert!(
            profile.allows_ingest(&serde_json::json!({"profile-core-data-main-exp-ingest": true}))
        );
        let Some(frames) = get(2008) else {
            panic!("2008 registered")
        };
        assert!(frames.allows_ingest(
            &serde_json::json!({"issue-profile-frame-drop-experimental-ingest": true})
        ));
        assert!(get(1).is_some_and(|g| g.allows_ingest(&serde_json::json!({}))));
    }
}
