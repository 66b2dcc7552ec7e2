//! The scheduler's own background work: due retries (the retry timer puts a
//! `retry_wait` task back in its queue when its backoff is over), recovery
//! of what the store held at start, and retention (deleting tasks finished
//! longer ago than `[store] retention_s`, every `prune_interval_s`), and,
//! in a store daemons share, the rescue of attempts whose daemon's lease
//! ran out. All of it but the rescue (leases run on the database's clock)
//! runs on the scheduler's clock (tests move it with a `ManualClock`), and
//! it ends when the scheduler stops.
//!
//! Where daemons share a store, only the leader ([`Store::leadership`])
//! does the periodic work: due retries, rescue and retention. The others
//! wait to take over. A rollback's re-runs stay with the daemon that rolled
//! the plugin back (it is the one that knows); each re-run is a
//! compare-and-set, so two daemons rolling back the same version cannot
//! re-run a task twice.
//!
//! [`Store::leadership`]: crate::store::Store::leadership

use super::completer::cut_short;
use super::{AttemptRunner, Scheduler};
use crate::store::Transition;
use crate::task::{FailureKind, TaskFailure, TaskStatus};
use std::time::Duration;

/// How often a daemon looks for attempts whose lease ran out.
const RESCUE_EVERY: Duration = Duration::from_secs(5);

/// Where daemons share a store, the leader looks for due retries at least
/// this often (a retry filed by another daemon is announced, but an
/// announcement may be lost).
const DUE_POLL_SHARED: Duration = Duration::from_secs(5);

/// When retention runs and what it keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Finished tasks are kept this long.
    pub keep: Duration,
    /// How often it looks.
    pub every: Duration,
}

impl<R: AttemptRunner> Scheduler<R> {
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
            if !*inner.store.leadership().borrow() {
                continue;
            }
            let before = inner.clock.wall() - retention.keep;
            match inner.store.prune(before).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(pruned = n, "retention: finished tasks deleted"),
                Err(e) => tracing::warn!("retention failed: {e}"),
            }
        }
    }

    /// Due retries: asks the store which `retry_wait` tasks are due and
    /// puts them back in their queues; sleeps until the next one is due or
    /// a new one is filed.
    pub(super) async fn due_loop(self) {
        let inner = &self.inner;
        let mut stop = inner.stop.subscribe();
        let filed = inner.store.due_changed();
        let mut leading = inner.store.leadership();
        let shared = inner.store.shared();
        loop {
            let changed = filed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if !until_leading(&mut leading, &mut stop).await {
                return;
            }
            let (due, next) = inner.store.due(inner.clock.wall()).await;
            for id in due {
                self.step(id, Transition::Due).await;
            }
            let mut wait = next.map(|at| at.duration_since(inner.clock.wall()).unwrap_or_default());
            if shared {
                wait = Some(wait.map_or(DUE_POLL_SHARED, |w| w.min(DUE_POLL_SHARED)));
            }
            let sleep = match wait {
                Some(wait) => inner.clock.sleep_until(inner.clock.now() + wait),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                () = sleep => {}
                () = &mut changed => {}
                () = leadership_changed(&mut leading) => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Rescues, in a store daemons share, the running attempts of daemons
    /// that stopped renewing their leases (killed, cut off): each is
    /// recorded `interrupted` and runs again (at-least-once; a late outcome
    /// from the lost attempt is refused, its attempt is no longer current).
    /// The leader looks; should two daemons both believe they lead for a
    /// moment, the row lock still lets one rescue each attempt.
    pub(super) async fn rescue_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        let leading = self.inner.store.leadership();
        let mut tick = tokio::time::interval(RESCUE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
            }
            if !*leading.borrow() {
                continue;
            }
            let inner = &self.inner;
            for task in inner.store.expired().await {
                let failure = TaskFailure::new(
                    FailureKind::Interrupted,
                    "the daemon running this attempt stopped renewing its lease; it runs again",
                );
                let log = cut_short(&task, failure, inner.clock.wall());
                if self
                    .step(task.task_id, Transition::Interrupted { log })
                    .await
                {
                    tracing::warn!(task.id = %task.task_id, "rescued an attempt whose daemon is gone");
                }
            }
        }
    }

    /// Picks up what the store held when the daemon last stopped. Queued
    /// and waiting tasks are in the store's queue already; attempts that
    /// were running are recorded as `interrupted` and run again
    /// (at-least-once); parked ones go back to the queue (their breakers
    /// start closed); a task of a pool no longer configured fails. Returns
    /// how many tasks were unfinished.
    pub async fn recover(&self) -> usize {
        let inner = &self.inner;
        let tasks = inner.store.unfinished().await;
        let now_wall = inner.clock.wall();
        for task in &tasks {
            let id = task.task_id;
            let Some(pool) = task.category.as_deref() else {
                continue;
            };
            // A shared store's task of another pool is another daemon's.
            if !inner.pools.contains_key(pool) && inner.store.shared() {
                continue;
            }
            if !inner.pools.contains_key(pool) {
                let failure = TaskFailure::new(
                    FailureKind::NoHandler,
                    format!("no worker pool `{pool}` is configured"),
                );
                self.finish(id, Err(failure), None).await;
                continue;
            }
            match task.status {
                TaskStatus::RetryWait if task.next_attempt_at.is_none() => {
                    self.step(id, Transition::Due).await;
                }
                TaskStatus::Running => {
                    let failure = TaskFailure::new(
                        FailureKind::Interrupted,
                        "the daemon stopped while this attempt ran; it runs again",
                    );
                    let log = cut_short(task, failure, now_wall);
                    self.step(id, Transition::Interrupted { log }).await;
                }
                TaskStatus::Queued if task.parked_on.is_some() => {
                    self.step(id, Transition::Unpark { breaker: None }).await;
                }
                _ => {}
            }
        }
        if !tasks.is_empty() {
            tracing::info!(
                tasks = tasks.len(),
                "recovered unfinished tasks from the store"
            );
        }
        tasks.len()
    }
}

/// Waits until this daemon leads the periodic work: true then, false once
/// the scheduler stops (or nobody can lead any more).
async fn until_leading(
    leading: &mut tokio::sync::watch::Receiver<bool>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> bool {
    loop {
        if *stop.borrow() {
            return false;
        }
        if *leading.borrow_and_update() {
            return true;
        }
        tokio::select! {
            changed = leading.changed() => if changed.is_err() {
                return *leading.borrow();
            },
            _ = stop.changed() => return false,
        }
    }
}

/// Returns when the leadership changes; never where it cannot (one
/// daemon's own store, whose leadership is fixed).
async fn leadership_changed(leading: &mut tokio::sync::watch::Receiver<bool>) {
    if leading.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
