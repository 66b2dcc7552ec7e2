//! When a failed attempt is tried again.
//!
//! Transient failures — `retryable` (the plugin says so) and `timeout` (a
//! slow dependency) — are retried while attempts remain (`1 + max_retries`).
//! Everything else is deterministic and is not: `fatal`, `trap`,
//! `out_of_memory` and `fuel` would fail the same way again.
//!
//! The delay after attempt *n* fails is `min(cap, base · 2^n)` plus a jitter
//! in `[0, jitter)` derived from the task id and attempt: different tasks
//! spread out, the same task is reproducible, and no random source needs
//! injecting.

use crate::task::FailureKind;
use serde::{Deserialize, Serialize};
use std::hash::{Hash, Hasher};
use std::time::Duration;
use uuid::Uuid;

/// Backoff settings (`[retry]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Retries after the first attempt, unless a task asks otherwise.
    pub max_retries: u32,
    /// Seconds: the delay after attempt n fails is base · 2^n (2 s, 4 s, 8 s, ...).
    pub base_s: f64,
    /// Longest delay, seconds.
    pub cap_s: f64,
    /// Up to this many seconds are added to spread retries out.
    pub jitter_s: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_retries: 3,
            base_s: 1.0,
            cap_s: 300.0,
            jitter_s: 1.0,
        }
    }
}

/// Whether a failure of this kind is worth another attempt.
pub fn is_transient(kind: FailureKind) -> bool {
    matches!(kind, FailureKind::Retryable | FailureKind::Timeout)
}

impl RetryPolicy {
    /// The wait before the attempt after `failed_attempt` (1-based).
    pub fn delay(&self, task_id: Uuid, failed_attempt: u32) -> Duration {
        let exponent = failed_attempt.min(30) as i32;
        let backoff = (self.base_s * 2f64.powi(exponent)).min(self.cap_s).max(0.0);
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (task_id, failed_attempt).hash(&mut hasher);
        let unit = (hasher.finish() % 1_000_000) as f64 / 1_000_000.0;
        Duration::from_secs_f64(backoff + unit * self.jitter_s.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_two_seconds_and_stop_at_the_cap() {
        let policy = RetryPolicy {
            jitter_s: 0.0,
            cap_s: 10.0,
            ..RetryPolicy::default()
        };
        let id = Uuid::now_v7();
        let delays: Vec<f64> = (1..=5).map(|n| policy.delay(id, n).as_secs_f64()).collect();
        assert_eq!(delays, [2.0, 4.0, 8.0, 10.0, 10.0]);
    }

    #[test]
    fn jitter_is_bounded_and_reproducible() {
        let policy = RetryPolicy::default();
        let id = Uuid::now_v7();
        let d = policy.delay(id, 1);
        assert_eq!(d, policy.delay(id, 1));
        assert!(
            d >= Duration::from_secs(2) && d < Duration::from_secs(3),
            "{d:?}"
        );
    }

    #[test]
    fn only_transient_failures_are_retried() {
        assert!(is_transient(FailureKind::Retryable));
        assert!(is_transient(FailureKind::Timeout));
        for kind in [
            FailureKind::Fatal,
            FailureKind::Trap,
            FailureKind::OutOfMemory,
            FailureKind::Fuel,
        ] {
            assert!(!is_transient(kind));
        }
    }
}
