//! Scheduling without wasmtime: a scripted [`AttemptRunner`] and a
//! [`ManualClock`]. Each test waits on the store's change stream for the
//! state it expects (never on a sleep), and moves time by hand.
//!
//! A scripted attempt does what its payload says:
//! `{"fail": KIND}` fails with that kind, `{"fail_until": N, "fail": KIND}`
//! only on attempts up to N, `{"trap_on": VERSION}` traps on that version,
//! `{"hold": true}` waits for [`Runner::open`] (or its cancel token);
//! anything else succeeds with `{"echo": payload, "version": ...}`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::retry::RetryPolicy;
use super::*;
use crate::breaker::{BreakerConfig, State as BreakerState};
use crate::capabilities::tasks::BoxFuture;
use crate::clock::ManualClock;
use crate::runtime::Attempt;
use crate::runtime::plugin::PluginLimits;
use crate::store::TaskChange;
use crate::task::{TaskFailure, TaskStatus};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use tokio::sync::{Semaphore, broadcast};

#[derive(Debug)]
struct Version {
    name: String,
    version: String,
    category: String,
    limits: PluginLimits,
    depends_on: Vec<String>,
}

impl Served for Version {
    fn name(&self) -> &str {
        &self.name
    }
    fn version(&self) -> &str {
        &self.version
    }
    fn category(&self) -> &str {
        &self.category
    }
    fn limits(&self) -> &PluginLimits {
        &self.limits
    }
    fn depends_on(&self) -> &[String] {
        &self.depends_on
    }
}

/// One attempt as the runner saw it.
#[derive(Debug, Clone)]
struct Ran {
    task: String,
    attempt: u32,
    version: String,
}

#[derive(Debug)]
struct Runner {
    kinds: Mutex<HashMap<String, Arc<Version>>>,
    /// The version each plugin had before its current one (for rollback).
    previous: Mutex<HashMap<String, Arc<Version>>>,
    probation: Mutex<HashSet<(String, String)>>,
    rolled_back: Mutex<HashSet<(String, String)>>,
    /// Permits for `hold` attempts.
    gate: Semaphore,
    /// Rollbacks wait here while `hold_rollbacks` is set.
    rollback_gate: Semaphore,
    hold_rollbacks: std::sync::atomic::AtomicBool,
    ran: Mutex<Vec<Ran>>,
}

fn limits() -> PluginLimits {
    PluginLimits {
        memory_bytes: 1 << 20,
        timeout: Duration::from_secs(30),
        fuel: None,
        max_children: 0,
        max_result_bytes: 1 << 20,
        max_payload_bytes: 1 << 20,
        max_concurrency: 0,
        max_depth: 0,
        max_descendants: 0,
        children_per_s: 0,
        vector_points: 0,
        vector_bytes: 0,
        max_parked: 10_000,
    }
}

impl Default for Runner {
    fn default() -> Self {
        Runner {
            kinds: Mutex::default(),
            previous: Mutex::default(),
            probation: Mutex::default(),
            rolled_back: Mutex::default(),
            gate: Semaphore::new(0),
            rollback_gate: Semaphore::new(0),
            hold_rollbacks: Default::default(),
            ran: Mutex::default(),
        }
    }
}

impl Runner {
    /// Serves `kind` with `name@version` in pool `category`; the version it
    /// replaces is kept for a rollback.
    fn serve(&self, kind: &str, name: &str, version: &str, category: &str) {
        let v = Arc::new(Version {
            name: name.into(),
            version: version.into(),
            category: category.into(),
            limits: limits(),
            depends_on: Vec::new(),
        });
        if let Some(old) = lock(&self.kinds).insert(kind.into(), v) {
            lock(&self.previous).insert(name.into(), old);
        }
    }

    fn unserve(&self, kind: &str) {
        lock(&self.kinds).remove(kind);
    }

    /// Lets `n` held attempts go on.
    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    fn ran(&self) -> Vec<Ran> {
        lock(&self.ran).clone()
    }
}

