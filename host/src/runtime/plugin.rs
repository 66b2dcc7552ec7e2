//! A loaded plugin version and why a file could not become one.
//!
//! A [`PluginVersion`] is immutable: a compiled, link-checked component
//! pre-instantiated against the host's linker, what its `describe` said, and
//! the limits and grants its manifest gave it. The registry swaps
//! `Arc<PluginVersion>`s; a task holds the one it started on until it ends.

use super::manifest::Manifest;
use super::sandbox::HostState;
use crate::bindings::HandlerPre;
use crate::task::TaskFailure;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// What a plugin says about itself (`describe`), after the manifest's
/// overrides. `name` is the operator's: the file's stem (`echo` for
/// `echo.wasm`); what the guest called itself is kept in `declared_name`
/// when it differs, shown and never trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PluginInfo {
    pub name: String,
    /// The name `describe` gave, when it is not the file's stem.
    pub declared_name: Option<String>,
    pub version: String,
    pub kinds: Vec<String>,
    pub category: String,
    pub description: String,
}

/// The limits one plugin version runs under: the daemon's defaults with its
/// manifest's `[limits]` applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PluginLimits {
    pub memory_bytes: usize,
    pub timeout: Duration,
    /// Instruction budget per attempt; `None` when off.
    pub fuel: Option<u64>,
    pub max_children: u32,
    pub max_result_bytes: usize,
    /// Largest child payload it may submit.
    pub max_payload_bytes: usize,
    /// Attempts at once in its pool; 0 = automatic (see `Limits`).
    pub max_concurrency: u32,
    /// Depth a tree of child tasks may reach.
    pub max_depth: u32,
    /// Tasks one tree of child tasks may hold below its root.
    pub max_descendants: u32,
    /// Child tasks per second across all its tasks.
    pub children_per_s: u32,
    /// Points in its own vector collections.
    pub vector_points: u64,
    /// Bytes of memory its own vector collections may take.
    pub vector_bytes: u64,
    /// Tasks that may wait parked on open breakers.
    pub max_parked: u32,
}

/// A plugin version ready to run tasks.
pub struct PluginVersion {
    pub info: PluginInfo,
    /// SHA-256 of the `.wasm` file, hex.
    pub sha256: String,
    /// The `.wasm` file it was loaded from.
    pub file: PathBuf,
    pub loaded_at: SystemTime,
    pub manifest: Manifest,
    pub limits: PluginLimits,
    /// The manifest's `[capabilities]` and `max_children`, parsed.
    pub grants: crate::capabilities::Grants,
    /// Named breakers its tasks wait for (`Services::breakers_for`).
    pub depends_on: Vec<String>,
    /// Whether its machine code came from the compile cache.
    pub from_cache: bool,
    /// Attempts started on this version (its probation counts them).
    pub attempts: std::sync::atomic::AtomicU64,
    pub(super) pre: HandlerPre<HostState>,
    pub(super) config: Arc<BTreeMap<String, String>>,
    pub(super) names: Names,
}

/// Shared strings every attempt's capabilities tag their work with.
#[derive(Clone)]
pub(super) struct Names {
    pub plugin: Arc<str>,
    pub version: Arc<str>,
    pub manifest_file: Arc<str>,
}

impl std::fmt::Debug for PluginVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginVersion")
            .field("info", &self.info)
            .field("sha256", &self.sha256)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Why a plugin file was not loaded. The old version (if any) keeps serving.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    #[error("could not read {file}: {message}")]
    Read { file: String, message: String },
    #[error("{file} is not a WebAssembly file (no `\\0asm` header)")]
    NotWasm { file: String },
    #[error(
        "{file} is a core WebAssembly module, not a component; build it for wasm32-wasip2 or run `wasm-tools component new`"
    )]
    CoreModule { file: String },
    #[error("{file} could not be compiled: {message}")]
    Compile { file: String, message: String },
    #[error(
        "{file} was built against {found}; this host implements wasmhive:plugin@{supported} (rebuild the plugin against wit/ of this host)"
    )]
    IncompatibleWit {
        file: String,
        found: String,
        supported: String,
    },
    #[error("{file} does not implement the wasmhive:plugin/handler world: {message}")]
    WrongWorld { file: String, message: String },
    #[error("{file} needs imports this host does not provide: {message}")]
    Link { file: String, message: String },
    #[error("{file}: describe() failed: {failure}")]
    Describe { file: String, failure: TaskFailure },
    #[error("{file}: describe() returned an unusable plugin-info: {message}")]
    InvalidInfo { file: String, message: String },
    #[error("{file} is not a valid manifest: {message}")]
    Manifest { file: String, message: String },
    #[error("{file}: {message}")]
    Limits { file: String, message: String },
    #[error(
        "`{file}` is not a usable plugin file name: use 1 to 64 letters, digits, `-`, `_` or `.` before `.wasm` (the file name is the plugin's identity)"
    )]
    FileName { file: String },
    #[error(
        "{file}: category `{category}` has no worker pool; configured pools: {known} (add it under [pools] in the daemon config, or set `category` in the manifest)"
    )]
    UnknownCategory {
        file: String,
        category: String,
        known: String,
    },
}
