//! Which plugin version serves which task kind, and the files behind them.
//!
//! The plugins directory holds `<name>.wasm` files, each with an optional
//! `<name>.toml` manifest; the file stem names a *slot*. [`Registry::reload`]
//! brings one slot in line with the directory: it loads the file through
//! [`Runtime::load`] (compile, link check, `describe`) and only then swaps the
//! slot's `Arc<PluginVersion>` under a short write lock, so a lookup never
//! waits on a compile and tasks already running keep the version they
//! started on. A file that fails leaves the slot's current version serving
//! and is reported on the slot (`last_error`), in the log, and over REST.
//!
//! A version that replaced another is *on probation* for its first attempts
//! or seconds ([`Probation`]); if its breaker opens meanwhile the scheduler
//! calls [`Registry::roll_back`], which puts the previous version back and
//! remembers the bad file so it is not loaded again until it changes.
//!
//! A kind belongs to one slot. A file that claims a kind another slot
//! already serves is refused (the newcomer gets the error); when the owner
//! goes away, refused slots are tried again.

use super::Runtime;
use super::manifest::{Capabilities, Manifest};
use super::plugin::{LoadError, PluginVersion};
use crate::clock::Clock;
use crate::task::rfc3339;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Instant, SystemTime};

/// The plugins of one directory.
pub struct Registry {
    runtime: Arc<Runtime>,
    dir: PathBuf,
    clock: Arc<dyn Clock>,
    probation: Probation,
    state: RwLock<State>,
    /// Reloads run one at a time (the watcher and an initial scan may race).
    reloading: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How long a freshly swapped version is on probation: its first `tasks`
/// attempts or `duration`, whichever ends first.
#[derive(Debug, Clone, Copy)]
pub struct Probation {
    pub tasks: u64,
    pub duration: std::time::Duration,
}

#[derive(Default)]
struct State {
    slots: BTreeMap<String, Slot>,
    /// (plugin, version) pairs taken out by a rollback.
    rolled_back: std::collections::HashSet<(String, String)>,
    /// kind -> slot
    kinds: HashMap<String, String>,
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<PluginVersion>>,
    previous: Option<Arc<PluginVersion>>,
    last_error: Option<Failure>,
    last_reload: Option<SystemTime>,
    /// The file content and manifest last tried, to skip no-op reloads
    /// (a touch, a rewrite with the same bytes, a repeated bad file).
    last_tried: Option<(String, Option<String>)>,
    /// When the current version replaced a previous one (its probation start).
    swapped_at: Option<Instant>,
    rolled_back: Option<RolledBack>,
}

struct RolledBack {
    version: String,
    sha256: String,
    at: SystemTime,
}

struct Failure {
    error: LoadError,
    at: SystemTime,
}

/// What happened to a slot on a reload.
#[derive(Debug)]
pub enum ReloadOutcome {
    Loaded(Arc<PluginVersion>),
    Unchanged,
    Removed,
    Failed(LoadError),
}

/// A slot as `GET /api/v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PluginStatus {
    /// The `.wasm` file name in the plugins directory.
    pub file: String,
    /// `loaded` (serving) or `failed` (never loaded; see `last_error`).
    pub status: &'static str,
    pub name: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    pub kinds: Vec<String>,
    pub category: Option<String>,
    pub description: Option<String>,
    pub loaded_at: Option<String>,
    pub from_compile_cache: Option<bool>,
    /// The limits it runs under (defaults with its manifest applied).
    pub limits: Option<LimitsStatus>,
    /// What its manifest grants.
    pub capabilities: Option<Capabilities>,
    /// The version it replaced, if any.
    pub previous_version: Option<String>,
    pub last_reload_at: Option<String>,
    pub last_error: Option<ErrorStatus>,
    /// Whether the current version is still on probation after a swap.
    pub on_probation: bool,
    /// The last automatic rollback: the version that was taken out.
    pub rolled_back: Option<RollbackStatus>,
}

/// An automatic rollback as `/api/v1/plugins` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackStatus {
    pub version: String,
    pub sha256: String,
    pub at: String,
    pub reason: &'static str,
}

/// A version's limits in the units operators write in manifests.
#[derive(Debug, Clone, Serialize)]
pub struct LimitsStatus {
    pub memory_mb: u64,
    pub timeout_s: u64,
    /// 0 when off.
    pub fuel: u64,
    pub max_children: u32,
}

/// A reload that failed, with when.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorStatus {
    pub message: String,
    pub at: String,
}

