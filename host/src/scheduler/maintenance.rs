//! The scheduler's own background work: due retries (the retry timer puts a
//! `retry_wait` task back in its queue when its backoff is over), recovery
//! of what the store held at start, and retention (deleting tasks finished
//! longer ago than `[store] retention_s`, every `prune_interval_s`). All of
//! it runs on the scheduler's clock (tests move it with a `ManualClock`)
//! and ends when the scheduler stops.

use super::{AttemptRunner, Scheduler};
use crate::store::{AttemptPlugin, AttemptRecord, Transition};
use crate::sync::lock;
use crate::task::{FailureKind, TaskFailure, TaskStatus};
use std::cmp::Reverse;
use std::time::{Duration, Instant};
use uuid::Uuid;

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

    /// Queues task `id` again in `pool` at `due`.
    pub(super) fn arm_timer(&self, id: Uuid, pool: &str, due: Instant) {
        lock(&self.inner.timers).push(Reverse((due, id, pool.to_string())));
        self.inner.timers_changed.notify_one();
    }

    /// Fires retry timers: a due task goes back to its pool's queue.
    pub(super) async fn timer_loop(self) {
        let inner = &self.inner;
        let mut stop = inner.stop.subscribe();
        loop {
            let changed = inner.timers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = inner.clock.now();
            let mut due = Vec::new();
            let next = {
                let mut timers = lock(&inner.timers);
                while timers.peek().is_some_and(|Reverse((at, _, _))| *at <= now) {
                    if let Some(Reverse((_, id, pool))) = timers.pop() {
                        due.push((id, pool));
                    }
                }
                timers.peek().map(|Reverse((at, _, _))| *at)
            };
            for (id, pool) in due {
                if let Some(task) = self.step(id, Transition::Due) {
                    self.enqueue(id, task.priority, &pool);
                }
            }
            let sleep = match next {
                Some(at) => inner.clock.sleep_until(at),
                None => Box::pin(std::future::pending()),
            };
            tokio::select! {
                () = sleep => {}
                () = &mut changed => {}
                _ = stop.changed() => return,
            }
        }
    }

    /// Picks up what the store held when the daemon last stopped: queued
    /// tasks are queued again (with their priority), retry timers re-armed
    /// for their due time, and attempts that were running are recorded as
    /// `interrupted` and run again (at-least-once). Returns how many.
    pub fn recover(&self) -> usize {
        let inner = &self.inner;
        let tasks = inner.store.unfinished();
        let now_wall = inner.clock.wall();
        for task in &tasks {
            let id = task.task_id;
            let Some(pool) = task.category.clone() else {
                continue;
            };
            match task.status {
                TaskStatus::RetryWait => {
                    // Re-arm the timer for the stored due time; the record
                    // keeps its `next_attempt_at` as it was.
                    let wait = task
                        .next_attempt_at
                        .and_then(|due| due.duration_since(now_wall).ok())
                        .unwrap_or_default();
                    self.arm_timer(id, &pool, inner.clock.now() + wait);
                }
                TaskStatus::Running => {
                    let plugin = task.plugin.clone().unwrap_or(AttemptPlugin {
                        name: String::new(),
                        version: String::new(),
                    });
                    let log = AttemptRecord {
                        attempt: task.attempts,
                        plugin,
                        started_at: now_wall,
                        duration_ms: 0,
                        error: Some(TaskFailure::new(
                            FailureKind::Interrupted,
                            "the daemon stopped while this attempt ran; it runs again",
                        )),
                        charged: true,
                    };
                    if self.step(id, Transition::Interrupted { log }).is_some() {
                        self.enqueue(id, task.priority, &pool);
                    }
                }
                _ => {
                    // Parked before the stop: its breaker starts closed.
                    if task.parked_on.is_some() {
                        self.step(id, Transition::Unpark { breaker: None });
                    }
                    self.enqueue(id, task.priority, &pool);
                }
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
