//! The daemon: wires the runtime, registry, watcher, store, scheduler and
//! API together, and serves until told to stop.
//!
//! [`Daemon::start`] is what `wasmhive serve` runs and what tests and
//! benchmarks can run in-process; [`Daemon::serve`] takes a bound listener
//! and a shutdown future (the binary passes ctrl-c / SIGTERM).

use crate::api::{self, AppState};
use crate::breaker::BreakerSet;
use crate::capabilities::Services;
use crate::capabilities::http::HttpShared;
use crate::capabilities::http::resolve::OwnAddresses;
use crate::capabilities::models::ModelSet;
use crate::capabilities::vectors::VectorStore;
use crate::clock::{Clock, SystemClock};
use crate::config::StoreBackend;
use crate::config::{Config, ConfigError};
use crate::metrics::Metrics;
use crate::runtime::kinds::KindClaims;
use crate::runtime::registry::{Probation, Registry};
use crate::runtime::reload::{self, PluginWatcher};
use crate::runtime::{Runtime, RuntimeError};
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::store::node::{NodeInfo, NodeInfoSource};
use crate::store::sqlite::{SqliteOptions, SqliteStore};
use crate::store::{Store, StoreError};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("could not use directory {path}: {source}")]
    Directory {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("could not watch the plugins directory {path}: {source}")]
    Watch {
        path: PathBuf,
        source: notify::Error,
    },
    #[error("the HTTP server failed: {0}")]
    Serve(std::io::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{message}")]
    Claims { message: String },
    #[error(
        "another wasmhive daemon is using the data directory {path} (it holds {path}/wasmhive.lock); \
         stop it, or give this one its own --data"
    )]
    DataInUse { path: PathBuf },
}

/// A started daemon: plugins loaded and watched, ready to serve.
#[derive(Debug)]
pub struct Daemon {
    scheduler: Scheduler,
    config: Config,
    started: Instant,
    _watcher: PluginWatcher,
    /// Held while the daemon runs: one daemon per data directory.
    _data_lock: std::fs::File,
}

impl Daemon {
    /// Creates the directories, builds the engine, starts watching the
    /// plugins directory and loads what is in it.
    pub async fn start(config: Config) -> Result<Daemon, DaemonError> {
        Self::start_with_clock(config, Arc::new(SystemClock)).await
    }

