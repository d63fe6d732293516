//! diesel table definitions matching `migrations/`.

diesel::table! {
    organizations (id) {
        id -> Int8,
        slug -> Text,
        name -> Nullable<Text>,
        options -> Jsonb,
        date_added -> Timestamptz,
    }
}

diesel::table! {
    projects (id) {
        id -> Int8,
        organization_id -> Int8,
        slug -> Text,
        name -> Nullable<Text>,
        options -> Jsonb,
        date_added -> Timestamptz,
    }
}

diesel::table! {
    events (project_id, event_id) {
        project_id -> Int8,
        #[max_length = 32]
        event_id -> Bpchar,
        group_id -> Nullable<Int8>,
        data -> Jsonb,
        date_added -> Timestamptz,
    }
}

diesel::table! {
    attachment_chunks (project_id, event_id, attachment_id, chunk_index) {
        project_id -> Int8,
        #[max_length = 32]
        event_id -> Bpchar,
        attachment_id -> Text,
        chunk_index -> Int4,
        data -> Bytea,
        expires_at -> Timestamptz,
    }
}

diesel::table! {
    groups (id) {
        id -> Int8,
        project_id -> Int8,
        #[sql_name = "type"]
        group_type -> Int4,
        status -> Int4,
        substatus -> Nullable<Int4>,
        priority -> Int4,
        level -> Int4,
        title -> Text,
        culprit -> Text,
        message -> Text,
        times_seen -> Int8,
        first_seen -> Timestamptz,
        last_seen -> Timestamptz,
        active_at -> Nullable<Timestamptz>,
        resolved_at -> Nullable<Timestamptz>,
        #[max_length = 32]
        last_occurrence_id -> Nullable<Bpchar>,
        data -> Jsonb,
    }
}

diesel::table! {
    group_hashes (id) {
        id -> Int8,
        project_id -> Int8,
        #[max_length = 32]
        hash -> Bpchar,
        group_id -> Int8,
    }
}

diesel::table! {
    occurrences (id) {
        #[max_length = 32]
        id -> Bpchar,
        project_id -> Int8,
        #[max_length = 32]
        event_id -> Bpchar,
        group_id -> Nullable<Int8>,
        #[sql_name = "type"]
        occurrence_type -> Int4,
        data -> Jsonb,
        date_added -> Timestamptz,
        dropped -> Nullable<Text>,
    }
}

diesel::table! {
    applied_status_changes (id) {
        #[max_length = 32]
        id -> Bpchar,
        project_id -> Int8,
        group_id -> Int8,
        applied_at -> Timestamptz,
    }
}

diesel::table! {
    activities (id) {
        id -> Int8,
        group_id -> Int8,
        project_id -> Int8,
        #[sql_name = "type"]
        activity_type -> Text,
        user_id -> Nullable<Int8>,
        data -> Jsonb,
        datetime -> Timestamptz,
    }
}

diesel::table! {
    group_history (id) {
        id -> Int8,
        group_id -> Int8,
        project_id -> Int8,
        status -> Text,
        prev_history_id -> Nullable<Int8>,
        date_added -> Timestamptz,
    }
}

diesel::table! {
    event_attachments (id) {
        id -> Int8,
        project_id -> Int8,
        #[max_length = 32]
        event_id -> Bpchar,
        attachment_id -> Text,
        group_id -> Nullable<Int8>,
        #[sql_name = "type"]
        attachment_type -> Text,
        name -> Text,
        content_type -> Text,
        size -> Int8,
        #[max_length = 40]
        sha1 -> Bpchar,
        blob_path -> Nullable<Text>,
        date_added -> Timestamptz,
    }
}

diesel::table! {
    user_reports (id) {
        id -> Int8,
        project_id -> Int8,
        #[max_length = 32]
        event_id -> Bpchar,
        group_id -> Nullable<Int8>,
        name -> Text,
        email -> Text,
        comments -> Text,
        date_added -> Timestamptz,
        #[max_length = 32]
        feedback_event_id -> Nullable<Bpchar>,
    }
}

diesel::table! {
    rate_limit_counters (key, bucket) {
        key -> Text,
        bucket -> Int8,
        count -> Int8,
    }
}

diesel::table! {
    noise_counters (project_id, hash) {
        project_id -> Int8,
        #[max_length = 32]
        hash -> Bpchar,
        count -> Int8,
        expires_at -> Timestamptz,
    }
}

diesel::joinable!(projects -> organizations (organization_id));
diesel::joinable!(group_hashes -> groups (group_id));

diesel::allow_tables_to_appear_in_same_query!(
    organizations,
    projects,
    events,
    attachment_chunks,
    groups,
    group_hashes,
    occurrences,
    applied_status_changes,
    activities,
    group_history,
    event_attachments,
    user_reports,
    rate_limit_counters,
    noise_counters,
);
