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
//! Which slot serves which kind is decided by [`super::kinds`]: the
//! operator's manifest grants and the persisted holder of each kind, never
//! the order files compile in. Slots are keyed by file stem: that, with the
//! file's sha256, is a plugin's identity (breakers, rollback, metrics and
//! status all use it); what the guest calls itself is shown, never trusted.
//!
//! Loading is bounded and parallel: each slot reloads under its own lock
//! (a slow file never holds up another's swap), compiles share
//! `runtime.parallel_loads` permits, and `describe` runs under a deadline
//! and fuel. The start-up [`Registry::scan`] runs after the daemon listens;
//! files show as `loading` until they are decided.

use super::Runtime;
use super::kinds::{Assignment, KindClaims, Mode, Refusal, Wanted};
use super::manifest::{Capabilities, Manifest};
use super::plugin::{LoadError, PluginVersion};
use crate::clock::Clock;
use crate::sync::{lock, read, write};
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
    /// One reload at a time per slot (the watcher and the scan may race);
    /// different slots load in parallel.
    slot_locks: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Turns true when the start-up scan has decided every file.
    scanned: tokio::sync::watch::Sender<bool>,
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

struct State {
    slots: BTreeMap<String, Slot>,
    /// (plugin, version) pairs taken out by a rollback.
    rolled_back: std::collections::HashSet<(String, String)>,
    /// kind -> slot serving it now
    kinds: HashMap<String, String>,
    /// Who holds which kind (persisted).
    claims: KindClaims,
    mode: Mode,
}

#[derive(Default)]
struct Slot {
    current: Option<Arc<PluginVersion>>,
    previous: Option<Arc<PluginVersion>>,
    /// What the kind assignment gave the current version.
    kinds: Assignment,
    /// A load of this file is under way.
    loading: bool,
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
    /// `loaded` (serving), `loading`, `pending` (loaded; its kinds are
    /// decided when the start-up scan ends) or `failed` (serving nothing;
    /// see `last_error`).
    pub status: &'static str,
    /// The plugin's identity: the file's stem.
    pub name: Option<String>,
    /// The name its `describe` gave, when that is not `name`: shown, never
    /// used to key anything.
    pub declared_name: Option<String>,
    pub version: Option<String>,
    pub sha256: Option<String>,
    /// The kinds it serves.
    pub kinds: Vec<String>,
    /// Kinds it asked for and was refused, with why.
    pub refused_kinds: Vec<RefusedKind>,
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

/// A kind a plugin wanted and does not serve.
#[derive(Debug, Clone, Serialize)]
pub struct RefusedKind {
    pub kind: String,
    pub reason: String,
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
    /// Attempts at once in its pool (0: automatic).
    pub max_concurrency: u32,
    pub max_depth: u32,
    pub max_descendants: u32,
    pub children_per_s: u32,
    /// Points and memory its own vector collections may hold.
    pub vector_points: u64,
    pub vector_mb: u64,
    /// Largest child payload and result it may send, MiB.
    pub max_payload_mb: u64,
    pub max_result_mb: u64,
    /// Tasks that may wait parked on open breakers before submissions
    /// are refused.
    pub max_parked: u32,
}

/// A reload that failed, with when.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorStatus {
    pub message: String,
    pub at: String,
}

impl Registry {
    /// A registry for `dir`; `claims` remembers which file holds which kind.
    pub fn new(
        runtime: Arc<Runtime>,
        dir: PathBuf,
        clock: Arc<dyn Clock>,
        probation: Probation,
        claims: KindClaims,
    ) -> Registry {
        Registry {
            runtime,
            dir,
            clock,
            probation,
            state: RwLock::new(State {
                slots: BTreeMap::new(),
                rolled_back: Default::default(),
                kinds: HashMap::new(),
                claims,
                mode: Mode::Settled,
            }),
            slot_locks: Default::default(),
            scanned: tokio::sync::watch::channel(false).0,
        }
    }

    /// Waits until the start-up scan has decided every file.
    pub async fn scanned(&self) {
        let mut rx = self.scanned.subscribe();
        // The sender lives as long as `self`.
        let _ = rx.wait_for(|done| *done).await;
    }

