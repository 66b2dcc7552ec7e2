//! Tasks and breakers: a task whose breaker refuses it is parked (uncharged)
//! and released as the breaker lets work through again (one per free trial
//! slot when half-open, all when closed); a version whose breaker opens on
//! probation is rolled back, and its failed tasks run again on the restored
//! one. The listener never waits on a rollback: each runs in its own task.

use super::completer::counts_against_plugin;
use super::parking;
use super::{AttemptRunner, Scheduler, Served};
use crate::breaker::{State as BreakerState, Transition as BreakerTransition};
use crate::store::{TaskRecord, Transition};
use tokio::sync::broadcast;

impl<R: AttemptRunner> Scheduler<R> {
    pub(super) async fn park(&self, task: &TaskRecord, plugin: &str, breaker: &str, pool: &str) {
        let inner = &self.inner;
        let park = Transition::Park {
            breaker: breaker.to_string(),
        };
        if !self.step(task.task_id, park).await {
            return;
        }
        inner.parked.park(
            breaker,
            parking::Parked {
                id: task.task_id,
                pool: pool.to_string(),
                plugin: plugin.to_string(),
            },
        );
        inner.metrics.parked(pool);
        tracing::debug!(task.id = %task.task_id, breaker, "parked on an open breaker");
        // The breaker may have moved on between its refusal and the parking
        // (closed, or a trial slot freed): its release already ran, so run
        // this one now. Checked after parking, so one side sees the other.
        if inner
            .breakers
            .find(breaker)
            .is_some_and(|b| b.would_admit())
        {
            self.release(breaker).await;
            return;
        }
        // A version rolled back or replaced meanwhile will not half-open for
        // this task's sake: let it go to the version now serving.
        if let Some((name, version)) = plugin_breaker_version(breaker) {
            let replaced = inner.runner.is_rolled_back(name, version)
                || inner
                    .runner
                    .resolve(&task.kind)
                    .is_some_and(|v| v.name() != name || v.version() != version);
            if replaced {
                self.release_all(breaker).await;
            }
        }
    }

    /// Puts as many tasks parked on `breaker` back in their queues as it
    /// would let through now: all of them when it is closed, one per free
    /// trial slot when it is half-open, none while it is open.
    pub(super) async fn release(&self, breaker: &str) {
        let room = match self.inner.breakers.find(breaker) {
            Some(b) => b.room(),
            None => None,
        };
        self.unpark(breaker, room).await;
    }

    /// Puts every task parked on `breaker` back (its version was replaced
    /// or rolled back: the tasks go to the version now serving).
    pub(super) async fn release_all(&self, breaker: &str) {
        self.unpark(breaker, None).await;
    }

    pub(super) async fn unpark(&self, breaker: &str, limit: Option<usize>) {
        for parked in self.inner.parked.take(breaker, limit) {
            let unpark = Transition::Unpark {
                breaker: Some(breaker.to_string()),
            };
            self.step(parked.id, unpark).await;
        }
    }

    /// Reacts to breaker transitions: wakes parked tasks when a breaker
    /// half-opens or closes, arms a timer when one opens, and rolls back a
    /// plugin version whose breaker opens while it is on probation.
    pub(super) async fn breaker_loop(
        self,
        mut transitions: broadcast::Receiver<BreakerTransition>,
    ) {
        loop {
            let transition = match transitions.recv().await {
                Ok(t) => t,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed some: release everything; the breakers re-park
                    // whatever still may not run.
                    for name in self.inner.parked.breakers() {
                        self.release(&name).await;
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match transition.to {
                BreakerState::HalfOpen | BreakerState::Closed => {
                    self.release(&transition.breaker).await
                }
                BreakerState::Open => {
                    self.arm_half_open(&transition.breaker);
                    // In its own task: a rollback waits on the registry,
                    // and the listener must keep releasing other breakers.
                    if self.inner.config.rollback {
                        let (s, name) = (self.clone(), transition.breaker);
                        tokio::spawn(async move { s.maybe_roll_back(&name).await });
                    }
                }
            }
        }
    }

    /// When an open breaker's time is up, move it to half-open so the tasks
    /// parked on it are released.
    pub(super) fn arm_half_open(&self, name: &str) {
        let Some(breaker) = self.inner.breakers.find(name) else {
            return;
        };
        let Some(at) = breaker.half_open_at() else {
            return;
        };
        let (clock, breakers) = (self.inner.clock.clone(), self.inner.breakers.clone());
        let mut stop = self.inner.stop.subscribe();
        tokio::spawn(async move {
            tokio::select! {
                () = clock.sleep_until(at) => breakers.announce(breaker.poll()),
                _ = stop.changed() => {}
            }
        });
    }

    /// A plugin version's breaker opened: if the version is on probation
    /// after a swap, put the previous version back and give the tasks that
    /// failed on the bad one their attempts back.
    pub(super) async fn maybe_roll_back(&self, breaker: &str) {
        let Some((name, version)) = plugin_breaker_version(breaker) else {
            return;
        };
        let Some(rolled_back) = self.inner.runner.roll_back(name, version).await else {
            return;
        };
        tracing::warn!(
            plugin = name,
            bad_version = version,
            restored_version = %rolled_back,
            "automatic rollback: the new version's breaker opened during probation"
        );
        self.retry_after_rollback(name, version).await;
        self.release_all(breaker).await;
    }

    /// Tasks whose last attempt failed on a rolled-back version run again on
    /// the restored one, without that attempt counting.
    pub(super) async fn retry_after_rollback(&self, name: &str, version: &str) {
        let store = &self.inner.store;
        for id in store.failed_on(name, version).await {
            // Only failures that were the version's doing.
            let theirs = store
                .get(id)
                .await
                .and_then(|t| t.error)
                .is_some_and(|e| counts_against_plugin(e.kind, true));
            if theirs {
                self.step(id, Transition::Rerun).await;
            }
        }
    }
}

/// The plugin and version of an automatic breaker's name (`plugin:NAME@VERSION`).
fn plugin_breaker_version(breaker: &str) -> Option<(&str, &str)> {
    breaker.strip_prefix("plugin:")?.rsplit_once('@')
}
