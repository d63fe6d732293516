//! `sluice key …`: client keys (DSNs) of a project. `create` prints the DSN an SDK is configured
//! with on the last line of stdout.

use anyhow::Context as _;
use clap::Subcommand;
use sluice_core::storage::project_keys::{self, NewKey, ProjectKey};
use sluice_core::storage::{Db, DbError};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a key for a project; prints its DSN.
    Create {
        org: String,
        project: String,
        /// The URL SDKs reach the front door (`sluice edge` or `sluice run`) at.
        #[arg(long, env = "PUBLIC_URL", default_value = "http://127.0.0.1:9000")]
        public_url: String,
        /// A name for the key.
        #[arg(long, default_value = "Default")]
        label: String,
        /// Accept at most COUNT/SECONDS events with this key (for example 600/60); beyond, SDKs
        /// are answered 429 with `Retry-After`.
        #[arg(long, value_parser = parse_rate_limit)]
        rate_limit: Option<(i32, i32)>,
    },
    /// List the keys of a project with their DSNs.
    List {
        org: String,
        project: String,
        /// The URL SDKs reach the front door at.
        #[arg(long, env = "PUBLIC_URL", default_value = "http://127.0.0.1:9000")]
        public_url: String,
    },
    /// Stop accepting events sent with this public key.
    Disable { public_key: String },
    /// Accept events sent with this public key again.
    Enable { public_key: String },
}

fn parse_rate_limit(s: &str) -> Result<(i32, i32), String> {
    let (count, window) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?} is not COUNT/SECONDS"))?;
    let count: i32 = count
        .trim()
        .parse()
        .map_err(|_| format!("{count:?} is not a count"))?;
    let window: i32 = window
        .trim()
        .parse()
        .map_err(|_| format!("{window:?} is not a number of seconds"))?;
    if count < 0 || window <= 0 {
        return Err("the count must be ≥ 0 and the window > 0 seconds".into());
    }
    Ok((count, window))
}

/// `scheme://public_key@host[:port][/path]/project_id`, as Sentry writes a DSN.
pub fn dsn(public_url: &str, key: &ProjectKey) -> anyhow::Result<String> {
    let mut url = url::Url::parse(public_url)
        .with_context(|| format!("--public-url {public_url:?} is not a URL"))?;
    url.set_username(key.public_key.trim())
        .map_err(|()| anyhow::anyhow!("--public-url {public_url:?} cannot carry a key"))?;
    let path = format!("{}/{}", url.path().trim_end_matches('/'), key.project_id);
    url.set_path(&path);
    Ok(url.to_string())
}

pub async fn run(url: &str, command: &Command) -> anyhow::Result<()> {
    let db = Db::new(url, 1);
    match command {
        Command::Create {
            org,
            project,
            public_url,
            label,
            rate_limit,
        } => {
            url::Url::parse(public_url)
                .with_context(|| format!("--public-url {public_url:?} is not a URL"))?;
            let public_key = uuid::Uuid::new_v4().simple().to_string();
            let secret_key = uuid::Uuid::new_v4().simple().to_string();
            let (o, p, label, limit) = (org.clone(), project.clone(), label.clone(), *rate_limit);
            let key = db
                .run(move |c| {
                    let new = NewKey {
                        public_key: &public_key,
                        secret_key: &secret_key,
                        label: &label,
                        rate_limit: limit,
                    };
                    Ok::<_, DbError>(project_keys::create(c, &o, &p, &new)?)
                })
                .await?
                .with_context(|| format!("no project {project:?} in organization {org:?}"))?;
            eprintln!("key {} for {org}/{project}; DSN:", key.id);
            println!("{}", dsn(public_url, &key)?);
        }
        Command::List {
            org,
            project,
            public_url,
        } => {
            let (o, p) = (org.clone(), project.clone());
            let keys = db
                .run(move |c| Ok::<_, DbError>(project_keys::list(c, &o, &p)?))
                .await?
                .with_context(|| format!("no project {project:?} in organization {org:?}"))?;
            println!(
                "{:>6}  {:<8}  {:<12}  {:<16}  dsn",
                "id", "active", "rate limit", "label"
            );
            for k in keys {
                let limit = match (k.rate_limit_count, k.rate_limit_window) {
                    (Some(c), Some(w)) => format!("{c}/{w}s"),
                    _ => "-".into(),
                };
                println!(
                    "{:>6}  {:<8}  {:<12}  {:<16}  {}",
                    k.id,
                    k.is_active,
                    limit,
                    k.label,
                    dsn(public_url, &k)?
                );
            }
        }
        Command::Disable { public_key } | Command::Enable { public_key } => {
            let active = matches!(command, Command::Enable { .. });
            let k = public_key.clone();
            let n = db
                .run(move |c| Ok::<_, DbError>(project_keys::set_active(c, &k, active)?))
                .await?;
            if n == 0 {
                anyhow::bail!("no key {public_key:?}");
            }
            println!(
                "{} {public_key}",
                if active { "enabled" } else { "disabled" }
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ProjectKey {
        ProjectKey {
            id: 1,
            project_id: 42,
            organization_id: 1,
            public_key: "31a5a894b4524f74a9a8d0e27e21ba91".into(),
            label: "Default".into(),
            is_active: true,
            rate_limit_count: None,
            rate_limit_window: None,
            date_added: chrono::Utc::now(),
        }
    }

    #[test]
    fn dsns_are_written_as_sentry_writes_them() {
        let k = key();
        assert_eq!(
            dsn("http://127.0.0.1:9000", &k).ok().as_deref(),
            Some("http://31a5a894b4524f74a9a8d0e27e21ba91@127.0.0.1:9000/42")
        );
        assert_eq!(
            dsn("https://errors.example.com/sentry/", &k)
                .ok()
                .as_deref(),
            Some("https://31a5a894b4524f74a9a8d0e27e21ba91@errors.example.com/sentry/42")
        );
        assert!(dsn("not a url", &k).is_err());
    }

    #[test]
    fn rate_limits_parse() {
        assert_eq!(parse_rate_limit("600/60"), Ok((600, 60)));
        assert!(parse_rate_limit("600").is_err());
        assert!(parse_rate_limit("1/0").is_err());
        assert!(parse_rate_limit("-1/10").is_err());
    }
}
