//! What an attempt's outcome means: the record of the attempt, the task's
//! next state (succeeded, failed, retry after its backoff, re-run after a
//! rollback, back to the queue on shutdown), and who hears of it.

use super::retry;
use super::{AttemptRunner, Scheduler};
use crate::store::{AttemptPlugin, AttemptRecord, TaskRecord, Transition};
use crate::task::{FailureKind, TaskFailure};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

impl<R: AttemptRunner> Scheduler<R> {
    /// Records an attempt's outcome and decides what happens next.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn settle(
        &self,
        task: &TaskRecord,
        attempt_no: u32,
        plugin: AttemptPlugin,
        started_at: SystemTime,
        run_time: Duration,
        outcome: Result<serde_json::Value, TaskFailure>,
        pool: &str,
    ) {
        let inner = &self.inner;
        let id = task.task_id;
        let lease_lost = crate::sync::lock(&inner.lease_lost).remove(&id);
        let cancelled = matches!(&outcome, Err(f) if f.kind == FailureKind::Cancelled);
        let by_shutdown = cancelled && inner.draining.load(std::sync::atomic::Ordering::SeqCst);
        // Stopped because its lease looked lost: if the attempt is still
        // current (the lease was not lost after all), the task runs again.
        let by_lost_lease = cancelled && lease_lost && !by_shutdown;
        let interrupted_by_shutdown = by_shutdown || by_lost_lease;
        let error = match &outcome {
            Ok(_) => None,
            Err(f) if by_lost_lease => Some(TaskFailure::new(
                FailureKind::Interrupted,
                format!(
                    "interrupted: this daemon's lease on the task was not renewed: {}",
                    f.message
                ),
            )),
            Err(f) if interrupted_by_shutdown => Some(TaskFailure::new(
                FailureKind::Cancelled,
                format!("interrupted by shutdown: {}", f.message),
            )),
            Err(f) => Some(f.clone()),
        };
        let record = AttemptRecord {
            attempt: attempt_no,
            plugin: plugin.clone(),
            started_at,
            duration_ms: u64::try_from(run_time.as_millis()).unwrap_or(u64::MAX),
            error: error.clone(),
            charged: !interrupted_by_shutdown,
        };
        let retry = match &outcome {
            Err(f) if !interrupted_by_shutdown && retry::is_transient(f.kind) => {
                attempt_no <= task.max_retries
            }
            _ => false,
        };
        // Failed on a version that has since been rolled back (this failure
        // may be the one that tripped it): run again on the restored one,
        // uncharged.
        let rerun_after_rollback = matches!(&outcome, Err(f) if counts_against_plugin(f.kind, true))
            && inner.config.rollback
            && inner.runner.is_rolled_back(&plugin.name, &plugin.version);
        inner.metrics.attempt_finished(
            pool,
            (&plugin.name, &plugin.version),
            run_time,
            outcome.as_ref().err().map(|f| f.kind),
            retry || interrupted_by_shutdown || rerun_after_rollback,
        );

        if interrupted_by_shutdown {
            self.step(
                id,
                Transition::Requeue {
                    log: record,
                    failure: None,
                },
            )
            .await;
            return;
        }
        if rerun_after_rollback {
            let requeue = Transition::Requeue {
                log: record,
                failure: error,
            };
            self.step(id, requeue).await;
            return;
        }
        if retry && let Some(failure) = error {
            // The store files it by its due time; maintenance puts it
            // back in the queue then.
            let delay = inner.config.retry.delay(id, attempt_no);
            let retry = Transition::Retry {
                log: record,
                failure,
                due: inner.clock.wall() + delay,
            };
            self.step(id, retry).await;
            return;
        }
        self.finish(id, outcome, Some(record)).await;
    }

    pub(super) async fn finish(
        &self,
        id: Uuid,
        outcome: Result<serde_json::Value, TaskFailure>,
        attempt: Option<AttemptRecord>,
    ) {
        let at = self.inner.clock.wall();
        let end = match (outcome, attempt) {
            (Ok(result), Some(log)) => Transition::Succeed { log, result, at },
            (Ok(_), None) => {
                tracing::error!(task.id = %id, "a success without an attempt is not recorded");
                return;
            }
            (Err(failure), log) => Transition::Fail { log, failure, at },
        };
        if self.step(id, end).await {
            self.wake_waiters(id);
        }
    }
}

/// Whether a failure says something about what the plugin itself did
/// (and so counts for its automatic breaker): it trapped, ran out of
/// memory, fuel or time. A retryable error is usually a destination's
/// failure (which the destination's breaker counts), and a fatal one the
/// caller's bad input, except on a version on probation after a swap,
/// where a fatal error is the new version's doing.
pub(super) fn counts_against_plugin(kind: FailureKind, on_probation: bool) -> bool {
    match kind {
        FailureKind::Trap | FailureKind::Timeout | FailureKind::OutOfMemory | FailureKind::Fuel => {
            true
        }
        FailureKind::Fatal => on_probation,
        _ => false,
    }
}

/// The record of the current attempt of a `running` task that ended without
/// an outcome of its own (the daemon stopped, the host panicked): charged,
/// with `failure` as its error.
pub(super) fn cut_short(
    task: &TaskRecord,
    failure: TaskFailure,
    started_at: SystemTime,
) -> AttemptRecord {
    AttemptRecord {
        attempt: task.attempts,
        plugin: task.plugin.clone().unwrap_or(AttemptPlugin {
            name: String::new(),
            version: String::new(),
        }),
        started_at,
        duration_ms: 0,
        error: Some(failure),
        charged: true,
    }
}
