//! The daemon's configuration: one [`Config`] with documented defaults.
//!
//! Sources, strongest first: command-line flags, `WASMHIVE_*` environment
//! variables (both handled by clap in `cli`), the `--config` TOML file, and
//! the defaults here. A TOML file may set any subset of the fields:
//!
//! ```toml
//! listen = "127.0.0.1:8080"
//! plugins = "plugins"
//! data = "wasmhive-data"
//! [limits]
//! memory_mb = 64
//! timeout_s = 300
//! [pools]
//! scraping = 6
//! ```

use crate::breaker::BreakerConfig;
pub use crate::runtime::settings::{Limits, RuntimeConfig};
use crate::scheduler::retry::RetryPolicy;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything the daemon needs to start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the REST API listens. Loopback by default: exposing the daemon
    /// is an explicit operator decision.
    pub listen: SocketAddr,
    /// The watched plugins directory (`<name>.wasm` + optional `<name>.toml`).
    pub plugins: PathBuf,
    /// The data directory: compiled-code cache, and later the task store.
    pub data: PathBuf,
    /// Default per-plugin limits; a manifest's `[limits]` overrides them.
    pub limits: Limits,
    /// Sandbox engine settings, fixed for the daemon's life.
    pub runtime: RuntimeConfig,
    /// REST API settings.
    pub api: ApiConfig,
    /// When set, every route but `/api/hp/health` requires
    /// `Authorization: Bearer <auth_token>`.
    pub auth_token: Option<String>,
    /// Worker pools: category -> workers. The defaults (scraping 6, rag 10,
    /// embedding 3, batch 2, maintenance 1) are always present; a file may
    /// resize them or add categories.
    pub pools: BTreeMap<String, usize>,
    /// Retry backoff.
    pub retry: RetryPolicy,
    /// Named circuit breakers; `openai`, `vectors` and `browser` always exist.
    pub breakers: BTreeMap<String, BreakerConfig>,
    /// The automatic breaker of every plugin version.
    pub plugin_breaker: PluginBreakerConfig,
    /// Where tasks are kept.
    pub store: StoreConfig,
    /// The vector collections (`<data>/vectors.db`).
    pub vectors: crate::capabilities::vectors::VectorConfig,
    /// Outbound HTTP of plugins.
    pub http: crate::capabilities::http::HttpConfig,
    /// The embedding models directory (the `models` capability: one
    /// directory per model) [default: `<data>/models`].
    pub models: Option<PathBuf>,
}

/// Which task store, and how it keeps data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite` (durable, `<data>/tasks.db`), `memory` (lost on restart)
    /// or `postgres` (the database at `url`, shared by several daemons).
    pub backend: StoreBackend,
    /// The PostgreSQL connection URL (`postgres://user:password@host/db`);
    /// setting it selects the `postgres` backend.
    pub url: Option<String>,
    /// Connections to PostgreSQL a daemon keeps open at most.
    pub pool_size: usize,
    /// PostgreSQL: how long a daemon's claims and running attempts stay its
    /// own without a renewal, seconds; a dead daemon's attempts run again
    /// elsewhere after this.
    pub lease_s: u64,
    /// `full` (fsync each group commit: survives power loss) or `normal`
    /// (survives a daemon crash, not a machine crash).
    pub synchronous: crate::store::sqlite::Synchronous,
    /// Finished tasks older than this are deleted, seconds (0 keeps them).
    pub retention_s: u64,
    /// How often retention runs, seconds.
    pub prune_interval_s: u64,
    /// Largest database file, MiB (0 = no cap); past it submissions get 503.
    pub max_size_mb: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreBackend {
    Sqlite,
    Memory,
    Postgres,
}

/// What `--store` (and `WASMHIVE_STORE`) names: `sqlite`, `memory`, or a
/// PostgreSQL URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreChoice {
    Sqlite,
    Memory,
    Postgres(String),
}

impl std::str::FromStr for StoreChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sqlite" => Ok(StoreChoice::Sqlite),
            "memory" => Ok(StoreChoice::Memory),
            url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                Ok(StoreChoice::Postgres(url.to_string()))
            }
            other => Err(format!(
                "`{other}` is not a task store: use sqlite, memory, or a PostgreSQL URL (postgres://user@host/db)"
            )),
        }
    }
}