impl Registry {
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        clock: Arc<dyn Clock>,
        probation: Probation,
    ) -> Registry {
        Registry {
            runtime,
            dir,
            clock,
            probation,
            state: RwLock::default(),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The version serving `kind` right now.
    pub fn resolve(&self, kind: &str) -> Option<Arc<PluginVersion>> {
        let state = self.state.read().ok()?;
        let slot = state.kinds.get(kind)?;
        state.slots.get(slot)?.current.clone()
    }

    /// Every slot, loaded or failed, by file name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        let Ok(state) = self.state.read() else {
            return Vec::new();
        };
        state
            .slots
            .iter()
            .map(|(name, slot)| self.slot_status(name, slot))
            .collect()
    }

    fn on_probation(&self, slot: &Slot) -> bool {
        let (Some(current), Some(since), Some(_)) = (
            slot.current.as_ref(),
            slot.swapped_at,
            slot.previous.as_ref(),
        ) else {
            return false;
        };
        current.attempts.load(std::sync::atomic::Ordering::Relaxed) <= self.probation.tasks
            && self.clock.now().saturating_duration_since(since) < self.probation.duration
    }

    /// Whether `version` of plugin `name` was taken out by a rollback.
    pub fn is_rolled_back(&self, name: &str, version: &str) -> bool {
        self.state.read().is_ok_and(|s| {
            s.rolled_back
                .contains(&(name.to_string(), version.to_string()))
        })
    }

    /// Puts the previous version of plugin `name` back if `version` is the
    /// one serving and it is still on probation. Returns the restored version.
    pub async fn roll_back(&self, name: &str, version: &str) -> Option<Arc<PluginVersion>> {
        let _one_at_a_time = self.reloading.lock().await;
        let mut state = self.state.write().ok()?;
        let stem = state
            .slots
            .iter()
            .find(|(_, s)| {
                s.current
                    .as_ref()
                    .is_some_and(|v| v.info.name == name && v.info.version == version)
            })
            .map(|(k, _)| k.clone())?;
        if !state.slots.get(&stem).is_some_and(|s| self.on_probation(s)) {
            return None;
        }
        let State {
            slots,
            kinds,
            rolled_back,
        } = &mut *state;
        let slot = slots.get_mut(&stem)?;
        let bad = slot.current.take()?;
        rolled_back.insert((bad.info.name.clone(), bad.info.version.clone()));
        let good = slot.previous.take()?;
        for kind in &bad.info.kinds {
            kinds.remove(kind);
        }
        for kind in &good.info.kinds {
            kinds.insert(kind.clone(), stem.clone());
        }
        slot.current = Some(good.clone());
        slot.swapped_at = None;
        slot.rolled_back = Some(RolledBack {
            version: bad.info.version.clone(),
            sha256: bad.sha256.clone(),
            at: SystemTime::now(),
        });
        // `last_tried` still names the bad file: it is not loaded again
        // until the file changes.
        Some(good)
    }

    /// How many slots serve a version.
    pub fn loaded_count(&self) -> usize {
        self.state
            .read()
            .map(|s| s.slots.values().filter(|s| s.current.is_some()).count())
            .unwrap_or(0)
    }

    /// Loads every `.wasm` in the directory (at start).
    pub async fn scan(&self) -> std::io::Result<()> {
        let mut stems = Vec::new();
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        while let Some(entry) = entries.next_entry().await? {
            if let Some(stem) = plugin_stem(&entry.path())
                && entry.path().extension().is_some_and(|e| e == "wasm")
            {
                stems.push(stem);
            }
        }
        stems.sort();
        for stem in stems {
            self.reload(&stem).await;
        }
        Ok(())
    }

    /// Brings slot `stem` in line with `<dir>/<stem>.wasm` and its manifest.
    pub async fn reload(&self, stem: &str) -> ReloadOutcome {
        let _one_at_a_time = self.reloading.lock().await;
        let outcome = self.reload_locked(stem).await;
        match &outcome {
            ReloadOutcome::Loaded(v) => tracing::info!(
                plugin = %v.info.name,
                plugin.version = %v.info.version,
                file = %v.file.display(),
                kinds = ?v.info.kinds,
                category = %v.info.category,
                from_compile_cache = v.from_cache,
                "plugin loaded"
            ),
            ReloadOutcome::Failed(e) => {
                tracing::error!(slot = stem, "plugin not loaded: {e}");
            }
            ReloadOutcome::Removed => tracing::info!(slot = stem, "plugin removed"),
            ReloadOutcome::Unchanged => {}
        }
        if matches!(outcome, ReloadOutcome::Removed | ReloadOutcome::Loaded(_)) {
            // A kind may have been freed: retry slots refused for a conflict.
            for refused in self.refused_for_conflict() {
                if refused != stem {
                    Box::pin(self.reload_refused(&refused)).await;
                }
            }
        }
        outcome
    }

    async fn reload_refused(&self, stem: &str) {
        match self.reload_locked(stem).await {
            ReloadOutcome::Loaded(v) => tracing::info!(
                plugin = %v.info.name,
                plugin.version = %v.info.version,
                "plugin loaded after a conflicting plugin went away"
            ),
            ReloadOutcome::Failed(e) => tracing::debug!(slot = stem, "still not loaded: {e}"),
            _ => {}
        }
    }

    fn refused_for_conflict(&self) -> Vec<String> {
        let Ok(state) = self.state.read() else {
            return Vec::new();
        };
        state
            .slots
            .iter()
            .filter(|(_, s)| {
                s.current.is_none()
                    && s.last_error
                        .as_ref()
                        .is_some_and(|f| matches!(f.error, LoadError::KindConflict { .. }))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    async fn reload_locked(&self, stem: &str) -> ReloadOutcome {
        let wasm_path = self.dir.join(format!("{stem}.wasm"));
        let manifest_path = self.dir.join(format!("{stem}.toml"));
        let file = format!("{stem}.wasm");

        let bytes = match tokio::fs::read(&wasm_path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.remove(stem),
            Err(e) => {
                let error = LoadError::Read {
                    file,
                    message: e.to_string(),
                };
                return self.fail(stem, error, None);
            }
        };
        let manifest_text = match tokio::fs::read_to_string(&manifest_path).await {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => {
                let error = LoadError::Manifest {
                    file: format!("{stem}.toml"),
                    message: e.to_string(),
                };
                return self.fail(stem, error, None);
            }
        };
        let sha256 = hex_sha256(&bytes);
        let tried = (sha256.clone(), manifest_text.clone());
        if self.already_tried(stem, &tried) {
            return ReloadOutcome::Unchanged;
        }
        let manifest = match manifest_text.as_deref().map(Manifest::parse) {
            None => Manifest::default(),
            Some(Ok(m)) => m,
            Some(Err(message)) => {
                let error = LoadError::Manifest {
                    file: format!("{stem}.toml"),
                    message,
                };
                return self.fail(stem, error, Some(tried));
            }
        };

        let started = Instant::now();
        match self.runtime.load(&wasm_path, bytes, sha256, manifest).await {
            Ok(version) => {
                let outcome = self.install(stem, version, tried);
                if let ReloadOutcome::Loaded(v) = &outcome {
                    tracing::debug!(
                        plugin = %v.info.name,
                        elapsed_ms = started.elapsed().as_millis() as u64,
                        "compile, link check and describe done"
                    );
                }
                outcome
            }
            Err(error) => self.fail(stem, error, Some(tried)),
        }
    }

    fn already_tried(&self, stem: &str, tried: &(String, Option<String>)) -> bool {
        self.state
            .read()
            .ok()
            .and_then(|s| s.slots.get(stem).and_then(|slot| slot.last_tried.clone()))
            .is_some_and(|last| &last == tried)
    }

    /// The atomic swap: checks kind ownership and installs the version.
    fn install(
        &self,
        stem: &str,
        version: PluginVersion,
        tried: (String, Option<String>),
    ) -> ReloadOutcome {
        let Ok(mut state) = self.state.write() else {
            return ReloadOutcome::Unchanged;
        };
        for kind in &version.info.kinds {
            if let Some(owner_stem) = state.kinds.get(kind)
                && owner_stem != stem
            {
                let owner = state
                    .slots
                    .get(owner_stem)
                    .and_then(|s| s.current.as_ref())
                    .map(|v| v.info.name.clone())
                    .unwrap_or_default();
                let error = LoadError::KindConflict {
                    file: format!("{stem}.wasm"),
                    kind: kind.clone(),
                    owner,
                    owner_file: format!("{owner_stem}.wasm"),
                };
                // Not remembered as tried: the same file may load once the
                // owner is gone.
                let slot = state.slots.entry(stem.to_string()).or_default();
                slot.last_error = Some(Failure {
                    error: error.clone(),
                    at: SystemTime::now(),
                });
                slot.last_reload = Some(SystemTime::now());
                return ReloadOutcome::Failed(error);
            }
        }
        let version = Arc::new(version);
        let State { slots, kinds, .. } = &mut *state;
        let slot = slots.entry(stem.to_string()).or_default();
        if let Some(old) = slot.current.take() {
            for kind in &old.info.kinds {
                kinds.remove(kind);
            }
            slot.previous = Some(old);
            slot.swapped_at = Some(self.clock.now());
        }
        for kind in &version.info.kinds {
            kinds.insert(kind.clone(), stem.to_string());
        }
        slot.current = Some(version.clone());
        slot.last_error = None;
        slot.last_reload = Some(SystemTime::now());
        slot.last_tried = Some(tried);
        ReloadOutcome::Loaded(version)
    }

    fn fail(
        &self,
        stem: &str,
        error: LoadError,
        tried: Option<(String, Option<String>)>,
    ) -> ReloadOutcome {
        if let Ok(mut state) = self.state.write() {
            let slot = state.slots.entry(stem.to_string()).or_default();
            slot.last_error = Some(Failure {
                error: error.clone(),
                at: SystemTime::now(),
            });
            slot.last_reload = Some(SystemTime::now());
            slot.last_tried = tried;
        }
        ReloadOutcome::Failed(error)
    }

    fn remove(&self, stem: &str) -> ReloadOutcome {
        let Ok(mut state) = self.state.write() else {
            return ReloadOutcome::Unchanged;
        };
        let Some(slot) = state.slots.remove(stem) else {
            return ReloadOutcome::Unchanged;
        };
        if let Some(current) = slot.current {
            for kind in &current.info.kinds {
                state.kinds.remove(kind);
            }
        }
        ReloadOutcome::Removed
    }
}

impl Registry {
    fn slot_status(&self, file_stem: &str, slot: &Slot) -> PluginStatus {
        let current = slot.current.as_deref();
        PluginStatus {
            on_probation: self.on_probation(slot),
            rolled_back: slot.rolled_back.as_ref().map(|r| RollbackStatus {
                version: r.version.clone(),
                sha256: r.sha256.clone(),
                at: rfc3339(r.at),
                reason: "its circuit breaker opened during probation",
            }),
            file: format!("{file_stem}.wasm"),
            status: if current.is_some() {
                "loaded"
            } else {
                "failed"
            },
            name: current.map(|v| v.info.name.clone()),
            version: current.map(|v| v.info.version.clone()),
            sha256: current.map(|v| v.sha256.clone()),
            kinds: current.map(|v| v.info.kinds.clone()).unwrap_or_default(),
            category: current.map(|v| v.info.category.clone()),
            description: current.map(|v| v.info.description.clone()),
            loaded_at: current.map(|v| rfc3339(v.loaded_at)),
            from_compile_cache: current.map(|v| v.from_cache),
            limits: current.map(|v| LimitsStatus {
                memory_mb: (v.limits.memory_bytes >> 20) as u64,
                timeout_s: v.limits.timeout.as_secs(),
                fuel: v.limits.fuel.unwrap_or(0),
                max_children: v.limits.max_children,
            }),
            capabilities: current.map(|v| v.manifest.capabilities.clone()),
            previous_version: slot.previous.as_ref().map(|v| v.info.version.clone()),
            last_reload_at: slot.last_reload.map(rfc3339),
            last_error: slot.last_error.as_ref().map(|f| ErrorStatus {
                message: f.error.to_string(),
                at: rfc3339(f.at),
            }),
        }
    }
}

/// The slot a path in the plugins directory belongs to: `<stem>.wasm` or
/// `<stem>.toml`, not hidden. Anything else (temp files of a
/// write-then-rename, editor backups) is ignored.
pub fn plugin_stem(path: &Path) -> Option<String> {
    let ext = path.extension()?.to_str()?;
    if ext != "wasm" && ext != "toml" {
        return None;
    }
    let stem = path.file_stem()?.to_str()?;
    if stem.is_empty() || stem.starts_with('.') {
        return None;
    }
    Some(stem.to_string())
}

pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_wasm_and_manifests_belong_to_slots() {
        assert_eq!(
            plugin_stem(Path::new("/p/echo.wasm")).as_deref(),
            Some("echo")
        );
        assert_eq!(
            plugin_stem(Path::new("/p/echo.toml")).as_deref(),
            Some("echo")
        );
        assert_eq!(plugin_stem(Path::new("/p/echo.tmp")), None);
        assert_eq!(plugin_stem(Path::new("/p/.echo.wasm")), None);
        assert_eq!(plugin_stem(Path::new("/p/echo.wasm.swp")), None);
    }

    #[test]
    fn sha256_is_lower_hex() {
        assert_eq!(
            hex_sha256(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
