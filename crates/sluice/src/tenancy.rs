//! `sluice org …` and `sluice project …`: provisioning. `create` prints the id on the last line
//! of stdout, so scripts can take it with `tail -n1`.

use anyhow::Context as _;
use clap::Subcommand;
use serde_json::{Map, Value};
use sluice_core::storage::{projects, Db, DbError};

#[derive(Subcommand, Debug)]
pub enum OrgCommand {
    /// Create an organization (or update the options of an existing one); prints its id.
    Create {
        slug: String,
        /// An option, KEY=VALUE (repeatable); VALUE is JSON when it parses as JSON, else text.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List organizations.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ProjectCommand {
    /// Create a project in an organization (or update its options); prints its id.
    Create {
        org: String,
        slug: String,
        /// An option, KEY=VALUE (repeatable); VALUE is JSON when it parses as JSON, else text.
        /// `sluice:retention-days` sets the project's retention.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
    },
    /// List the projects of an organization.
    List { org: String },
}

/// Parses `KEY=VALUE` options into a JSON object.
fn options(pairs: &[String]) -> anyhow::Result<Value> {
    let mut map = Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .with_context(|| format!("--option {pair:?}: expected KEY=VALUE"))?;
        let value = serde_json::from_str(value).unwrap_or_else(|_| Value::String(value.into()));
        map.insert(key.to_owned(), value);
    }
    Ok(Value::Object(map))
}

fn print(rows: &[projects::Listed]) {
    println!("{:>8}  {:<32}  options", "id", "slug");
    for r in rows {
        println!("{:>8}  {:<32}  {}", r.id, r.slug, r.options);
    }
}

pub async fn org(url: &str, command: &OrgCommand) -> anyhow::Result<()> {
    let db = Db::new(url, 1);
    match command {
        OrgCommand::Create { slug, options: o } => {
            let (slug, o) = (slug.clone(), options(o)?);
            let id = db
                .run(move |c| Ok::<_, DbError>(projects::create_organization(c, &slug, &o)?))
                .await?;
            println!("{id}");
        }
        OrgCommand::List => {
            let rows = db
                .run(|c| Ok::<_, DbError>(projects::organizations(c)?))
                .await?;
            print(&rows);
        }
    }
    Ok(())
}

pub async fn project(url: &str, command: &ProjectCommand) -> anyhow::Result<()> {
    let db = Db::new(url, 1);
    match command {
        ProjectCommand::Create {
            org,
            slug,
            options: o,
        } => {
            let (org, slug, o) = (org.clone(), slug.clone(), options(o)?);
            let id = db
                .run({
                    let org = org.clone();
                    move |c| Ok::<_, DbError>(projects::create_project(c, &org, &slug, &o)?)
                })
                .await?
                .with_context(|| format!("no organization {org:?}"))?;
            println!("{id}");
        }
        ProjectCommand::List { org } => {
            let o = org.clone();
            let rows = db
                .run(move |c| Ok::<_, DbError>(projects::projects_of(c, &o)?))
                .await?
                .with_context(|| format!("no organization {org:?}"))?;
            print(&rows);
        }
    }
    Ok(())
}
