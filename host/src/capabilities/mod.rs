//! Host capabilities: what a plugin can ask of the host, one module each.
//!
//! Each capability owns its per-attempt state, its implementation of the
//! WIT interface, and its tests. The sandbox (`runtime::sandbox`) puts one of
//! each in an attempt's store and links them; what each may do comes from
//! the plugin's manifest, never from the plugin.
//!
//! - [`host_api`]: `wasmhive:plugin/host` — log, progress, config-get, submit.
//! - [`vectors`]: `wasmhive:plugin/vectors` — vector collections.
//! - [`http`]: `wasi:http/outgoing-handler` — outbound HTTP behind an allowlist.

pub mod host_api;
pub mod http;
pub mod vectors;

use crate::breaker::BreakerSet;
use std::sync::Arc;
use vectors::VectorStore;

/// What the capabilities share across attempts, built once by the daemon;
/// what one attempt may use of it comes from its plugin's manifest.
#[derive(Debug, Clone, Default)]
pub struct Services {
    /// The vector collections (`None`: this host keeps none).
    pub vectors: Option<Arc<VectorStore>>,
    /// The named breakers capabilities report outcomes to.
    pub breakers: Option<Arc<BreakerSet>>,
}

/// Who is calling: names a capability puts in its log lines and refusals.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The plugin's name, e.g. `scrape`.
    pub plugin: Arc<str>,
    /// The plugin's version, e.g. `1.2.0`.
    pub version: Arc<str>,
    /// The manifest a grant would go in, e.g. `scrape.toml`.
    pub manifest_file: Arc<str>,
    /// The task being handled.
    pub task_id: Arc<str>,
}

impl Caller {
    /// The sentence a plugin gets when it uses a capability it was not granted.
    pub fn not_granted(&self, what: &str, grant: &str) -> String {
        format!(
            "plugin `{}` v{} was not granted {what}; add {grant} to {}",
            self.plugin, self.version, self.manifest_file
        )
    }
}
