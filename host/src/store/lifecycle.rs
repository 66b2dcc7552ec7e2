//! The task lifecycle: the one place that knows which state changes are
//! allowed ([`Transition::apply`]).
//!
//! ```text
//!            ┌──────── park / unpark ────────┐
//!            ▼                               │
//! insert → queued ── start ──→ running ──→ succeeded | failed | cancelled
//!            ▲  │                 │  │
//!            │  └─ defer ─┐       │  └─ retry ──→ retry_wait ── due ──→ queued
//!            │            ▼       └─ requeue / interrupted ──→ queued
//!            └──── due ── retry_wait
//! cancel: queued | retry_wait → cancelled (a running attempt is stopped and
//! ends through its outcome); rerun: failed | retry_wait → queued, after a
//! rollback, the last attempt uncharged.
//! ```
//!
//! A parked task is `queued` with `parked_on` set (the JSON `status` strings
//! stay as they are). An attempt's outcome names its attempt number and is
//! applied only while that attempt is the task's current one (a stale or
//! duplicate outcome is refused); an illegal transition is an error that
//! leaves the record as it was, never a silent write.

use super::record::{AttemptPlugin, AttemptRecord, TaskRecord};
use crate::task::{FailureKind, TaskFailure, TaskStatus};
use std::time::SystemTime;

/// One change of a task's state.
#[derive(Debug, Clone)]
pub enum Transition {
    /// queued (not parked) → running: attempt `attempt` starts.
    Start {
        attempt: u32,
        plugin: AttemptPlugin,
        category: String,
        at: SystemTime,
    },
    /// running → succeeded.
    Succeed {
        log: AttemptRecord,
        result: serde_json::Value,
        at: SystemTime,
    },
    /// running → failed (cancelled when the failure is a cancel), or, with
    /// no attempt (`log: None`), queued | retry_wait → failed without running.
    Fail {
        log: Option<AttemptRecord>,
        failure: TaskFailure,
        at: SystemTime,
    },
    /// running → retry_wait: a charged attempt failed and runs again at `due`.
    Retry {
        log: AttemptRecord,
        failure: TaskFailure,
        due: SystemTime,
    },
    /// queued → retry_wait without running (no plugin serves the kind yet).
    Defer { due: SystemTime },
    /// running → queued, the attempt uncharged (cut by shutdown, or run on a
    /// version since rolled back); `failure` replaces the task's error.
    Requeue {
        log: AttemptRecord,
        failure: Option<TaskFailure>,
    },
    /// running → queued after the daemon stopped during the attempt (found
    /// at start-up); the attempt stays charged.
    Interrupted { log: AttemptRecord },
    /// queued → queued, parked on the open breaker.
    Park { breaker: String },
    /// parked on `breaker` (any breaker when `None`) → queued.
    Unpark { breaker: Option<String> },
    /// retry_wait → queued: its time has come.
    Due,
    /// queued | retry_wait → cancelled.
    Cancel { at: SystemTime, message: String },
    /// failed | retry_wait → queued after its version was rolled back, the
    /// last attempt uncharged.
    Rerun,
}

/// Why a transition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransitionError {
    #[error("no task {0}")]
    NotFound(uuid::Uuid),
    #[error("a task that is {from} cannot {transition}")]
    Illegal {
        from: &'static str,
        transition: &'static str,
    },
    /// An outcome of an attempt that is not the task's current one.
    #[error("attempt {attempt} is not the current attempt ({current}) of the task")]
    Stale { attempt: u32, current: u32 },
    /// The store could not record it.
    #[error("{0}")]
    Store(String),
}