    /// [`start`](Self::start) with an injected clock (tests drive breakers
    /// and retry timers with a `ManualClock`).
    pub async fn start_with_clock(
        mut config: Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Daemon, DaemonError> {
        config.validate()?;
        config.plugins = ensure_dir(&config.plugins)?;
        config.data = ensure_dir(&config.data)?;
        let data_lock = lock_data(&config.data)?;
        let cache_dir = if config.runtime.compile_cache {
            Some(ensure_dir(&config.data.join("cache"))?)
        } else {
            None
        };
        let breakers = Arc::new(BreakerSet::new(
            &config.breakers,
            config.plugin_breaker.breaker(),
            clock.clone(),
        ));
        let vectors = match config.store.backend {
            StoreBackend::Memory => VectorStore::in_memory(config.vectors.clone()),
            // Vector collections stay in the data directory with either
            // durable task store (they are per node).
            StoreBackend::Sqlite | StoreBackend::Postgres => {
                let path = config.data.join("vectors.db");
                let vector_config = config.vectors.clone();
                tokio::task::spawn_blocking(move || VectorStore::open(&path, vector_config))
                    .await
                    .map_err(|e| StoreError::Unavailable(format!("opening vectors failed: {e}")))?
                    .map_err(|message| StoreError::Open {
                        path: config.data.join("vectors.db"),
                        message,
                    })?
            }
        };
        let mut http = HttpShared::new(config.http.clone(), Some(breakers.clone()))
            .map_err(ConfigError::Invalid)?;
        http.own = OwnAddresses(vec![config.listen]);
        let services = Services {
            vectors: Some(Arc::new(vectors)),
            breakers: Some(breakers.clone()),
            http: Arc::new(http),
            models: Some(Arc::new(ModelSet::new(config.models_dir()))),
        };
        let runtime = Arc::new(Runtime::new(
            &config.runtime,
            &config.limits,
            config.pools.keys().cloned().collect(),
            cache_dir.as_deref(),
            services,
        )?);
        let probation = Probation {
            tasks: u64::from(config.plugin_breaker.probation_tasks),
            duration: Duration::from_secs(config.plugin_breaker.probation_s),
        };
        let claims = KindClaims::open(config.data.join("plugin-kinds.json"))
            .map_err(|message| DaemonError::Claims { message })?;
        let registry = Arc::new(Registry::new(
            runtime,
            config.plugins.clone(),
            clock.clone(),
            probation,
            claims,
        ));
        // Watch before scanning, so a file dropped during the scan is not missed.
        let debounce = Duration::from_millis(config.runtime.reload_debounce_ms);
        let watcher =
            reload::watch(registry.clone(), debounce).map_err(|source| DaemonError::Watch {
                path: config.plugins.clone(),
                source,
            })?;
        // The scan runs beside the API: the daemon answers (health says
        // which files are still loading) while plugins compile, and a slow
        // file never delays the port.
        {
            let registry = registry.clone();
            let dir = config.plugins.clone();
            tokio::spawn(async move {
                if let Err(e) = registry.scan().await {
                    tracing::error!(dir = %dir.display(), "could not read the plugins directory: {e}");
                }
            });
        }
        let store = match config.store.backend {
            StoreBackend::Memory => Store::memory(),
            StoreBackend::Sqlite => {
                let path = config.data.join("tasks.db");
                let options = SqliteOptions {
                    synchronous: config.store.synchronous,
                    max_size_mb: config.store.max_size_mb,
                };
                let opened =
                    tokio::task::spawn_blocking(move || SqliteStore::open(&path, &options))
                        .await
                        .map_err(|e| {
                            StoreError::Unavailable(format!("opening the store failed: {e}"))
                        })??;
                Store::Sqlite(opened)
            }
            StoreBackend::Postgres => {
                let url = config.store.url.clone().unwrap_or_default();
                let node = crate::store::postgres::node_name(&config.data)?;
                let options = crate::store::postgres::PostgresOptions {
                    pool_size: config.store.pool_size,
                    lease: Duration::from_secs(config.store.lease_s),
                    ..Default::default()
                };
                Store::Postgres(
                    crate::store::postgres::PostgresStore::connect(&url, &node, &options).await?,
                )
            }
        };
        let scheduler = Scheduler::start(
            store.clone(),
            registry,
            breakers,
            Arc::new(Metrics::default()),
            clock,
            SchedulerConfig {
                pools: config.pools.clone(),
                default_timeout_s: config.limits.timeout_s,
                retry: config.retry.clone(),
                rollback: config.plugin_breaker.rollback,
            },
        );
        scheduler.recover().await;
        if config.store.retention_s > 0 {
            scheduler.start_retention(crate::scheduler::maintenance::Retention {
                keep: Duration::from_secs(config.store.retention_s),
                every: Duration::from_secs(config.store.prune_interval_s.max(1)),
            });
        }
        Ok(Daemon {
            scheduler,
            config,
            started: Instant::now(),
            _watcher: watcher,
            _data_lock: data_lock,
        })
    }

    /// Waits until the start-up scan of the plugins directory is over:
    /// every file there is serving, refused or failed.
    pub async fn ready(&self) {
        self.scheduler.registry().scanned().await;
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.scheduler
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The REST API over this daemon.
    pub fn router(&self) -> axum::Router {
        self.router_at(format!("http://{}", self.config.listen))
    }

    /// This daemon as `GET /api/v1/nodes` and the other daemons sharing its
    /// store see it, built afresh each time: pools, loaded plugin versions.
    fn node_info(&self, address: String) -> NodeInfoSource {
        let scheduler = self.scheduler.clone();
        let started = std::time::SystemTime::now() - self.started.elapsed();
        let started_at = humantime::format_rfc3339_millis(started).to_string();
        NodeInfoSource::new(move || NodeInfo {
            id: scheduler.store().node_name().to_string(),
            address: address.clone(),
            started_at: started_at.clone(),
            last_heartbeat: humantime::format_rfc3339_millis(std::time::SystemTime::now())
                .to_string(),
            pools: scheduler
                .pools()
                .map(|p| (p.name.clone(), p.size))
                .collect(),
            running: scheduler
                .pools()
                .map(|p| (p.name.clone(), p.running_tasks()))
                .collect(),
            plugins: scheduler
                .registry()
                .statuses()
                .into_iter()
                .filter(|s| s.status == "loaded")
                .filter_map(|s| Some((s.name?, s.version?)))
                .collect(),
        })
    }

    fn router_at(&self, address: String) -> axum::Router {
        let state = AppState {
            scheduler: self.scheduler.clone(),
            max_wait: Duration::from_secs(self.config.api.max_wait_s),
            started: self.started,
            node: self.node_info(address),
        };
        let max_body = usize::try_from(self.config.api.max_body_mb << 20).unwrap_or(usize::MAX);
        let token = self.config.auth_token.as_deref().map(Arc::from);
        api::router(state, max_body, token)
    }

    /// Serves the API on `listener` until `shutdown` resolves, then stops
    /// taking tasks and gives running attempts `runtime.shutdown_grace_s`
    /// to finish before interrupting them.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DaemonError> {
        let address = listener
            .local_addr()
            .map_or_else(|_| self.config.listen.to_string(), |a| a.to_string());
        let address = format!("http://{address}");
        let node = self.node_info(address.clone());
        self.scheduler.store().describe_node(node.clone());
        // Once the start-up scan is over, the others hear what it loaded
        // at once rather than at the next heartbeat.
        let scheduler = self.scheduler.clone();
        tokio::spawn(async move {
            scheduler.registry().scanned().await;
            scheduler.store().describe_node(node);
        });
        let served = axum::serve(listener, self.router_at(address))
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(DaemonError::Serve);
        self.shutdown().await;
        served
    }

    /// Stops the scheduler: no new work, running attempts get the grace
    /// period, the rest are interrupted and re-queued.
    pub async fn shutdown(&self) {
        let grace = Duration::from_secs(self.config.runtime.shutdown_grace_s);
        self.scheduler.shutdown(grace).await;
        // Everything the scheduler recorded reaches the disk before exit.
        if let Err(e) = self.scheduler.store().sync().await {
            tracing::error!("the last task changes could not be stored: {e}");
        }
    }
}

/// Creates `dir` if needed and returns it absolute.
/// Takes `<data>/wasmhive.lock` (an advisory lock the OS drops when the
/// process ends, however it ends), so a second daemon on the same data
/// directory is refused instead of serving a diverging copy of its tasks.
fn lock_data(data: &Path) -> Result<std::fs::File, DaemonError> {
    let path = data.join("wasmhive.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| DaemonError::Directory {
            path: path.clone(),
            source,
        })?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(DaemonError::DataInUse {
            path: data.to_path_buf(),
        }),
        Err(std::fs::TryLockError::Error(source)) => Err(DaemonError::Directory { path, source }),
    }
}

fn ensure_dir(dir: &Path) -> Result<PathBuf, DaemonError> {
    let err = |source| DaemonError::Directory {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    dir.canonicalize().map_err(err)
}