impl AttemptRunner for Runner {
    type Version = Version;

    fn resolve(&self, kind: &str) -> Option<Arc<Version>> {
        lock(&self.kinds).get(kind).cloned()
    }

    fn run<'a>(
        &'a self,
        version: &'a Arc<Version>,
        attempt: Attempt,
    ) -> BoxFuture<'a, Result<Value, TaskFailure>> {
        Box::pin(async move {
            lock(&self.ran).push(Ran {
                task: attempt.task_id.clone(),
                attempt: attempt.attempt,
                version: version.version.clone(),
            });
            let payload: Value = serde_json::from_str(&attempt.payload).unwrap_or_default();
            if payload["hold"] == true {
                tokio::select! {
                    permit = self.gate.acquire() => permit.map(|p| p.forget()).unwrap_or(()),
                    () = attempt.cancel.cancelled() => {
                        return Err(TaskFailure::new(FailureKind::Cancelled, "cancelled"));
                    }
                }
            }
            if payload["panic"] == true {
                panic!("scripted host bug");
            }
            if payload["trap_on"] == version.version.as_str() {
                return Err(TaskFailure::new(FailureKind::Trap, "scripted trap"));
            }
            let until = payload["fail_until"].as_u64().unwrap_or(u64::MAX);
            if let Some(kind) = payload.get("fail")
                && u64::from(attempt.attempt) <= until
            {
                let kind: FailureKind = serde_json::from_value(kind.clone()).unwrap();
                return Err(TaskFailure::new(kind, "scripted failure"));
            }
            Ok(json!({ "echo": payload, "version": version.version }))
        })
    }

    fn kinds(&self) -> Vec<String> {
        lock(&self.kinds).keys().cloned().collect()
    }

    fn plugins_in_pool(&self, category: &str) -> usize {
        let kinds = lock(&self.kinds);
        let names: HashSet<&str> = kinds
            .values()
            .filter(|v| v.category == category)
            .map(|v| v.name.as_str())
            .collect();
        names.len()
    }

    fn loaded(&self) -> usize {
        lock(&self.kinds).len()
    }

    fn is_on_probation(&self, name: &str, version: &str) -> bool {
        lock(&self.probation).contains(&(name.into(), version.into()))
    }

    fn is_rolled_back(&self, name: &str, version: &str) -> bool {
        lock(&self.rolled_back).contains(&(name.into(), version.into()))
    }

    fn roll_back<'a>(&'a self, name: &'a str, version: &'a str) -> BoxFuture<'a, Option<String>> {
        Box::pin(async move {
            if self
                .hold_rollbacks
                .load(std::sync::atomic::Ordering::SeqCst)
            {
                self.rollback_gate.acquire().await.ok()?.forget();
            }
            let key = (name.to_string(), version.to_string());
            if !lock(&self.probation).remove(&key) {
                return None;
            }
            let good = lock(&self.previous).remove(name)?;
            let mut kinds = lock(&self.kinds);
            for v in kinds.values_mut() {
                if v.name == name && v.version == version {
                    *v = good.clone();
                }
            }
            lock(&self.rolled_back).insert(key);
            Some(good.version.clone())
        })
    }
}

struct Harness {
    scheduler: Scheduler<Runner>,
    runner: Arc<Runner>,
    clock: ManualClock,
    changes: broadcast::Receiver<TaskChange>,
}

/// Opens after 2 consecutive failures, for 30 s, one trial.
fn quick_breaker() -> BreakerConfig {
    BreakerConfig {
        failures: 2,
        open_s: 30,
        half_open_trials: 1,
        hosts: Vec::new(),
        capabilities: Vec::new(),
    }
}

