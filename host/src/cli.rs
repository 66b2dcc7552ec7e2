//! Command-line interface: `wasmhive serve`, `wasmhive test`, and their flags.
//!
//! Flags override `WASMHIVE_*` environment variables (clap reads both),
//! which override the `--config` TOML file, which overrides the defaults in
//! [`Config`].

use crate::config::{Config, ConfigError};
use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// A WebAssembly plugin host for task handlers.
#[derive(Debug, Parser)]
#[command(name = "wasmhive", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log line format on stderr.
    #[arg(
        long,
        global = true,
        env = "WASMHIVE_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: load and watch the plugins directory, serve the REST API.
    Serve(ServeArgs),
    /// Run a plugin against test cases in the daemon's sandbox, with recorded
    /// HTTP, in-memory vectors and budgets; exits non-zero if a case fails.
    Test(TestArgs),
    /// Create a new plugin (code, manifest, test cases) that builds and
    /// passes `wasmhive test` as it is.
    New(NewArgs),
    /// Submit a task to a daemon; with --wait, follow it with a progress bar.
    Submit(ClientArgs<SubmitArgs>),
    /// Show one task (JSON).
    Status(ClientArgs<StatusArgs>),
    /// List recent tasks.
    Tasks(ClientArgs<TasksArgs>),
    /// List the plugins directory: versions, kinds, last errors.
    Plugins(ClientArgs<NoArgs>),
    /// Show the circuit breakers.
    Breakers(ClientArgs<NoArgs>),
    /// Cancel a task (a queued one ends at once; a running attempt is
    /// stopped); prints the task.
    Cancel(ClientArgs<StatusArgs>),
}

/// How the client reaches a daemon, plus the command's own arguments.
#[derive(Debug, Args)]
pub struct ClientArgs<T: Args> {
    /// The daemon's base URL.
    #[arg(long, env = "WASMHIVE_URL", default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// The daemon's API token.
    #[arg(long, env = "WASMHIVE_AUTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub args: T,
}