impl Transition {
    /// The transition's name, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Transition::Start { .. } => "start",
            Transition::Succeed { .. } => "succeed",
            Transition::Fail { .. } => "fail",
            Transition::Retry { .. } => "retry",
            Transition::Defer { .. } => "defer",
            Transition::Requeue { .. } => "requeue",
            Transition::Interrupted { .. } => "be interrupted",
            Transition::Park { .. } => "park",
            Transition::Unpark { .. } => "unpark",
            Transition::Due => "become due",
            Transition::Cancel { .. } => "be cancelled",
            Transition::Rerun => "rerun",
        }
    }

    /// The status a task has after this transition.
    fn target(&self) -> TaskStatus {
        match self {
            Transition::Start { .. } => TaskStatus::Running,
            Transition::Succeed { .. } => TaskStatus::Succeeded,
            Transition::Fail { failure, .. } if failure.kind == FailureKind::Cancelled => {
                TaskStatus::Cancelled
            }
            Transition::Fail { .. } => TaskStatus::Failed,
            Transition::Retry { .. } | Transition::Defer { .. } => TaskStatus::RetryWait,
            Transition::Cancel { .. } => TaskStatus::Cancelled,
            Transition::Requeue { .. }
            | Transition::Interrupted { .. }
            | Transition::Park { .. }
            | Transition::Unpark { .. }
            | Transition::Due
            | Transition::Rerun => TaskStatus::Queued,
        }
    }

    /// Checks the transition against the task as it is.
    pub fn check(&self, t: &TaskRecord) -> Result<(), TransitionError> {
        use TaskStatus::*;
        let illegal = || TransitionError::Illegal {
            from: if t.status == Queued && t.parked_on.is_some() {
                "parked"
            } else {
                t.status.as_str()
            },
            transition: self.name(),
        };
        let current = |attempt: u32| {
            if attempt == t.attempts {
                Ok(())
            } else {
                Err(TransitionError::Stale {
                    attempt,
                    current: t.attempts,
                })
            }
        };
        let parked = t.parked_on.is_some();
        match (self, t.status) {
            (Transition::Start { attempt, .. }, Queued) if !parked => {
                if *attempt == t.attempts + 1 {
                    Ok(())
                } else {
                    Err(TransitionError::Stale {
                        attempt: *attempt,
                        current: t.attempts,
                    })
                }
            }
            (
                Transition::Succeed { log, .. }
                | Transition::Retry { log, .. }
                | Transition::Requeue { log, .. }
                | Transition::Interrupted { log },
                Running,
            )
            | (Transition::Fail { log: Some(log), .. }, Running) => current(log.attempt),
            (Transition::Fail { log: None, .. }, Queued | RetryWait) => Ok(()),
            (Transition::Defer { .. }, Queued) if !parked => Ok(()),
            (Transition::Park { .. }, Queued) if !parked => Ok(()),
            (Transition::Unpark { breaker }, Queued) if parked => match breaker {
                Some(b) if t.parked_on.as_deref() != Some(b.as_str()) => Err(illegal()),
                _ => Ok(()),
            },
            (Transition::Due, RetryWait) => Ok(()),
            (Transition::Cancel { .. }, Queued | RetryWait) => Ok(()),
            (Transition::Rerun, Failed | RetryWait) => Ok(()),
            _ => Err(illegal()),
        }
    }

    /// Applies the transition to `t`, or refuses it and leaves `t` as it was.
    pub fn apply(self, t: &mut TaskRecord) -> Result<(), TransitionError> {
        self.check(t)?;
        t.status = self.target();
        match self {
            Transition::Start {
                attempt,
                plugin,
                category,
                at,
            } => {
                t.attempts = attempt;
                t.started_at.get_or_insert(at);
                t.category = Some(category);
                t.plugin = Some(plugin);
                t.next_attempt_at = None;
            }
            Transition::Succeed { log, result, at } => {
                t.attempt_log.push(log);
                t.result = Some(result);
                t.error = None;
                finished(t, at);
            }
            Transition::Fail { log, failure, at } => {
                t.attempt_log.extend(log);
                t.error = Some(failure);
                finished(t, at);
            }
            Transition::Retry { log, failure, due } => {
                t.attempt_log.push(log);
                t.error = Some(failure);
                t.next_attempt_at = Some(due);
            }
            Transition::Defer { due } => t.next_attempt_at = Some(due),
            Transition::Requeue { mut log, failure } => {
                log.charged = false;
                t.attempt_log.push(log);
                t.attempts = t.attempts.saturating_sub(1);
                if let Some(f) = failure {
                    t.error = Some(f);
                }
            }
            Transition::Interrupted { log } => {
                t.attempt_log.push(log);
                t.parked_on = None;
            }
            Transition::Park { breaker } => t.parked_on = Some(breaker),
            Transition::Unpark { .. } => t.parked_on = None,
            Transition::Due => t.next_attempt_at = None,
            Transition::Cancel { at, message } => {
                t.error = Some(TaskFailure::new(FailureKind::Cancelled, message));
                finished(t, at);
            }
            Transition::Rerun => {
                if let Some(last) = t.attempt_log.last_mut() {
                    last.charged = false;
                }
                t.attempts = t.attempts.saturating_sub(1);
                t.finished_at = None;
                t.next_attempt_at = None;
            }
        }
        Ok(())
    }
}