fn harness(pools: &[(&str, usize)]) -> Harness {
    let clock = ManualClock::new();
    let shared: Arc<dyn Clock> = Arc::new(clock.clone());
    let store = Store::memory();
    let changes = store.subscribe();
    let runner = Arc::new(Runner::default());
    let breakers = Arc::new(BreakerSet::new(
        &BTreeMap::new(),
        quick_breaker(),
        shared.clone(),
    ));
    let config = SchedulerConfig {
        pools: pools.iter().map(|(p, n)| (p.to_string(), *n)).collect(),
        default_timeout_s: 30,
        retry: RetryPolicy {
            max_retries: 3,
            base_s: 1.0,
            cap_s: 60.0,
            jitter_s: 0.0,
        },
        rollback: true,
    };
    let scheduler = Scheduler::start(
        store,
        runner.clone(),
        breakers,
        Arc::default(),
        shared,
        config,
    );
    Harness {
        scheduler,
        runner,
        clock,
        changes,
    }
}

impl Harness {
    async fn submit(&self, kind: &str, payload: Value, priority: Priority) -> Uuid {
        self.scheduler
            .submit(NewTask::new(kind, payload, priority))
            .await
            .expect("submitted")
            .task
            .task_id
    }

    /// Waits for the task to reach `status`, woken by the store's changes.
    async fn until(&mut self, id: Uuid, status: TaskStatus) -> TaskRecord {
        self.until_that(id, &format!("{status:?}"), |t| t.status == status)
            .await
    }

    /// Waits for the task to be parked on a breaker.
    async fn until_parked(&mut self, id: Uuid) -> TaskRecord {
        self.until_that(id, "parked", |t| t.parked_on.is_some())
            .await
    }

    /// Waits until `done` holds for the task, woken by the store's changes.
    /// The outer timeout only turns a hang into a failure.
    async fn until_that(
        &mut self,
        id: Uuid,
        what: &str,
        done: impl Fn(&TaskRecord) -> bool,
    ) -> TaskRecord {
        let wait = async {
            loop {
                let task = self.scheduler.get(id).await.expect("task exists");
                if done(&task) {
                    return task;
                }
                match self.changes.recv().await {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => panic!("store closed"),
                }
            }
        };
        match tokio::time::timeout(Duration::from_secs(20), wait).await {
            Ok(task) => task,
            Err(_) => {
                let now = self.scheduler.get(id).await.map(|t| t.status);
                panic!("task never reached {what}; it is {now:?}")
            }
        }
    }

    /// Opens the plugin breaker of the version serving `kind` (which must
    /// be `version`) with two traps.
    async fn open_breaker(&mut self, kind: &str, version: &str) {
        for _ in 0..2 {
            let id = self
                .submit(kind, json!({ "trap_on": version }), Priority::Normal)
                .await;
            self.until(id, TaskStatus::Failed).await;
        }
    }

    /// Serves `echo` and keeps the one worker busy with a held attempt.
    async fn busy_worker(&mut self) -> Uuid {
        self.runner.serve("echo", "echo", "1.0.0", "batch");
        let blocker = self
            .submit("echo", json!({"hold": true}), Priority::Normal)
            .await;
        self.until(blocker, TaskStatus::Running).await;
        blocker
    }

    fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }
}

#[tokio::test]
async fn a_one_worker_pool_runs_the_most_urgent_waiting_task_first() {
    let mut h = harness(&[("batch", 1)]);
    let blocker = h.busy_worker().await;
    let bulk = h.submit("echo", json!({"n": 1}), Priority::Bulk).await;
    let normal = h.submit("echo", json!({"n": 2}), Priority::Normal).await;
    let critical = h.submit("echo", json!({"n": 3}), Priority::Critical).await;
    h.runner.open(1);
    h.until(bulk, TaskStatus::Succeeded).await;
    let order: Vec<String> = h.runner.ran().into_iter().map(|r| r.task).collect();
    let ids: Vec<String> = [blocker, critical, normal, bulk]
        .iter()
        .map(Uuid::to_string)
        .collect();
    assert_eq!(order, ids);
}