    /// Whether the start-up scan is over.
    pub fn is_scanned(&self) -> bool {
        *self.scanned.borrow()
    }

    fn slot_lock(&self, stem: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.slot_locks)
            .entry(stem.to_string())
            .or_default()
            .clone()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The version serving `kind` right now.
    pub fn resolve(&self, kind: &str) -> Option<Arc<PluginVersion>> {
        let state = read(&self.state);
        let slot = state.kinds.get(kind)?;
        state.slots.get(slot)?.current.clone()
    }

    /// Every slot, loaded or failed, by file name.
    pub fn statuses(&self) -> Vec<PluginStatus> {
        read(&self.state)
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

    /// Whether `version` of plugin `name` is serving and on probation.
    pub fn is_on_probation(&self, name: &str, version: &str) -> bool {
        read(&self.state).slots.values().any(|slot| {
            slot.current
                .as_ref()
                .is_some_and(|v| v.info.name == name && v.info.version == version)
                && self.on_probation(slot)
        })
    }

    /// Whether `version` of plugin `name` was taken out by a rollback.
    pub fn is_rolled_back(&self, name: &str, version: &str) -> bool {
        read(&self.state)
            .rolled_back
            .contains(&(name.to_string(), version.to_string()))
    }

    /// Puts the previous version of plugin `name` back if `version` is the
    /// one serving and it is still on probation. Returns the restored version.
    /// Touches only the registry's map: it never waits on a compile.
    pub async fn roll_back(&self, name: &str, version: &str) -> Option<Arc<PluginVersion>> {
        let mut state = write(&self.state);
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
            slots, rolled_back, ..
        } = &mut *state;
        let slot = slots.get_mut(&stem)?;
        let bad = slot.current.take()?;
        rolled_back.insert((bad.info.name.clone(), bad.info.version.clone()));
        let good = slot.previous.take()?;
        slot.current = Some(good.clone());
        slot.swapped_at = None;
        slot.rolled_back = Some(RolledBack {
            version: bad.info.version.clone(),
            sha256: bad.sha256.clone(),
            at: self.clock.wall(),
        });
        // `last_tried` still names the bad file: it is not loaded again
        // until the file changes.
        reassign(&mut state);
        Some(good)
    }

    /// How many slots serve a version.
    pub fn loaded_count(&self) -> usize {
        read(&self.state)
            .slots
            .values()
            .filter(|s| s.current.is_some() && !s.kinds.served.is_empty())
            .count()
    }

    /// Files being loaded right now.
    pub fn loading_count(&self) -> usize {
        read(&self.state)
            .slots
            .values()
            .filter(|s| s.loading)
            .count()
    }

    /// The slots (file stems) that share pool `category` now.
    pub fn plugins_in_pool(&self, category: &str) -> usize {
        read(&self.state)
            .slots
            .values()
            .filter_map(|s| s.current.as_ref().filter(|_| !s.kinds.served.is_empty()))
            .filter(|v| v.info.category == category)
            .count()
    }

    /// Loads every `.wasm` in the directory (at start), in parallel. Kinds
    /// nobody holds yet are decided once every file has been looked at, so
    /// the outcome does not depend on which file compiled first; a file
    /// whose kinds it already holds serves as soon as it is loaded.
    pub async fn scan(self: &Arc<Self>) -> std::io::Result<()> {
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
        {
            let mut state = write(&self.state);
            state.mode = Mode::Scanning;
            for stem in &stems {
                state.slots.entry(stem.clone()).or_default().loading = true;
            }
        }
        let mut loads = tokio::task::JoinSet::new();
        for stem in stems {
            let registry = self.clone();
            loads.spawn(async move { registry.reload(&stem).await });
        }
        while loads.join_next().await.is_some() {}
        {
            let mut state = write(&self.state);
            state.mode = Mode::Settled;
            reassign(&mut state);
            for (stem, slot) in &state.slots {
                log_refusals(stem, slot);
            }
        }
        self.scanned.send_replace(true);
        Ok(())
    }