fn finished(t: &mut TaskRecord, at: SystemTime) {
    t.finished_at = Some(at);
    t.next_attempt_at = None;
    t.parked_on = None;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Priority;

    fn task() -> TaskRecord {
        TaskRecord::new(
            "echo",
            serde_json::json!({}),
            Priority::Normal,
            SystemTime::UNIX_EPOCH,
        )
    }

    fn log(attempt: u32) -> AttemptRecord {
        AttemptRecord {
            attempt,
            plugin: plugin(),
            started_at: SystemTime::UNIX_EPOCH,
            duration_ms: 1,
            error: None,
            charged: true,
        }
    }

    fn plugin() -> AttemptPlugin {
        AttemptPlugin {
            name: "echo".into(),
            version: "1.0.0".into(),
        }
    }

    fn start(attempt: u32) -> Transition {
        Transition::Start {
            attempt,
            plugin: plugin(),
            category: "batch".into(),
            at: SystemTime::UNIX_EPOCH,
        }
    }

    fn failure(kind: FailureKind) -> TaskFailure {
        TaskFailure::new(kind, "boom")
    }

    #[test]
    fn a_task_runs_retries_and_succeeds() -> Result<(), TransitionError> {
        let mut t = task();
        start(1).apply(&mut t)?;
        assert_eq!((t.status, t.attempts), (TaskStatus::Running, 1));
        Transition::Retry {
            log: log(1),
            failure: failure(FailureKind::Retryable),
            due: SystemTime::UNIX_EPOCH,
        }
        .apply(&mut t)?;
        assert_eq!(t.status, TaskStatus::RetryWait);
        Transition::Due.apply(&mut t)?;
        start(2).apply(&mut t)?;
        Transition::Succeed {
            log: log(2),
            result: serde_json::json!(1),
            at: SystemTime::UNIX_EPOCH,
        }
        .apply(&mut t)?;
        assert_eq!(t.status, TaskStatus::Succeeded);
        assert_eq!((t.attempt_log.len(), t.error.is_none()), (2, true));
        Ok(())
    }

    #[test]
    fn a_stale_or_duplicate_outcome_is_refused_and_changes_nothing() -> Result<(), TransitionError>
    {
        let mut t = task();
        start(1).apply(&mut t)?;
        let done = |attempt| Transition::Succeed {
            log: log(attempt),
            result: serde_json::json!(attempt),
            at: SystemTime::UNIX_EPOCH,
        };
        assert_eq!(
            done(7).apply(&mut t),
            Err(TransitionError::Stale {
                attempt: 7,
                current: 1
            })
        );
        assert_eq!(t.status, TaskStatus::Running);
        done(1).apply(&mut t)?;
        let before = serde_json::to_string(&t).unwrap_or_default();
        assert!(matches!(
            done(1).apply(&mut t),
            Err(TransitionError::Illegal {
                from: "succeeded",
                ..
            })
        ));
        assert_eq!(serde_json::to_string(&t).unwrap_or_default(), before);
        // A start that skips an attempt number is refused too.
        let mut t = task();
        assert!(matches!(
            start(2).apply(&mut t),
            Err(TransitionError::Stale { .. })
        ));
        Ok(())
    }

    #[test]
    fn every_transition_outside_the_table_is_refused() {
        use TaskStatus::*;
        let all = || {
            vec![
                start(1),
                Transition::Succeed {
                    log: log(1),
                    result: serde_json::json!(1),
                    at: SystemTime::UNIX_EPOCH,
                },
                Transition::Fail {
                    log: Some(log(1)),
                    failure: failure(FailureKind::Fatal),
                    at: SystemTime::UNIX_EPOCH,
                },
                Transition::Fail {
                    log: None,
                    failure: failure(FailureKind::NoHandler),
                    at: SystemTime::UNIX_EPOCH,
                },
                Transition::Retry {
                    log: log(1),
                    failure: failure(FailureKind::Retryable),
                    due: SystemTime::UNIX_EPOCH,
                },
                Transition::Defer {
                    due: SystemTime::UNIX_EPOCH,
                },
                Transition::Requeue {
                    log: log(1),
                    failure: None,
                },
                Transition::Interrupted { log: log(1) },
                Transition::Park {
                    breaker: "b".into(),
                },
                Transition::Unpark { breaker: None },
                Transition::Due,
                Transition::Cancel {
                    at: SystemTime::UNIX_EPOCH,
                    message: "stop".into(),
                },
                Transition::Rerun,
            ]
        };
        // (status, parked) → the transitions allowed from there.
        let table: [(TaskStatus, bool, &[&str]); 7] = [
            (
                Queued,
                false,
                &["start", "fail", "defer", "park", "be cancelled"],
            ),
            (Queued, true, &["fail", "unpark", "be cancelled"]),
            (
                Running,
                false,
                &["succeed", "fail", "retry", "requeue", "be interrupted"],
            ),
            (
                RetryWait,
                false,
                &["fail", "become due", "be cancelled", "rerun"],
            ),
            (Succeeded, false, &[]),
            (Failed, false, &["rerun"]),
            (Cancelled, false, &[]),
        ];
        for (status, parked, allowed) in table {
            for tr in all() {
                let mut t = task();
                t.status = status;
                t.attempts = if status == Queued { 0 } else { 1 };
                t.parked_on = parked.then(|| "b".to_string());
                let name = tr.name();
                // The attempt-less failure is the only `fail` from queued.
                let expected = allowed.contains(&name)
                    && !(name == "fail"
                        && matches!(&tr, Transition::Fail { log: Some(_), .. })
                            != (status == Running));
                let before = serde_json::to_string(&t).unwrap_or_default();
                let outcome = tr.apply(&mut t);
                assert_eq!(
                    outcome.is_ok(),
                    expected,
                    "{name} from {status:?} (parked {parked}): {outcome:?}"
                );
                if outcome.is_err() {
                    assert_eq!(serde_json::to_string(&t).unwrap_or_default(), before);
                }
            }
        }
    }

    #[test]
    fn cancelling_and_cancelled_attempts_end_cancelled() -> Result<(), TransitionError> {
        let mut t = task();
        Transition::Cancel {
            at: SystemTime::UNIX_EPOCH,
            message: "stop".into(),
        }
        .apply(&mut t)?;
        assert_eq!(t.status, TaskStatus::Cancelled);
        let mut t = task();
        start(1).apply(&mut t)?;
        Transition::Fail {
            log: Some(log(1)),
            failure: failure(FailureKind::Cancelled),
            at: SystemTime::UNIX_EPOCH,
        }
        .apply(&mut t)?;
        assert_eq!(t.status, TaskStatus::Cancelled);
        Ok(())
    }
}
