//! The group-type registry (Sentry's `grouptype.py`): ids, slugs, categories, default
//! priorities, whether a type is released (unreleased types need the organization option
//! `<slug-with-dashes>-ingest`), creation quotas and noise configuration.

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

const DEFAULT_QUOTA: (u64, u64, u64) = (3600, 60, 5);

const fn t(
    id: i32,
    slug: &'static str,
    category: i32,
    default_priority: i32,
    released: bool,
) -> GroupType {
    GroupType {
        id,
        slug,
        category,
        default_priority,
        released,
        creation_quota: DEFAULT_QUOTA,
        noise_ignore_limit: None,
    }
}

/// Every registered type.
pub const REGISTRY: &[GroupType] = &[
    t(1, "error", cat::ERROR, priority::MEDIUM, true),
    GroupType {
        noise_ignore_limit: Some(100),
        ..t(
            1001,
            "performance_slow_db_query",
            cat::PERFORMANCE,
            priority::LOW,
            true,
        )
    },
    t(
        1004,
        "performance_render_blocking_asset_span",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    GroupType {
        noise_ignore_limit: Some(3),
        ..t(
            1006,
            "performance_n_plus_one_db_queries",
            cat::PERFORMANCE,
            priority::LOW,
            true,
        )
    },
    t(
        1007,
        "performance_consecutive_db_queries",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1008,
        "performance_file_io_main_thread",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1009,
        "performance_consecutive_http",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1010,
        "performance_n_plus_one_api_calls",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1012,
        "performance_uncompressed_assets",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1013,
        "performance_db_main_thread",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1015,
        "performance_large_http_payload",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        1016,
        "performance_http_overhead",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        2001,
        "profile_file_io_main_thread",
        cat::PERFORMANCE,
        priority::LOW,
        false,
    ),
    t(
        2002,
        "profile_image_decode_main_thread",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        2003,
        "profile_json_decode_main_thread",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        2007,
        "profile_regex_main_thread",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    t(
        2008,
        "profile_frame_drop",
        cat::PERFORMANCE,
        priority::LOW,
        true,
    ),
    GroupType {
        creation_quota: (3600, 60, 60_000),
        ..t(
            4001,
            "monitor_check_in_failure",
            cat::CRON,
            priority::HIGH,
            true,
        )
    },
    t(
        5001,
        "replay_deadclick",
        cat::REPLAY,
        priority::MEDIUM,
        false,
    ),
    GroupType {
        creation_quota: (3600, 60, 1000),
        ..t(6001, "feedback", cat::FEEDBACK, priority::MEDIUM, true)
    },
    GroupType {
        creation_quota: (3600, 60, 1000),
        ..t(
            7001,
            "uptime_domain_failure",
            cat::UPTIME,
            priority::HIGH,
            false,
        )
    },
    t(
        8001,
        "metric_issue",
        cat::METRIC_ALERT,
        priority::MEDIUM,
        false,
    ),
];

/// The type registered under `id`.
pub fn get(id: i32) -> Option<&'static GroupType> {
    REGISTRY.iter().find(|g| g.id == id)
}

impl GroupType {
    /// The organization option that lets an unreleased type in: `<slug with _ → ->-ingest`.
    pub fn ingest_option(&self) -> String {
        format!("{}-ingest", self.slug.replace('_', "-"))
    }

    /// Whether occurrences of this type are accepted for an organization with `org_options`.
    pub fn allows_ingest(&self, org_options: &serde_json::Value) -> bool {
        self.released
            || org_options
                .get(self.ingest_option())
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false)
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
        assert!(get(300).is_none());
        let ids: std::collections::HashSet<i32> = REGISTRY.iter().map(|g| g.id).collect();
        assert_eq!(ids.len(), REGISTRY.len(), "ids are unique");
    }

    #[test]
    fn unreleased_types_need_the_org_option() {
        let Some(profile) = get(2001) else {
            panic!("2001 registered")
        };
        assert_eq!(
            profile.ingest_option(),
            "profile-file-io-main-thread-ingest"
        );
        assert!(!profile.allows_ingest(&serde_json::json!({})));
        assert!(
            profile.allows_ingest(&serde_json::json!({"profile-file-io-main-thread-ingest": true}))
        );
        assert!(get(1).is_some_and(|g| g.allows_ingest(&serde_json::json!({}))));
    }
}
