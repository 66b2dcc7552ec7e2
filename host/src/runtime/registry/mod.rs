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

mod loading;
mod status;

use super::Runtime;
use super::kinds::{Assignment, KindClaims, Mode, Refusal, Wanted};
use super::manifest::{Capabilities, Manifest};
use super::plugin::{LoadError, PluginVersion};
use crate::clock::Clock;
use crate::sync::{lock, read, write};
use crate::task::rfc3339;
use serde::Serialize;
use sha2::{Digest, Sha256};
pub use status::{ErrorStatus, LimitsStatus, PluginStatus, RefusedKind, RollbackStatus};
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