impl StoreConfig {
    /// Applies `--store`.
    pub fn choose(&mut self, choice: StoreChoice) {
        match choice {
            StoreChoice::Sqlite => {
                self.backend = StoreBackend::Sqlite;
                self.url = None;
            }
            StoreChoice::Memory => {
                self.backend = StoreBackend::Memory;
                self.url = None;
            }
            StoreChoice::Postgres(url) => {
                self.backend = StoreBackend::Postgres;
                self.url = Some(url);
            }
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            backend: StoreBackend::Sqlite,
            url: None,
            pool_size: crate::store::postgres::DEFAULT_POOL_SIZE,
            lease_s: crate::store::postgres::DEFAULT_LEASE.as_secs(),
            synchronous: crate::store::sqlite::Synchronous::Full,
            retention_s: 7 * 24 * 3600,
            prune_interval_s: 60,
            max_size_mb: 0,
        }
    }
}

/// The automatic per-plugin-version breaker and the rollback it drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginBreakerConfig {
    /// Consecutive failed attempts that open it: traps, timeouts, out of
    /// memory or fuel (and fatal errors while the version is on probation).
    pub failures: u32,
    pub open_s: u64,
    pub half_open_trials: u32,
    /// A freshly swapped version is on probation for its first
    /// `probation_tasks` attempts or `probation_s` seconds, whichever ends
    /// first; if its breaker opens meanwhile, the previous version comes back.
    pub probation_tasks: u32,
    pub probation_s: u64,
    /// Roll back automatically (needs a previous version).
    pub rollback: bool,
}

impl Default for PluginBreakerConfig {
    fn default() -> Self {
        PluginBreakerConfig {
            failures: 5,
            open_s: 30,
            half_open_trials: 1,
            probation_tasks: 100,
            probation_s: 300,
            rollback: true,
        }
    }
}

impl PluginBreakerConfig {
    pub fn breaker(&self) -> BreakerConfig {
        BreakerConfig {
            failures: self.failures,
            open_s: self.open_s,
            half_open_trials: self.half_open_trials,
            ..BreakerConfig::default()
        }
    }
}

/// The original system's 22 workers in 5 categories.
pub fn default_pools() -> BTreeMap<String, usize> {
    [
        ("scraping", 6),
        ("rag", 10),
        ("embedding", 3),
        ("batch", 2),
        ("maintenance", 1),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

impl Config {
    /// Where the `models` capability reads its models.
    pub fn models_dir(&self) -> PathBuf {
        self.models
            .clone()
            .unwrap_or_else(|| self.data.join("models"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            plugins: PathBuf::from("plugins"),
            data: PathBuf::from("wasmhive-data"),
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            api: ApiConfig::default(),
            auth_token: None,
            pools: default_pools(),
            retry: RetryPolicy::default(),
            breakers: BreakerConfig::defaults(),
            plugin_breaker: PluginBreakerConfig::default(),
            store: StoreConfig::default(),
            vectors: Default::default(),
            http: Default::default(),
            models: None,
        }
    }
}

/// REST API settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted, MiB.
    pub max_body_mb: u64,
    /// Longest `?wait=` a client may ask for, seconds.
    pub max_wait_s: u64,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            max_body_mb: 10,
            max_wait_s: 300,
        }
    }
}

