//! The scheduler's own background work: due retries (the retry timer puts a
//! `retry_wait` task back in its queue when its backoff is over), recovery
//! of what the store held at start, and retention (deleting tasks finished
//! longer ago than `[store] retention_s`, every `prune_interval_s`), and,
//! in a store daemons share, the rescue of attempts whose daemon's lease
//! ran out. All of it but the rescue (leases run on the database's clock)
//! runs on the scheduler's clock (tests move it with a `ManualClock`), and
//! it ends when the scheduler stops.

use super::completer::cut_short;
use super::{AttemptRunner, Scheduler};
use crate::store::Transition;
use crate::task::{FailureKind, TaskFailure, TaskStatus};
use std::time::Duration;

/// How often a daemon looks for attempts whose lease ran out.
const RESCUE_EVERY: Duration = Duration::from_secs(5);

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
        loop {
            let changed = filed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (due, next) = inner.store.due(inner.clock.wall()).await;
            for id in due {
                self.step(id, Transition::Due).await;
            }
            let sleep = match next {
                Some(at) => {
                    let wait = at.duration_since(inner.clock.wall()).unwrap_or_default();
                    inner.clock.sleep_until(inner.clock.now() + wait)
                }
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                () = sleep => {}
                () = &mut changed => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Rescues, in a store daemons share, the running attempts of daemons
    /// that stopped renewing their leases (killed, cut off): each is
    /// recorded `interrupted` and runs again (at-least-once; a late outcome
    /// from the lost attempt is refused, its attempt is no longer current).
    /// Every daemon looks; the row lock lets one rescue each attempt.
    pub(super) async fn rescue_loop(self) {
        let mut stop = self.inner.stop.subscribe();
        let mut tick = tokio::time::interval(RESCUE_EVERY);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.changed() => return,
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