impl<T: Args> ClientArgs<T> {
    pub fn connection(&self) -> crate::client::Connection {
        crate::client::Connection {
            url: self.url.clone(),
            token: self.token.clone(),
        }
    }
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The task kind, e.g. `scrape`.
    pub kind: String,
    /// The payload, a JSON document.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// CRITICAL, HIGH, NORMAL, LOW or BULK.
    #[arg(long, default_value = "NORMAL")]
    pub priority: String,
    /// Wait for the task to finish, showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// Wall-time budget per attempt, seconds.
    #[arg(long)]
    pub timeout_s: Option<u64>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The task id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct TasksArgs {
    /// Only tasks in this status (queued, running, succeeded, failed, ...).
    #[arg(long)]
    pub status: Option<String>,
    /// Only tasks of this kind.
    #[arg(long)]
    pub kind: Option<String>,
    /// At most this many, newest first.
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct NoArgs {}

impl SubmitArgs {
    pub fn request(&self) -> Result<crate::client::Request, String> {
        let payload = serde_json::from_str(&self.payload)
            .map_err(|e| format!("--payload is not JSON: {e}"))?;
        Ok(crate::client::Request::Submit {
            kind: self.kind.clone(),
            payload,
            priority: self.priority.to_ascii_uppercase(),
            wait: self.wait,
            timeout_s: self.timeout_s,
        })
    }
}

#[derive(Debug, Args)]
pub struct NewArgs {
    /// The plugin's name (also its task kind): lower-case letters, digits, `-`.
    pub name: String,
    /// The language to write it in.
    #[arg(long, default_value = "rust")]
    pub lang: crate::scaffold::Lang,
    /// Where to create the plugin's directory.
    #[arg(long, default_value = ".")]
    pub dir: PathBuf,
    /// The wasmhive SDK crate (Rust) [default: plugins/sdk of these sources].
    #[arg(long)]
    pub sdk: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TestArgs {
    /// The plugin to test (a `.wasm` component).
    pub plugin: PathBuf,
    /// Directory of cases, one JSON file each (see `wasmhive::testkit::case`).
    #[arg(long)]
    pub cases: PathBuf,
    /// Manifest to run under [default: `<plugin>.toml` beside the plugin, if any].
    #[arg(long)]
    pub manifest: Option<PathBuf>,
    /// Also run every case on this version and show what changed.
    #[arg(long)]
    pub against: Option<PathBuf>,
    /// Send requests to the allowed hosts and save the responses beside the cases.
    #[arg(long)]
    pub record: bool,
    /// Output format.
    #[arg(long, default_value = "text")]
    pub format: crate::testkit::report::Format,
}

impl TestArgs {
    pub fn options(&self) -> crate::testkit::Options {
        crate::testkit::Options {
            plugin: self.plugin.clone(),
            cases: self.cases.clone(),
            manifest: self.manifest.clone(),
            against: self.against.clone(),
            record: self.record,
        }
    }
}

pub use crate::telemetry::LogFormat;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML config file (see README for its keys).
    #[arg(long, env = "WASMHIVE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:8080]; port 0 picks a free one.
    #[arg(long, env = "WASMHIVE_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Plugins directory to load and watch [default: plugins].
    #[arg(long, env = "WASMHIVE_PLUGINS")]
    pub plugins: Option<PathBuf>,
    /// Data directory (compile cache; task store) [default: wasmhive-data].
    #[arg(long, env = "WASMHIVE_DATA")]
    pub data: Option<PathBuf>,
    /// Embedding models directory, one directory per model (`cargo xtask
    /// models` fetches all-MiniLM-L6-v2) [default: <data>/models].
    #[arg(long, env = "WASMHIVE_MODELS")]
    pub models: Option<PathBuf>,
    /// Task store: sqlite (durable, in the data directory), memory, or a
    /// PostgreSQL URL (postgres://user:password@host/db) shared by several
    /// daemons [default: sqlite].
    #[arg(long, env = "WASMHIVE_STORE", hide_env_values = true)]
    pub store: Option<crate::config::StoreChoice>,
    /// Require `Authorization: Bearer <token>` on every route but /api/hp/health.
    #[arg(long, env = "WASMHIVE_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// Refuse to start when the plugins directory does not exist (without
    /// it: a warning, and the directory is created empty).
    #[arg(long)]
    pub strict: bool,
}

impl ServeArgs {
    /// The effective configuration: file, then environment and flags.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(plugins) = &self.plugins {
            config.plugins = plugins.clone();
        }
        if let Some(data) = &self.data {
            config.data = data.clone();
        }
        if let Some(models) = &self.models {
            config.models = Some(models.clone());
        }
        if let Some(store) = &self.store {
            config.store.choose(store.clone());
        }
        if let Some(token) = &self.auth_token {
            config.auth_token = Some(token.clone());
        }
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_config_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("c.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nplugins = \"from-file\"\n",
        )?;
        let cli = Cli::try_parse_from([
            "wasmhive",
            "serve",
            "--config",
            file.to_str().unwrap_or_default(),
            "--plugins",
            "from-flag",
        ])?;
        let Command::Serve(args) = cli.command else {
            return Err("not parsed as serve".into());
        };
        let config = args.config()?;
        assert_eq!(config.plugins, PathBuf::from("from-flag"));
        assert_eq!(config.listen.port(), 9000);
        Ok(())
    }

    fn serve(args: &[&str]) -> Result<Config, Box<dyn std::error::Error>> {
        let cli = Cli::try_parse_from(["wasmhive", "serve"].iter().chain(args))?;
        let Command::Serve(args) = cli.command else {
            return Err("not parsed as serve".into());
        };
        Ok(args.config()?)
    }

    #[test]
    fn the_store_is_a_name_or_a_postgres_url() -> Result<(), Box<dyn std::error::Error>> {
        use crate::config::StoreBackend;
        assert_eq!(serve(&[])?.store.backend, StoreBackend::Sqlite);
        assert_eq!(
            serve(&["--store", "memory"])?.store.backend,
            StoreBackend::Memory
        );
        let pg = serve(&["--store", "postgres://app@db.internal/queue"])?;
        assert_eq!(pg.store.backend, StoreBackend::Postgres);
        assert_eq!(
            pg.store.url.as_deref(),
            Some("postgres://app@db.internal/queue")
        );
        let refused = serve(&["--store", "mysql://x"])
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("PostgreSQL URL")),
            "{refused:?}"
        );
        // `[store] url` alone selects PostgreSQL; a flag overrides the file.
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[store]\nurl = \"postgresql://h/d\"\n")?;
        let path = file.to_str().unwrap_or_default();
        assert_eq!(
            serve(&["--config", path])?.store.backend,
            StoreBackend::Postgres
        );
        let sqlite = serve(&["--config", path, "--store", "sqlite"])?;
        assert_eq!(
            (sqlite.store.backend, sqlite.store.url),
            (StoreBackend::Sqlite, None)
        );
        std::fs::write(&file, "[store]\nbackend = \"postgres\"\n")?;
        let missing = serve(&["--config", path]).err().map(|e| e.to_string());
        assert!(
            missing
                .as_deref()
                .is_some_and(|e| e.contains("needs store.url")),
            "{missing:?}"
        );
        Ok(())
    }
}