/// A configuration that cannot be used, with what to fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("could not read the config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Reads a TOML config file; missing fields take their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.message().to_string(),
        })?;
        // Tables the file names replace the defaults wholesale in serde;
        // keep the defaults it did not mention.
        for (name, size) in default_pools() {
            config.pools.entry(name).or_insert(size);
        }
        for (name, breaker) in BreakerConfig::defaults() {
            config.breakers.entry(name).or_insert(breaker);
        }
        // `[store] url` alone selects PostgreSQL.
        if config.store.url.is_some() && config.store.backend == StoreBackend::Sqlite {
            config.store.backend = StoreBackend::Postgres;
        }
        // Relative paths the file gives are relative to the file, wherever
        // the daemon is started from (the defaults stay relative to the
        // working directory).
        let given: toml::Table = toml::from_str(&text).unwrap_or_default();
        let base = path.parent().unwrap_or(Path::new(""));
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if given.contains_key("plugins") {
            resolve(&mut config.plugins);
        }
        if given.contains_key("data") {
            resolve(&mut config.data);
        }
        if let Some(models) = config.models.as_mut() {
            resolve(models);
        }
        Ok(config)
    }

    /// Workers across all pools.
    pub fn total_workers(&self) -> usize {
        self.pools.values().sum()
    }

    /// Checks the values that have no meaningful zero or ordering.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: &str| Err(ConfigError::Invalid(m.to_string()));
        if let Some((name, _)) = self.pools.iter().find(|(_, size)| **size == 0) {
            return Err(ConfigError::Invalid(format!(
                "pools.{name} must have at least 1 worker"
            )));
        }
        if self.runtime.epoch_tick_ms == 0 {
            return invalid("runtime.epoch_tick_ms must be at least 1");
        }
        if self.limits.memory_mb > self.runtime.max_memory_mb {
            return invalid("limits.memory_mb must not exceed runtime.max_memory_mb");
        }
        if self
            .auth_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return invalid("auth_token must not be empty (leave it out to turn auth off)");
        }
        if self.limits.timeout_s == 0 {
            return invalid("limits.timeout_s must be at least 1");
        }
        match (self.store.backend, &self.store.url) {
            (StoreBackend::Postgres, None) => {
                return invalid(
                    "store.backend = \"postgres\" needs store.url (postgres://user@host/db)",
                );
            }
            (StoreBackend::Sqlite | StoreBackend::Memory, Some(_)) => {
                return invalid(
                    "store.url is for the postgres backend: remove store.backend or store.url",
                );
            }
            _ => {}
        }
        if self.store.pool_size == 0 {
            return invalid("store.pool_size must be at least 1");
        }
        if !(1..=3600).contains(&self.store.lease_s) {
            return invalid("store.lease_s must be between 1 and 3600");
        }
        if (self.runtime.max_instances as usize) <= self.total_workers() {
            return invalid("runtime.max_instances must exceed the workers of all pools together");
        }
        // A year at most: a due time must stay a time the clock can hold.
        const MAX_RETRY_S: f64 = 365.0 * 24.0 * 3600.0;
        let retry = [self.retry.base_s, self.retry.cap_s, self.retry.jitter_s];
        if !retry.iter().all(|s| (0.0..=MAX_RETRY_S).contains(s)) {
            return invalid(
                "retry.base_s, retry.cap_s and retry.jitter_s must be between 0 and 31536000 (a year)",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_file_keeps_the_other_defaults() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wasmhive.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:9000\"\n[limits]\nmemory_mb = 32\n",
        )?;
        let config = Config::from_file(&path)?;
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.limits.memory_mb, 32);
        assert_eq!(config.limits.timeout_s, 300);
        assert_eq!(config.total_workers(), 22);
        config.validate()?;
        Ok(())
    }

    #[test]
    fn relative_paths_in_a_file_are_relative_to_the_file() -> Result<(), Box<dyn std::error::Error>>
    {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wasmhive.toml");
        std::fs::write(
            &path,
            "plugins = \"handlers\"\ndata = \"/var/lib/wasmhive\"\nmodels = \"models\"\n",
        )?;
        let config = Config::from_file(&path)?;
        assert_eq!(config.plugins, dir.path().join("handlers"));
        assert_eq!(
            config.data,
            PathBuf::from("/var/lib/wasmhive"),
            "absolute stays"
        );
        assert_eq!(config.models, Some(dir.path().join("models")));
        std::fs::write(&path, "listen = \"127.0.0.1:9000\"\n")?;
        let config = Config::from_file(&path)?;
        assert_eq!(
            config.plugins,
            PathBuf::from("plugins"),
            "a default stays as it is"
        );
        Ok(())
    }

    #[test]
    fn the_documented_example_config_is_valid_and_says_the_defaults()
    -> Result<(), Box<dyn std::error::Error>> {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/wasmhive.toml");
        let config = Config::from_file(&path)?;
        config.validate()?;
        let defaults = Config::default();
        assert_eq!(config.vectors, defaults.vectors);
        assert_eq!(config.http, defaults.http);
        assert_eq!(config.store, defaults.store);
        Ok(())
    }

    #[test]
    fn unknown_keys_and_bad_values_are_reported() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("wasmhive.toml");
        std::fs::write(&path, "listn = \"127.0.0.1:9000\"\n")?;
        let err = Config::from_file(&path).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("listn")));
        let mut config = Config::default();
        config.pools.insert("batch".into(), 0);
        assert!(config.validate().is_err());
        // Backoff settings whose due time no clock can hold.
        for retry in ["cap_s = inf", "jitter_s = 1e30", "base_s = nan"] {
            std::fs::write(&path, format!("[retry]\n{retry}\n"))?;
            assert!(Config::from_file(&path)?.validate().is_err(), "{retry}");
        }
        std::fs::write(&path, "[pools]\nbatch = 8\ngpu = 1\n")?;
        let config = Config::from_file(&path)?;
        assert_eq!(config.pools.get("batch"), Some(&8));
        assert_eq!(config.pools.get("rag"), Some(&10));
        assert_eq!(config.pools.get("gpu"), Some(&1));
        Ok(())
    }
}
