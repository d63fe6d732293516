//! `sluice webhook …`: webhook subscriptions of an organization or one of its projects.

use clap::Subcommand;
use sluice_core::storage::webhooks::{self, event, AddError};
use sluice_core::storage::{Db, DbError};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Subscribe URL to an organization's (or one project's) notifications; prints the id.
    Add {
        org: String,
        /// Where to POST.
        #[arg(long)]
        url: String,
        /// Key of the HMAC-SHA256 signature (`Sentry-Hook-Signature`).
        #[arg(long, env = "WEBHOOK_SECRET", hide_env_values = true)]
        secret: String,
        /// Only this project's notifications.
        #[arg(long)]
        project: Option<String>,
        /// Comma-separated events: issue.created, issue.resolved, issue.ignored,
        /// issue.unresolved, user_report.created, feedback.spam (default: all but feedback.spam).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
    },
    /// List subscriptions with their pending and failed deliveries.
    List,
    /// Remove a subscription (and its queued deliveries).
    Remove { id: i64 },
}

pub async fn run(url: &str, command: &Command) -> anyhow::Result<()> {
    let db = Db::new(url, 1);
    match command {
        Command::Add {
            org,
            url: target,
            secret,
            project,
            events,
        } => {
            let parsed = url::Url::parse(target)
                .map_err(|e| anyhow::anyhow!("--url {target:?} is not a URL: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                anyhow::bail!("--url must be http or https");
            }
            if secret.is_empty() {
                anyhow::bail!("--secret must not be empty");
            }
            let mut wanted: Vec<String> = events
                .iter()
                .map(|e| e.trim().to_owned())
                .filter(|e| !e.is_empty())
                .collect();
            if let Some(bad) = wanted.iter().find(|e| !event::ALL.contains(&e.as_str())) {
                anyhow::bail!("unknown event {bad:?}; known: {}", event::ALL.join(", "));
            }
            if wanted.is_empty() {
                wanted = event::DEFAULT.iter().map(|e| (*e).to_owned()).collect();
            }
            let (o, p, u, s) = (org.clone(), project.clone(), target.clone(), secret.clone());
            let added = db
                .run(move |c| {
                    Ok::<_, DbError>(webhooks::add(c, &o, p.as_deref(), &u, &s, &wanted)?)
                })
                .await?;
            match added {
                Ok(id) => println!("{id}"),
                Err(AddError::NoOrganization) => anyhow::bail!("no organization {org:?}"),
                Err(AddError::NoProject) => {
                    anyhow::bail!(
                        "no project {:?} in {org:?}",
                        project.as_deref().unwrap_or("")
                    )
                }
            }
        }
        Command::List => {
            let rows = db.run(|c| Ok::<_, DbError>(webhooks::list(c)?)).await?;
            println!(
                "{:>6}  {:<20}  {:<16}  {:>7}  {:>6}  {:<40}  events",
                "id", "organization", "project", "pending", "failed", "url"
            );
            for s in rows {
                println!(
                    "{:>6}  {:<20}  {:<16}  {:>7}  {:>6}  {:<40}  {}",
                    s.id,
                    s.organization_slug,
                    s.project_slug.as_deref().unwrap_or("*"),
                    s.pending,
                    s.failed,
                    s.url,
                    s.events.join(",")
                );
            }
        }
        Command::Remove { id } => {
            let id = *id;
            if !db
                .run(move |c| Ok::<_, DbError>(webhooks::remove(c, id)?))
                .await?
            {
                anyhow::bail!("no subscription {id}");
            }
            println!("removed {id}");
        }
    }
    Ok(())
}