#[tokio::test]
async fn a_transient_failure_runs_again_only_when_its_backoff_is_over() {
    let mut h = harness(&[("batch", 1)]);
    h.runner.serve("echo", "echo", "1.0.0", "batch");
    let id = h
        .submit(
            "echo",
            json!({"fail": "retryable", "fail_until": 1}),
            Priority::Normal,
        )
        .await;
    let waiting = h.until(id, TaskStatus::RetryWait).await;
    let due = waiting.next_attempt_at.expect("a due time");
    let delay = due.duration_since(h.clock.wall()).unwrap();
    assert_eq!(delay, Duration::from_secs(2), "base 1 s · 2^1, no jitter");
    h.advance(Duration::from_millis(1_999));
    // A task still waiting after its timer had every chance to run early.
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    assert_eq!(h.runner.ran().len(), 1, "not before its due time");
    h.advance(Duration::from_millis(1));
    let done = h.until(id, TaskStatus::Succeeded).await;
    assert_eq!(done.attempts, 2);
    let attempts: Vec<u32> = h.runner.ran().iter().map(|r| r.attempt).collect();
    assert_eq!(attempts, [1, 2]);
    assert!(done.attempt_log[0].error.is_some());
}

#[tokio::test]
async fn what_the_plugin_did_opens_its_breaker_and_the_next_task_waits_uncharged() {
    let mut h = harness(&[("batch", 1)]);
    h.runner.serve("echo", "echo", "1.0.0", "batch");
    h.open_breaker("echo", "1.0.0").await;
    let breaker = h.scheduler.breakers().plugin("echo", "1.0.0");
    assert_eq!(breaker.state(), BreakerState::Open);
    let next = h.submit("echo", json!({"n": 1}), Priority::Normal).await;
    let parked = h.until_parked(next).await;
    assert_eq!(parked.attempts, 0, "parking is not an attempt");
    assert_eq!(h.scheduler.parked_of("echo"), 1);
    h.advance(Duration::from_secs(30));
    let done = h.until(next, TaskStatus::Succeeded).await;
    assert_eq!(done.attempts, 1);
    assert_eq!(breaker.state(), BreakerState::Closed, "the trial closed it");
    assert_eq!(h.scheduler.parked_of("echo"), 0);
}

#[tokio::test]
async fn a_destinations_failures_and_bad_input_leave_the_plugin_breaker_closed() {
    let mut h = harness(&[("batch", 1)]);
    h.runner.serve("scrape", "scrape", "1.0.0", "batch");
    for kind in ["retryable", "fatal", "retryable", "fatal"] {
        let id = h
            .submit("scrape", json!({"fail": kind}), Priority::Normal)
            .await;
        if kind == "retryable" {
            h.until(id, TaskStatus::RetryWait).await;
            h.scheduler.cancel(id).await.unwrap();
        } else {
            h.until(id, TaskStatus::Failed).await;
        }
    }
    let breaker = h.scheduler.breakers().plugin("scrape", "1.0.0");
    assert_eq!(breaker.state(), BreakerState::Closed);
    let ok = h.submit("scrape", json!({}), Priority::Normal).await;
    h.until(ok, TaskStatus::Succeeded).await;
}

#[tokio::test]
async fn a_version_on_probation_is_rolled_back_and_its_failures_run_again_uncharged() {
    let mut h = harness(&[("batch", 1)]);
    h.runner.serve("echo", "echo", "1.0.0", "batch");
    h.runner.serve("echo", "echo", "2.0.0", "batch");
    lock(&h.runner.probation).insert(("echo".into(), "2.0.0".into()));
    let mut failed = Vec::new();
    for _ in 0..2 {
        let id = h
            .submit("echo", json!({"trap_on": "2.0.0"}), Priority::Normal)
            .await;
        failed.push(id);
    }
    for id in failed {
        let done = h.until(id, TaskStatus::Succeeded).await;
        assert_eq!(done.result.as_ref().unwrap()["version"], "1.0.0");
        let charged: Vec<bool> = done.attempt_log.iter().map(|a| a.charged).collect();
        assert_eq!(charged, [false, true], "the attempt on 2.0.0 is given back");
    }
    assert!(h.runner.is_rolled_back("echo", "2.0.0"));
    let on_restored = h
        .runner
        .ran()
        .iter()
        .filter(|r| r.version == "1.0.0")
        .count();
    assert_eq!(on_restored, 2);
}

