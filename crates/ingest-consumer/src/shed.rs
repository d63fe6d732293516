//! Load shedding: the two killswitch lists of the settings file, matched against
//! Sentry's contexts (values compared as strings).

use sluice_core::config::Settings;
use sluice_core::issues::project::Project;

fn flag(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// `load_shed.pipeline_projects`, checked before the payload is parsed.
pub fn before_parse(
    s: &Settings,
    project: &Project,
    event_id: &str,
    has_attachments: bool,
) -> bool {
    let pid = project.id.to_string();
    s.load_shed.pipeline_projects.matches(&[
        ("project_id", pid.as_str()),
        ("event_id", event_id),
        ("has_attachments", flag(has_attachments)),
    ])
}

/// `load_shed.parsed_pipeline_projects`, checked once the event type is known.
pub fn after_parse(
    s: &Settings,
    project: &Project,
    event_id: &str,
    event_type: &str,
    has_attachments: bool,
) -> bool {
    let (pid, org) = (project.id.to_string(), project.organization_id.to_string());
    s.load_shed.parsed_pipeline_projects.matches(&[
        ("organization_id", org.as_str()),
        ("project_id", pid.as_str()),
        ("event_type", event_type),
        ("has_attachments", flag(has_attachments)),
        ("event_id", event_id),
    ])
}
