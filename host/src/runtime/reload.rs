//! Watches the plugins directory and reloads the slots that change.
//!
//! `notify` reports file events on its own thread; they are forwarded to a
//! tokio task that collects the affected slots and, once the directory has
//! been quiet for the debounce period, asks the [`Registry`] to reload each.
//! Debouncing turns a write-then-rename, or an in-place copy that arrives in
//! several writes, into one reload. Reads (including the registry's own) are
//! not changes and are ignored.

use super::registry::{Registry, plugin_stem};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Keeps the directory watched while it lives.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for PluginWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginWatcher").finish_non_exhaustive()
    }
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `registry.dir()`. Must be called inside a tokio runtime.
pub fn watch(registry: Arc<Registry>, debounce: Duration) -> notify::Result<PluginWatcher> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        // The receiver is gone only when the daemon is shutting down.
        let _ = tx.send(event);
    })?;
    watcher.watch(registry.dir(), RecursiveMode::NonRecursive)?;
    let task = tokio::spawn(reload_loop(registry, rx, debounce));
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}

async fn reload_loop(
    registry: Arc<Registry>,
    mut events: mpsc::UnboundedReceiver<notify::Result<Event>>,
    debounce: Duration,
) {
    let mut pending = BTreeSet::<String>::new();
    loop {
        let next = if pending.is_empty() {
            events.recv().await
        } else {
            match tokio::time::timeout(debounce, events.recv()).await {
                Ok(next) => next,
                Err(_quiet) => {
                    for stem in std::mem::take(&mut pending) {
                        registry.reload(&stem).await;
                    }
                    continue;
                }
            }
        };
        match next {
            None => return,
            Some(Ok(event)) if is_change(&event.kind) => {
                pending.extend(event.paths.iter().filter_map(|p| plugin_stem(p)));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => tracing::warn!("plugins directory watch error: {e}"),
        }
    }
}

fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RenameMode};

    #[test]
    fn reads_are_not_changes_but_writes_and_renames_are() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Name(
            RenameMode::To
        ))));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }
}
