//! What every binary does around its stage: logging, settings, the metrics/health server, the
//! topic check, dependency probes for readiness, signal handling, and `migrate`.

use crate::cli::{CommonArgs, StageDefaults};
use crate::config::Settings;
use crate::health::Health;
use crate::storage::Db;
use std::future::Future;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

crate::gauge_vec!(
    /// 1 while the last probe of a dependency succeeded, 0 otherwise.
    fn dependency_up = "sluice_dependency_up",
    "Whether the last readiness probe reached the dependency (1) or not (0).",
    ["dependency"]
);

/// How often dependencies are probed for readiness.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// What a stage needs from its environment.
#[derive(Debug, Clone, Default)]
pub struct Needs {
    /// Kafka must be configured, and reachable for the process to be ready. Without it (the
    /// producer-shim, which processes items directly when the broker is down), a Kafka outage is
    /// reported by `sluice_dependency_up` but leaves the process ready: it can still serve.
    pub kafka: bool,
    /// The database must be configured.
    pub database: bool,
    /// Topics that must exist when Kafka is configured.
    pub topics: Vec<String>,
    /// The database must hold sluice's schema at this binary's version (every binary but test
    /// stages on tables of their own).
    pub schema: bool,
}

/// The started process: everything a stage runs with.
pub struct Context {
    pub stage: StageDefaults,
    pub common: CommonArgs,
    pub settings: Arc<Settings>,
    pub health: Arc<Health>,
    pub db: Option<Db>,
    /// Cancelled on SIGTERM/SIGINT.
    pub shutdown: CancellationToken,
    /// Where `/metrics` and the health endpoints are served.
    pub metrics_addr: std::net::SocketAddr,
}

/// Runs `main` on a multi-threaded runtime; an error is logged and becomes exit status 1.
pub fn block_on<F: Future<Output = anyhow::Result<()>>>(main: F) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "exiting on error");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl Context {
    /// Validates settings and required configuration, serves metrics and health, checks that the
    /// topics exist, and starts readiness probes and the signal handler.
    pub async fn start(
        stage: StageDefaults,
        common: CommonArgs,
        needs: Needs,
    ) -> anyhow::Result<Context> {
        crate::logging::init(common.log_format, &common.log_level);
        crate::metrics::set_build_info(stage.name);
        let settings = Arc::new(Settings::load(common.config.as_deref())?);
        install_kafka_options(&settings, &common)?;
        if needs.kafka && common.kafka_brokers.is_none() {
            anyhow::bail!(
                "Kafka is not configured: set --kafka-brokers or KAFKA_BROKERS \
                 (or --transport postgres to use the embedded transport in the database)"
            );
        }
        if needs.database && common.database_url.is_none() {
            anyhow::bail!("the database is not configured: set --database-url or DATABASE_URL");
        }
        let health = Health::new(Duration::from_millis(
            common.max_poll_interval_ms.max(60_000),
        ));
        let metrics_addr = crate::health::serve(common.metrics_addr(), health.clone()).await?;
        if let (Some(brokers), crate::cli::Transport::Kafka) =
            (&common.kafka_brokers, common.transport)
        {
            check_topics(brokers, &needs).await?;
        }
        let db = common.database_url.as_deref().map(|url| Db::new(url, 8));
        let shutdown = crate::shutdown::install(health.clone());
        let ctx = Context {
            stage,
            common,
            settings,
            health,
            db,
            shutdown,
            metrics_addr,
        };
        ctx.spawn_probes(needs.kafka);
        if let (Some(url), true) = (&ctx.common.database_url, needs.schema) {
            wait_for_schema(url, &ctx.health, &ctx.shutdown).await?;
        }
        tracing::info!(stage = stage.name, metrics = %metrics_addr, "started");
        Ok(ctx)
    }

    fn spawn_probes(&self, kafka_gates_readiness: bool) {
        let (health, db, brokers, token) = (
            self.health.clone(),
            self.db.clone(),
            self.common.kafka_brokers.clone(),
            self.shutdown.clone(),
        );
        let file = self.common.healthcheck_file_path.clone();
        tokio::spawn(async move {
            loop {
                let db_ok = match &db {
                    Some(db) => db
                        .ping()
                        .await
                        .map_err(|e| tracing::warn!(error = %e, "database probe failed"))
                        .is_ok(),
                    None => true,
                };
                let kafka_ok = match &brokers {
                    Some(b) => {
                        let b = b.clone();
                        tokio::task::spawn_blocking(move || {
                            crate::kafka::topics::missing_topics(&b, &[], Duration::from_secs(3))
                        })
                        .await
                        .map(|r| {
                            r.map_err(|e| tracing::warn!(error = %e, "Kafka probe failed"))
                                .is_ok()
                        })
                        .unwrap_or(false)
                    }
                    None => true,
                };
                if db.is_some() {
                    dependency_up()
                        .with_label_values(&["database"])
                        .set(i64::from(db_ok));
                }
                if brokers.is_some() {
                    dependency_up()
                        .with_label_values(&["kafka"])
                        .set(i64::from(kafka_ok));
                }
                health.set_dependencies_ok(db_ok && (kafka_ok || !kafka_gates_readiness));
                if let Some(path) = &file {
                    if health.is_live() {
                        touch(path);
                    }
                }
                tokio::select! {
                    _ = token.cancelled() => break,
                    _ = tokio::time::sleep(PROBE_INTERVAL) => {}
                }
            }
        });
    }

    /// Placeholder stage body: stays up (metrics, health) until SIGTERM, then exits 0.
    pub async fn idle_until_shutdown(self) -> anyhow::Result<()> {
        self.shutdown.cancelled().await;
        tracing::info!(stage = self.stage.name, "stopped");
        Ok(())
    }
}