    /// Brings slot `stem` in line with `<dir>/<stem>.wasm` and its manifest.
    pub async fn reload(&self, stem: &str) -> ReloadOutcome {
        let lock = self.slot_lock(stem);
        let _one_at_a_time = lock.lock().await;
        self.set_loading(stem, true);
        let outcome = self.reload_locked(stem).await;
        self.set_loading(stem, false);
        match &outcome {
            ReloadOutcome::Loaded(v) => {
                tracing::info!(
                    plugin = %v.info.name,
                    plugin.version = %v.info.version,
                    declared_name = v.info.declared_name.as_deref(),
                    file = %v.file.display(),
                    kinds = ?v.info.kinds,
                    category = %v.info.category,
                    from_compile_cache = v.from_cache,
                    "plugin loaded"
                );
                if let Some(slot) = read(&self.state).slots.get(stem) {
                    log_refusals(stem, slot);
                }
            }
            ReloadOutcome::Failed(e) => {
                let e = e.to_string();
                tracing::error!(
                    slot = stem,
                    "plugin not loaded: {}",
                    crate::task::one_line(&e)
                );
            }
            ReloadOutcome::Removed => tracing::info!(slot = stem, "plugin removed"),
            ReloadOutcome::Unchanged => {}
        }
        outcome
    }

    fn set_loading(&self, stem: &str, loading: bool) {
        let mut state = write(&self.state);
        if loading {
            state.slots.entry(stem.to_string()).or_default().loading = true;
        } else if let Some(slot) = state.slots.get_mut(stem) {
            slot.loading = false;
        }
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
        read(&self.state)
            .slots
            .get(stem)
            .and_then(|slot| slot.last_tried.as_ref())
            .is_some_and(|last| last == tried)
    }

    /// The atomic swap: installs the version, then decides again which slot
    /// serves which kind.
    fn install(
        &self,
        stem: &str,
        mut version: PluginVersion,
        tried: (String, Option<String>),
    ) -> ReloadOutcome {
        let mut state = write(&self.state);
        let slot = state.slots.entry(stem.to_string()).or_default();
        // Two contents of one file that claim the same version stay apart
        // in breakers, metrics and rollback: the newcomer's version gets
        // the start of its sha256 as build metadata.
        let clash = [slot.current.as_ref(), slot.previous.as_ref()]
            .into_iter()
            .flatten()
            .any(|v| v.info.version == version.info.version && v.sha256 != version.sha256);
        if clash {
            let short = version.sha256.get(..8).unwrap_or_default();
            let sep = if version.info.version.contains('+') {
                '.'
            } else {
                '+'
            };
            version.info.version = format!("{}{sep}{short}", version.info.version);
            version.names.version = version.info.version.as_str().into();
        }
        let version = Arc::new(version);
        if let Some(old) = slot.current.take() {
            slot.previous = Some(old);
            slot.swapped_at = Some(self.clock.now());
        }
        slot.current = Some(version.clone());
        slot.last_error = None;
        slot.last_reload = Some(self.clock.wall());
        slot.last_tried = Some(tried);
        reassign(&mut state);
        ReloadOutcome::Loaded(version)
    }

    fn fail(
        &self,
        stem: &str,
        error: LoadError,
        tried: Option<(String, Option<String>)>,
    ) -> ReloadOutcome {
        {
            let mut state = write(&self.state);
            let slot = state.slots.entry(stem.to_string()).or_default();
            slot.last_error = Some(Failure {
                error: error.clone(),
                at: self.clock.wall(),
            });
            slot.last_reload = Some(self.clock.wall());
            slot.last_tried = tried;
        }
        ReloadOutcome::Failed(error)
    }

    fn remove(&self, stem: &str) -> ReloadOutcome {
        let mut state = write(&self.state);
        if state.slots.remove(stem).is_none() {
            return ReloadOutcome::Unchanged;
        }
        reassign(&mut state);
        ReloadOutcome::Removed
    }
}