#[tokio::test]
async fn a_rollback_that_waits_holds_back_no_other_breaker() {
    let mut h = harness(&[("batch", 2)]);
    h.runner.serve("a", "a", "1.0.0", "batch");
    h.runner.serve("a", "a", "2.0.0", "batch");
    h.runner.serve("b", "b", "1.0.0", "batch");
    lock(&h.runner.probation).insert(("a".into(), "2.0.0".into()));
    h.runner
        .hold_rollbacks
        .store(true, std::sync::atomic::Ordering::SeqCst);
    // b's breaker opens and a task parks on it.
    h.open_breaker("b", "1.0.0").await;
    let parked = h.submit("b", json!({"n": 1}), Priority::Normal).await;
    h.until_parked(parked).await;
    // a's breaker opens on probation: its rollback starts and waits.
    h.open_breaker("a", "2.0.0").await;
    assert_eq!(
        h.scheduler.breakers().plugin("a", "2.0.0").state(),
        BreakerState::Open
    );
    // b half-opens meanwhile: its parked task is released and runs.
    h.advance(Duration::from_secs(30));
    h.until(parked, TaskStatus::Succeeded).await;
    h.runner.rollback_gate.add_permits(1);
}

#[tokio::test]
async fn cancel_stops_the_running_attempt() {
    let mut h = harness(&[("batch", 1)]);
    let id = h.busy_worker().await;
    h.scheduler.cancel(id).await.unwrap();
    let task = h.until(id, TaskStatus::Cancelled).await;
    assert_eq!(task.attempts, 1);
    assert!(matches!(
        h.scheduler.cancel(id).await,
        Err(CancelError::Finished { .. })
    ));
}

#[tokio::test]
async fn an_attempt_stopped_for_a_lease_that_looked_lost_runs_again_rather_than_ending() {
    let mut h = harness(&[("batch", 1)]);
    let id = h.busy_worker().await;
    // The renewal did not keep the lease, but the attempt was still this
    // daemon's (a stale renewal): the task is not cancelled, it runs again.
    h.scheduler
        .on_remote(crate::store::RemoteEvent::LeaseLost(id));
    let mut task = h.scheduler.get(id).await.unwrap();
    for _ in 0..500 {
        if !task.attempt_log.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        task = h.scheduler.get(id).await.unwrap();
    }
    assert_ne!(task.status, TaskStatus::Cancelled, "{task:?}");
    let first = task.attempt_log.first().cloned();
    assert_eq!(
        first.and_then(|a| a.error).map(|e| e.kind),
        Some(FailureKind::Interrupted),
        "{task:?}"
    );
    assert!(!task.attempt_log[0].charged, "uncharged");
}

#[tokio::test]
async fn a_plugin_at_its_share_of_a_pool_leaves_the_rest_to_the_others() {
    let mut h = harness(&[("batch", 2)]);
    h.runner.serve("hog", "hog", "1.0.0", "batch");
    h.runner.serve("echo", "echo", "1.0.0", "batch");
    let first = h
        .submit("hog", json!({"hold": true}), Priority::Normal)
        .await;
    let second = h
        .submit("hog", json!({"hold": true}), Priority::Normal)
        .await;
    h.until(first, TaskStatus::Running).await;
    let other = h.submit("echo", json!({}), Priority::Normal).await;
    h.until(other, TaskStatus::Succeeded).await;
    assert_eq!(
        h.scheduler.get(second).await.unwrap().status,
        TaskStatus::Queued,
        "held back: two plugins share two workers"
    );
    assert_eq!(h.scheduler.plugin_load().get("hog"), Some(&(1, 1)));
    h.runner.open(2);
    h.until(second, TaskStatus::Succeeded).await;
}

