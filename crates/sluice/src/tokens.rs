//! `sluice token …`: API bearer tokens of an organization. `create` prints the token on the
//! last line of stdout (it is shown once: only its SHA-256 is stored).

use anyhow::Context as _;
use clap::Subcommand;
use sluice_api::auth;
use sluice_core::storage::{tokens, Db, DbError};

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create a token for an organization; prints it.
    Create { org: String },
    /// Revoke the live tokens that start with PREFIX (at least the first 12 characters).
    Revoke { prefix: String },
    /// List the tokens of an organization (by prefix).
    List { org: String },
}

pub async fn run(url: &str, command: &Command) -> anyhow::Result<()> {
    let db = Db::new(url, 1);
    match command {
        Command::Create { org } => {
            let token = auth::new_token();
            let (o, hash, prefix) = (
                org.clone(),
                auth::hash(&token),
                auth::display_prefix(&token),
            );
            db.run(move |c| Ok::<_, DbError>(tokens::create(c, &o, &hash, &prefix)?))
                .await?
                .with_context(|| format!("no organization {org:?}"))?;
            eprintln!("token for {org} (shown once; store it now):");
            println!("{token}");
        }
        Command::Revoke { prefix } => {
            if prefix.chars().count() < auth::TOKEN_PREFIX.len() + 5 {
                anyhow::bail!(
                    "prefix {prefix:?} is too short: give at least {} characters",
                    auth::TOKEN_PREFIX.len() + 5
                );
            }
            let p: String = prefix
                .chars()
                .take(auth::display_prefix(prefix).len())
                .collect();
            let n = db
                .run(move |c| Ok::<_, DbError>(tokens::revoke(c, &p)?))
                .await?;
            if n == 0 {
                anyhow::bail!("no live token starts with {prefix:?}");
            }
            println!("revoked {n}");
        }
        Command::List { org } => {
            let o = org.clone();
            let rows = db
                .run(move |c| Ok::<_, DbError>(tokens::list(c, &o)?))
                .await?
                .with_context(|| format!("no organization {org:?}"))?;
            println!(
                "{:>6}  {:<16}  {:<25}  {:<25}  revoked",
                "id", "prefix", "created", "last used"
            );
            for t in rows {
                let at = |t: Option<chrono::DateTime<chrono::Utc>>| {
                    t.map_or_else(|| "-".to_owned(), |t| t.to_rfc3339())
                };
                println!(
                    "{:>6}  {:<16}  {:<25}  {:<25}  {}",
                    t.id,
                    t.token_prefix,
                    t.date_added.to_rfc3339(),
                    at(t.last_used),
                    at(t.revoked_at)
                );
            }
        }
    }
    Ok(())
}