/// Start-up topic check. Missing topics, and a broker that refuses the security settings, are
/// fatal. An unreachable broker is retried until it
/// answers when Kafka is required; otherwise (producer-shim, which can fall back) it is a warning.
async fn check_topics(brokers: &str, needs: &Needs) -> anyhow::Result<()> {
    use crate::kafka::topics::{ensure_topics_exist, TopicCheckError};
    loop {
        match ensure_topics_exist(brokers, needs.topics.clone(), Duration::from_secs(10)).await {
            Ok(()) => return Ok(()),
            Err(
                e @ (TopicCheckError::Missing(_)
                | TopicCheckError::Refused { .. }
                | TopicCheckError::Config(_)),
            ) => return Err(e.into()),
            Err(e) if needs.kafka => {
                tracing::warn!(error = %e, "Kafka unreachable at start-up; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Kafka unreachable at start-up; continuing (items fall back)");
                return Ok(());
            }
        }
    }
}

/// Waits until the database schema is one this binary can run on (when the database answers). While it is older (the new
/// binary was rolled out before `migrate` ran), the process stays up, reports not ready and says
/// so every few seconds, instead of failing its first query or crash-looping. A newer schema is
/// fine: migrations add before they remove.
pub async fn wait_for_schema(
    url: &str,
    health: &Arc<Health>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    loop {
        match check_schema(url, health).await {
            Some(true) => return Ok(()),
            Some(false) => {}
            // An outage is the runtime's to wait out (and the shim's fallback must serve): start,
            // and check again in the background once the database answers. Until then a query
            // on an older schema fails as an outage (the schema is not what this build expects),
            // so nothing is dead-lettered for it.
            None => {
                let (url, health, shutdown) = (url.to_owned(), health.clone(), shutdown.clone());
                tokio::spawn(async move {
                    loop {
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(SCHEMA_RETRY) => {}
                        }
                        if check_schema(&url, &health).await == Some(true) {
                            return;
                        }
                    }
                });
                return Ok(());
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => anyhow::bail!("stopped while waiting for the database schema"),
            _ = tokio::time::sleep(SCHEMA_RETRY) => {}
        }
    }
}

/// Reads the schema version once and sets readiness from it: `Some(true)` when this binary can
/// run on it, `Some(false)` when it is older than this binary needs, `None` when the database
/// cannot be asked.
async fn check_schema(url: &str, health: &Health) -> Option<bool> {
    use crate::storage::migrate::{schema_status, SchemaStatus};
    use diesel::Connection;
    // A connection of its own, closed after the check: the pools keep theirs for the work.
    let u = url.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        let mut conn = diesel::PgConnection::establish(&u).map_err(|e| e.to_string())?;
        schema_status(&mut conn).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())
    .and_then(|r| r);
    match status {
        Ok(SchemaStatus::Current) => {
            health.set_schema_ok(true);
            Some(true)
        }
        Ok(SchemaStatus::Ahead { have, need }) => {
            tracing::warn!(
                have,
                need,
                "the database schema is newer than this binary's; running"
            );
            health.set_schema_ok(true);
            Some(true)
        }
        Ok(SchemaStatus::Behind { have, need }) => {
            health.set_schema_ok(false);
            tracing::error!(
                have = have.as_deref().unwrap_or("none"),
                need,
                "the database schema is older than this binary needs: run `sluice migrate`; waiting (not ready)"
            );
            Some(false)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the schema version; checking again when the database answers");
            None
        }
    }
}

/// How often a binary waiting for its schema checks again.
const SCHEMA_RETRY: Duration = Duration::from_secs(3);

/// Installs the Kafka client options of the settings file's `[kafka]` table and
/// `--kafka-option` for every client this process creates; refused options are start-up errors.
pub fn install_kafka_options(settings: &Settings, common: &CommonArgs) -> anyhow::Result<()> {
    let options = crate::kafka::options::merge(&settings.kafka_options(), &common.kafka_options)?;
    crate::kafka::options::install(options);
    Ok(())
}

/// Touches the health-check file (creates it or updates its modification time).
pub fn touch(path: &std::path::Path) {
    let res = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
    if let Err(e) = res {
        tracing::warn!(path = %path.display(), error = %e, "cannot touch the health-check file");
    }
}

/// `migrate`: applies pending migrations under the advisory lock.
pub async fn migrate(common: &CommonArgs) -> anyhow::Result<()> {
    crate::logging::init(common.log_format, &common.log_level);
    let url = common.database_url.clone().ok_or_else(|| {
        anyhow::anyhow!("the database is not configured: set --database-url or DATABASE_URL")
    })?;
    let applied = tokio::task::spawn_blocking(move || crate::storage::migrate(&url)).await??;
    if applied.is_empty() {
        tracing::info!("schema is up to date");
    } else {
        tracing::info!(applied = ?applied, "migrations applied");
    }
    Ok(())
}