#[tokio::test]
async fn shutdown_puts_an_interrupted_attempt_back_in_the_queue_uncharged() {
    let mut h = harness(&[("batch", 1)]);
    let id = h.busy_worker().await;
    h.scheduler.shutdown(Duration::ZERO).await;
    let task = h.until(id, TaskStatus::Queued).await;
    assert_eq!(task.attempt_log.len(), 1);
    assert!(!task.attempt_log[0].charged);
    assert!(matches!(
        h.scheduler
            .submit(NewTask::new("echo", json!({}), Priority::Normal))
            .await,
        Err(SubmitError::ShuttingDown)
    ));
}

#[tokio::test]
async fn a_kind_that_lost_its_plugin_runs_on_the_one_that_comes_back() {
    let mut h = harness(&[("batch", 1)]);
    h.busy_worker().await;
    let waiting = h.submit("echo", json!({"n": 1}), Priority::Normal).await;
    h.runner.unserve("echo");
    h.runner.open(1);
    let deferred = h.until(waiting, TaskStatus::RetryWait).await;
    assert_eq!(
        deferred.attempts, 0,
        "waiting for a handler is not an attempt"
    );
    h.runner.serve("echo", "echo", "1.1.0", "batch");
    h.advance(Duration::from_secs(5));
    let done = h.until(waiting, TaskStatus::Succeeded).await;
    assert_eq!(done.result.unwrap()["version"], "1.1.0");
}

#[tokio::test]
async fn a_kind_that_lost_its_plugin_fails_when_its_timeout_has_passed() {
    let mut h = harness(&[("batch", 1)]);
    h.busy_worker().await;
    let lost = h.submit("echo", json!({"n": 1}), Priority::Normal).await;
    h.runner.unserve("echo");
    h.runner.open(1);
    // It looks again every 5 s, up to the 30 s timeout since it was created.
    for _ in 0..6 {
        h.until(lost, TaskStatus::RetryWait).await;
        h.advance(Duration::from_secs(5));
    }
    let failed = h.until(lost, TaskStatus::Failed).await;
    assert_eq!(failed.error.unwrap().kind, FailureKind::NoHandler);
    assert_eq!(failed.attempts, 0);
}

#[tokio::test]
async fn a_panic_in_the_host_fails_its_task_and_keeps_the_worker() {
    let mut h = harness(&[("batch", 1)]);
    h.runner.serve("echo", "echo", "1.0.0", "batch");
    let id = h
        .submit("echo", json!({"panic": true}), Priority::Normal)
        .await;
    let failed = h.until(id, TaskStatus::Failed).await;
    let error = failed.error.unwrap();
    assert_eq!(error.kind, FailureKind::Fatal);
    assert!(
        error.message.contains("scripted host bug"),
        "{}",
        error.message
    );
    assert_eq!(failed.attempt_log.len(), 1);
    // The pool's one worker survived it.
    let next = h.submit("echo", json!({}), Priority::Normal).await;
    h.until(next, TaskStatus::Succeeded).await;
    assert_eq!(
        h.scheduler.plugin_load().get("echo"),
        None,
        "its slot was given back"
    );
}

#[tokio::test]
async fn a_trial_that_panics_gives_its_slot_back() {
    let mut h = harness(&[("batch", 1)]);
    h.runner.serve("echo", "echo", "1.0.0", "batch");
    h.open_breaker("echo", "1.0.0").await;
    let panics = h
        .submit("echo", json!({"panic": true}), Priority::Normal)
        .await;
    h.until_parked(panics).await;
    let next = h.submit("echo", json!({"n": 1}), Priority::Normal).await;
    h.until_parked(next).await;
    // Half-open: one trial, the oldest parked task, which panics.
    h.advance(Duration::from_secs(30));
    h.until(panics, TaskStatus::Failed).await;
    // Its slot came back: the next parked task is the next trial.
    let done = h.until(next, TaskStatus::Succeeded).await;
    assert_eq!(done.attempts, 1);
    assert_eq!(
        h.scheduler.breakers().plugin("echo", "1.0.0").state(),
        BreakerState::Closed
    );
}