impl Registry {
    fn slot_status(&self, file_stem: &str, slot: &Slot) -> PluginStatus {
        let current = slot.current.as_deref();
        let serving = current.is_some() && !slot.kinds.served.is_empty();
        let status = if serving {
            "loaded"
        } else if slot.loading {
            "loading"
        } else if current.is_some() && !slot.kinds.pending.is_empty() {
            "pending"
        } else {
            "failed"
        };
        let kinds_error = (current.is_some() && !serving && slot.kinds.pending.is_empty())
            .then(|| slot.kinds.refused.first())
            .flatten()
            .map(|r| ErrorStatus {
                message: format!("{file_stem}.wasm serves no kinds: {}", r.reason),
                at: slot.last_reload.map(rfc3339).unwrap_or_default(),
            });
        PluginStatus {
            on_probation: self.on_probation(slot),
            rolled_back: slot.rolled_back.as_ref().map(|r| RollbackStatus {
                version: r.version.clone(),
                sha256: r.sha256.clone(),
                at: rfc3339(r.at),
                reason: "its circuit breaker opened during probation",
            }),
            file: format!("{file_stem}.wasm"),
            status,
            name: current.map(|v| v.info.name.clone()),
            declared_name: current.and_then(|v| v.info.declared_name.clone()),
            version: current.map(|v| v.info.version.clone()),
            sha256: current.map(|v| v.sha256.clone()),
            kinds: slot.kinds.served.clone(),
            refused_kinds: slot
                .kinds
                .refused
                .iter()
                .map(|r: &Refusal| RefusedKind {
                    kind: r.kind.clone(),
                    reason: r.reason.clone(),
                })
                .collect(),
            category: current.map(|v| v.info.category.clone()),
            description: current.map(|v| v.info.description.clone()),
            loaded_at: current.map(|v| rfc3339(v.loaded_at)),
            from_compile_cache: current.map(|v| v.from_cache),
            limits: current.map(|v| LimitsStatus {
                memory_mb: (v.limits.memory_bytes >> 20) as u64,
                timeout_s: v.limits.timeout.as_secs(),
                fuel: v.limits.fuel.unwrap_or(0),
                max_children: v.limits.max_children,
                max_concurrency: v.limits.max_concurrency,
                max_depth: v.limits.max_depth,
                max_descendants: v.limits.max_descendants,
                children_per_s: v.limits.children_per_s,
                vector_points: v.limits.vector_points,
                vector_mb: v.limits.vector_bytes >> 20,
                max_payload_mb: (v.limits.max_payload_bytes >> 20) as u64,
                max_result_mb: (v.limits.max_result_bytes >> 20) as u64,
                max_parked: v.limits.max_parked,
            }),
            capabilities: current.map(|v| v.manifest.capabilities.clone()),
            previous_version: slot.previous.as_ref().map(|v| v.info.version.clone()),
            last_reload_at: slot.last_reload.map(rfc3339),
            last_error: slot
                .last_error
                .as_ref()
                .map(|f| ErrorStatus {
                    message: f.error.to_string(),
                    at: rfc3339(f.at),
                })
                .or(kinds_error),
        }
    }
}

/// Decides again which slot serves which kind (after any change of a
/// slot's version) and rebuilds the routing table from the decision.
fn reassign(state: &mut State) {
    let wanted: Vec<Wanted> = state
        .slots
        .iter()
        .filter_map(|(stem, slot)| {
            let v = slot.current.as_ref()?;
            Some(match &v.manifest.kinds {
                Some(granted) => Wanted {
                    slot: stem.clone(),
                    kinds: granted.clone(),
                    explicit: true,
                },
                None => Wanted {
                    slot: stem.clone(),
                    kinds: v.info.kinds.clone(),
                    explicit: false,
                },
            })
        })
        .collect();
    let mut decided = state.claims.assign(&wanted, state.mode);
    state.kinds.clear();
    for (stem, slot) in &mut state.slots {
        slot.kinds = decided.remove(stem).unwrap_or_default();
        for kind in &slot.kinds.served {
            state.kinds.insert(kind.clone(), stem.clone());
        }
    }
}

fn log_refusals(stem: &str, slot: &Slot) {
    for r in &slot.kinds.refused {
        tracing::warn!(slot = stem, kind = %r.kind, "kind not served: {}", r.reason);
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
