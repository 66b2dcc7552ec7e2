//! Per-plugin concurrency inside a shared pool, so one plugin cannot take
//! every worker of a pool it shares with others.
//!
//! [`PluginSlots`] counts each plugin's running attempts. A job whose
//! plugin is at its limit is *held* (it stays `queued` in the store) and
//! goes back to its pool when one of that plugin's attempts ends, so the
//! worker moves on to other plugins' work at once. The limit is the
//! manifest's `[limits] max_concurrency`, or, when that is 0, the pool's
//! size less one while other plugins share the pool (the whole pool when
//! the plugin is alone in it).

use super::pool::CategoryPool;
use crate::store::queue::Job;
use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

/// Running attempts and held jobs per plugin (file stem).
#[derive(Debug, Default)]
pub struct PluginSlots {
    plugins: Mutex<HashMap<String, Load>>,
}

#[derive(Debug, Default)]
struct Load {
    running: usize,
    held: VecDeque<(Job, Arc<CategoryPool>)>,
}

/// The concurrency limit of a plugin in `pool`.
pub fn limit(max_concurrency: u32, pool_size: usize, plugins_in_pool: usize) -> usize {
    let auto = if plugins_in_pool > 1 {
        pool_size.saturating_sub(1)
    } else {
        pool_size
    };
    let limit = match max_concurrency {
        0 => auto,
        n => usize::try_from(n).unwrap_or(usize::MAX).min(pool_size),
    };
    limit.max(1)
}

impl PluginSlots {
    /// Takes a slot for `plugin` if it is under `limit`; otherwise holds
    /// `job` until one of its attempts ends and returns false.
    pub fn take_or_hold(
        &self,
        plugin: &str,
        limit: usize,
        job: Job,
        pool: &Arc<CategoryPool>,
    ) -> bool {
        let mut plugins = lock(&self.plugins);
        let load = plugins.entry(plugin.to_string()).or_default();
        if load.running < limit {
            load.running += 1;
            true
        } else {
            load.held.push_back((job, pool.clone()));
            false
        }
    }

    /// An attempt of `plugin` ended: its slot is free, and its oldest held
    /// job goes back to its pool.
    pub fn release(&self, plugin: &str) {
        let next = {
            let mut plugins = lock(&self.plugins);
            let next = plugins.get_mut(plugin).and_then(|load| {
                load.running = load.running.saturating_sub(1);
                load.held.pop_front()
            });
            if plugins
                .get(plugin)
                .is_some_and(|l| l.running == 0 && l.held.is_empty())
            {
                plugins.remove(plugin);
            }
            next
        };
        if let Some((job, pool)) = next {
            pool.give_back(job);
        }
    }

    /// Attempts running and jobs held back per plugin (for the status API
    /// and `/metrics`).
    pub fn load(&self) -> HashMap<String, (usize, usize)> {
        lock(&self.plugins)
            .iter()
            .map(|(k, l)| (k.clone(), (l.running, l.held.len())))
            .collect()
    }

    /// Jobs held back per plugin (for the status API).
    pub fn held(&self) -> HashMap<String, usize> {
        lock(&self.plugins)
            .iter()
            .map(|(k, l)| (k.clone(), l.held.len()))
            .collect()
    }
}

/// Gives a plugin's slot back when an attempt ends, on every path.
pub struct SlotGuard {
    pub slots: Arc<PluginSlots>,
    pub plugin: String,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.release(&self.plugin);
    }
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use crate::store::{Store, TaskRecord};
    use crate::task::Priority;
    use std::time::SystemTime;

    /// A task queued in `pool` of `store`, claimed as a worker would.
    async fn claimed(store: &Store, pool: &str) -> Job {
        let record = TaskRecord {
            category: Some(pool.into()),
            ..TaskRecord::new(
                "k",
                serde_json::json!({}),
                Priority::Normal,
                SystemTime::now(),
            )
        };
        store.insert(record).await.expect("stored");
        store
            .claim(pool, 1, true, &[])
            .await
            .pop()
            .expect("claimable")
    }

    #[test]
    fn a_plugin_sharing_a_pool_leaves_a_worker_for_the_others() {
        assert_eq!(limit(0, 2, 2), 1);
        assert_eq!(limit(0, 2, 1), 2, "alone in its pool: all of it");
        assert_eq!(limit(0, 1, 3), 1);
        assert_eq!(limit(3, 2, 2), 2, "never more than the pool");
        assert_eq!(limit(1, 8, 1), 1);
    }

    #[tokio::test]
    async fn a_held_job_goes_back_to_its_pool_when_a_slot_frees() {
        let store = Store::memory();
        let slots = PluginSlots::default();
        let pool = Arc::new(CategoryPool::new("batch", 2, store.clone()));
        assert!(slots.take_or_hold("hog", 1, claimed(&store, "batch").await, &pool));
        assert!(!slots.take_or_hold("hog", 1, claimed(&store, "batch").await, &pool));
        assert!(
            slots.take_or_hold("echo", 1, claimed(&store, "batch").await, &pool),
            "others run"
        );
        assert_eq!(slots.held().get("hog"), Some(&1));
        assert_eq!(pool.depths().await.iter().sum::<usize>(), 0);
        slots.release("hog");
        assert_eq!(pool.depths().await.iter().sum::<usize>(), 1, "re-queued");
    }
}
