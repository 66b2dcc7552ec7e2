//! Periodic work that keeps the store in shape: retention (deleting tasks
//! finished longer ago than `[store] retention_s`, every
//! `prune_interval_s`). It runs on the scheduler's clock (so tests move it
//! with a `ManualClock`) and ends when the scheduler stops.

use super::Scheduler;
use std::time::Duration;

/// When retention runs and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished tasks are kept this long.
    pub keep: Duration,
    /// How often it looks.
    pub every: Duration,
}

impl Scheduler {
    /// Starts retention; it stops with the scheduler.
    pub fn start_retention(&self, retention: Retention) {
        let s = self.clone();
        tokio::spawn(async move { s.retention_loop(retention).await });
    }

    async fn retention_loop(self, retention: Retention) {
        let inner = &self.inner;
        let mut stop = inner.stop.subscribe();
        loop {
            if *stop.borrow() {
                return;
            }
            let next = inner.clock.now() + retention.every.max(Duration::from_millis(1));
            tokio::select! {
                () = inner.clock.sleep_until(next) => {}
                _ = stop.changed() => return,
            }
            let before = inner.clock.wall() - retention.keep;
            match inner.store.prune(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "retention: finished tasks deleted"),
                Err(e) => tracing::warn!("retention failed: {e}"),
            }
        }
    }
}
