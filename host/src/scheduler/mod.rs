//! Decides what runs when: per-category pools, five priorities, retries,
//! timeouts, cancellation and breaker-aware parking.
//!
//! [`Scheduler::submit`] records a task in the [`Store`] and queues it in the
//! [`CategoryPool`] of the plugin that handles its kind. Each pool's workers
//! take jobs from its [`queue::PriorityQueue`] and run one attempt each
//! ([`Scheduler::run_job`]):
//!
//! 1. resolve the plugin version serving the kind *now* (a hot swap since
//!    submission is picked up; a running attempt keeps its version);
//! 2. ask the breakers the version depends on (its own automatic breaker
//!    and the named ones its grants bind it to); if one is open the task is
//!    *parked* on it, uncharged, and released when it half-opens;
//! 3. run the attempt in the sandbox with the task's timeout and a cancel
//!    token (`DELETE /api/v1/tasks/{id}` fires it);
//! 4. record the attempt, feed the plugin's breaker, and either finish the
//!    task or, for a transient failure with attempts left, put it in
//!    `retry_wait` until its backoff timer fires ([`retry`]).
//!
//! Background tasks: the pools' workers, the retry timer, and the breaker
//! listener (parking, waking, rollback). Time comes from the injected
//! [`Clock`].

mod children;
pub mod maintenance;
pub mod parking;
pub mod pool;
pub mod queue;
pub mod retry;
pub mod tenancy;

use crate::breaker::{Admission, Breaker, BreakerSet, State as BreakerState};
use crate::clock::Clock;
use crate::metrics::{Metrics, PoolGauges};
use crate::runtime::Attempt;
use crate::runtime::plugin::PluginVersion;
use crate::runtime::registry::Registry;
use crate::runtime::sandbox::CancelToken;
use crate::store::{
    AttemptPlugin, AttemptRecord, Inserted, Store, TaskFilter, TaskRecord, Transition,
    TransitionError,
};
use crate::task::{FailureKind, Priority, TaskFailure, TaskStatus};
use pool::CategoryPool;
use queue::Job;
use retry::RetryPolicy;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, broadcast, watch};
use uuid::Uuid;

/// A task as a client submits it.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub kind: String,
    pub payload: serde_json::Value,
    pub priority: Priority,
    pub timeout_s: Option<u64>,
    pub max_retries: Option<u32>,
    pub idempotency_key: Option<String>,
    /// The task that submitted this one (child tasks).
    pub parent_id: Option<Uuid>,
}

/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 100;

/// Why a submission was refused. Each is the caller's to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("no loaded plugin handles kind `{kind}`; loaded kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("timeout_s must be between 1 and {max} (the plugin's ceiling)")]
    Timeout { max: u64 },
    #[error("max_retries must be at most {MAX_RETRIES}")]
    Retries,
    /// The plugin has `[limits] max_parked` tasks parked on an open
    /// breaker: new ones would only pile up behind it.
    #[error(
        "plugin `{plugin}` already has {parked} tasks waiting on the open circuit breaker `{breaker}` \
         ([limits] max_parked); try again in {retry_after_s} s"
    )]
    Backlog {
        plugin: String,
        breaker: String,
        parked: usize,
        retry_after_s: u64,
    },
    /// The payload nests deeper than [`crate::task::MAX_JSON_DEPTH`].
    #[error("{0}")]
    Payload(String),
    #[error("the daemon is shutting down and accepts no new tasks")]
    ShuttingDown,
    /// The task store cannot take the task (disk full, read-only, ...).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Why a cancel was refused.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CancelError {
    #[error("no task with id {0}")]
    NotFound(Uuid),
    #[error("task {id} already finished ({status})")]
    Finished { id: Uuid, status: &'static str },
}

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    /// False when an idempotency key matched an existing task.
    pub created: bool,
}

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// category -> workers
    pub pools: BTreeMap<String, usize>,
    /// Applied when a submission names no `timeout_s`.
    pub default_timeout_s: u64,
    pub retry: RetryPolicy,
    /// Roll a freshly swapped version back when its breaker opens on probation.
    pub rollback: bool,
}

/// Cheap to clone; all clones drive the same pools.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    breakers: Arc<BreakerSet>,
    metrics: Arc<Metrics>,
    pools: BTreeMap<String, Arc<CategoryPool>>,
    config: SchedulerConfig,
    /// Cancel tokens of running attempts.
    running: Mutex<HashMap<Uuid, CancelToken>>,
    /// Clients waiting for a task to finish.
    waiters: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Retry timers: due time, task, pool.
    timers: Mutex<BinaryHeap<Reverse<(Instant, Uuid, String)>>>,
    timers_changed: Notify,
    /// Running attempts and held jobs per plugin (concurrency in a pool).
    plugin_slots: Arc<tenancy::PluginSlots>,
    /// Tasks parked on open breakers.
    parked: parking::Parking,
    /// Turns true when the daemon stops taking work.
    stop: watch::Sender<bool>,
    /// Set while shutting down: an interrupted attempt is re-queued, not cancelled.
    draining: std::sync::atomic::AtomicBool,
}

impl Scheduler {
    /// Builds the pools and starts their workers, the retry timer and the
    /// breaker listener. Must be called inside a tokio runtime.
    pub fn start(
        store: Store,
        registry: Arc<Registry>,
        breakers: Arc<BreakerSet>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
    ) -> Scheduler {
        let pools = config
            .pools
            .iter()
            .map(|(name, size)| (name.clone(), Arc::new(CategoryPool::new(name, *size))))
            .collect();
        let transitions = breakers.transitions();
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                store,
                registry,
                clock,
                breakers,
                metrics,
                pools,
                config,
                running: Mutex::default(),
                waiters: Mutex::default(),
                timers: Mutex::default(),
                timers_changed: Notify::new(),
                parked: parking::Parking::default(),
                plugin_slots: Arc::default(),
                stop: watch::channel(false).0,
                draining: std::sync::atomic::AtomicBool::new(false),
            }),
        };
        for pool in scheduler.inner.pools.values() {
            for worker in 0..pool.size {
                let (s, p) = (scheduler.clone(), pool.clone());
                tokio::spawn(async move { s.worker_loop(p, worker).await });
            }
        }
        let s = scheduler.clone();
        tokio::spawn(async move { s.timer_loop().await });
        let s = scheduler.clone();
        tokio::spawn(async move { s.breaker_loop(transitions).await });
        scheduler
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Tasks of `plugin` parked on open breakers now.
    pub fn parked_of(&self, plugin: &str) -> usize {
        self.inner.parked.of_plugin(plugin)
    }

    /// Parked tasks per breaker.
    pub fn parked_by_breaker(&self) -> HashMap<String, usize> {
        self.inner.parked.by_breaker()
    }

    /// Attempts running and jobs held back per plugin (file stem).
    pub fn plugin_load(&self) -> std::collections::HashMap<String, (usize, usize)> {
        self.inner.plugin_slots.load()
    }

    pub fn breakers(&self) -> &Arc<BreakerSet> {
        &self.inner.breakers
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<CategoryPool>> {
        self.inner.pools.values()
    }

    /// Records the task and queues it. An idempotency key that was seen
    /// before returns the existing task instead.
    pub async fn submit(&self, new: NewTask) -> Result<Submitted, SubmitError> {
        let inner = &self.inner;
        if *inner.stop.borrow() {
            return Err(SubmitError::ShuttingDown);
        }
        crate::task::check_json_depth(&new.payload, "the payload").map_err(SubmitError::Payload)?;
        let plugin = inner
            .registry
            .resolve(&new.kind)
            .ok_or_else(|| SubmitError::UnknownKind {
                kind: new.kind.clone(),
                known: self.known_kinds(),
            })?;
        let parked = inner.parked.of_plugin(&plugin.info.name);
        if parked >= plugin.limits.max_parked as usize {
            let breakers = inner.parked.breakers_of(&plugin.info.name);
            let soonest = breakers
                .iter()
                .filter_map(|b| inner.breakers.find(b))
                .filter_map(|b| b.half_open_at())
                .min();
            return Err(SubmitError::Backlog {
                plugin: plugin.info.name.clone(),
                breaker: breakers.first().cloned().unwrap_or_default(),
                parked,
                retry_after_s: soonest
                    .map_or(1, |at| {
                        at.saturating_duration_since(inner.clock.now()).as_secs()
                    })
                    .max(1),
            });
        }
        // The plugin's manifest sets the ceiling; a task may ask for less.
        let ceiling = plugin.limits.timeout.as_secs();
        let timeout_s = new.timeout_s.unwrap_or(inner.config.default_timeout_s);
        if timeout_s == 0 {
            return Err(SubmitError::Timeout { max: ceiling });
        }
        let max_retries = new.max_retries.unwrap_or(inner.config.retry.max_retries);
        if max_retries > MAX_RETRIES {
            return Err(SubmitError::Retries);
        }
        let category = plugin.info.category.clone();
        let parent = new.parent_id.and_then(|id| inner.store.get(id));
        let record = TaskRecord {
            category: Some(category.clone()),
            max_retries,
            timeout_s: timeout_s.min(ceiling),
            idempotency_key: new.idempotency_key,
            parent_id: new.parent_id,
            root_id: parent.as_ref().map(|p| p.root_id.unwrap_or(p.task_id)),
            depth: parent.as_ref().map_or(0, |p| p.depth + 1),
            ..TaskRecord::new(&new.kind, new.payload, new.priority, inner.clock.wall())
        };
        match inner.store.insert(record).await? {
            Inserted::Existing(task) => Ok(Submitted {
                task,
                created: false,
            }),
            Inserted::New(task) => {
                inner.metrics.submitted(&category);
                self.enqueue(task.task_id, task.priority, &category);
                Ok(Submitted {
                    task,
                    created: true,
                })
            }
        }
    }

    /// Whether a plugin handles `kind` now (what `submit` checks first).
    pub fn check_kind(&self, kind: &str) -> Result<(), SubmitError> {
        match self.inner.registry.resolve(kind) {
            Some(_) => Ok(()),
            None => Err(SubmitError::UnknownKind {
                kind: kind.to_string(),
                known: self.known_kinds(),
            }),
        }
    }

    fn known_kinds(&self) -> String {
        let mut kinds: Vec<String> = self
            .inner
            .registry
            .statuses()
            .into_iter()
            .flat_map(|p| p.kinds)
            .collect();
        kinds.sort();
        if kinds.is_empty() {
            "none (drop a plugin into the plugins directory)".to_string()
        } else {
            kinds.join(", ")
        }
    }

    fn enqueue(&self, task_id: Uuid, priority: Priority, category: &str) {
        let job = Job {
            task_id,
            priority,
            enqueued: self.inner.clock.now(),
        };
        match self.inner.pools.get(category) {
            Some(pool) => pool.push(job),
            None => {
                // The registry refuses plugins of unknown categories, so this
                // is a task whose plugin changed category to one that went away.
                let failure = TaskFailure::new(
                    FailureKind::NoHandler,
                    format!("no worker pool `{category}` is configured"),
                );
                self.finish(task_id, Err(failure), None);
            }
        }
    }

    pub fn get(&self, id: Uuid) -> Option<TaskRecord> {
        self.inner.store.get(id)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
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

    pub fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        self.inner.store.list(filter)
    }

    /// Cancels a queued, parked, waiting or running task. A running attempt
    /// is interrupted at the next epoch tick; the task then ends `cancelled`.
    pub fn cancel(&self, id: Uuid) -> Result<(), CancelError> {
        let inner = &self.inner;
        let now = inner.clock.wall();
        let cancel = Transition::Cancel {
            at: now,
            message: "cancelled before it ran again".into(),
        };
        let (cancelled_now, running) = match inner.store.transition(id, cancel) {
            Ok(_) => (true, false),
            Err(TransitionError::NotFound(_)) => return Err(CancelError::NotFound(id)),
            Err(TransitionError::Illegal {
                from: "running", ..
            }) => (false, true),
            Err(_) => (false, false),
        };
        let task = inner.store.get(id).ok_or(CancelError::NotFound(id))?;
        if running {
            if let Some(token) = inner.running.lock().ok().and_then(|r| r.get(&id).cloned()) {
                token.cancel();
            }
            return Ok(());
        }
        if !cancelled_now {
            return Err(CancelError::Finished {
                id,
                status: task.status.as_str(),
            });
        }
        // Queue entries, timers and parking spots of a cancelled task are
        // skipped when they come up; the queue entry is removed right away
        // so it stops counting as queued.
        if let Some(pool) = task.category.as_deref().and_then(|c| inner.pools.get(c)) {
            pool.remove(id);
            inner
                .metrics
                .ended_unrun(&pool.name, FailureKind::Cancelled);
        }
        self.wake_waiters(id);
        Ok(())
    }

    /// Waits up to `timeout` for the task to finish; returns it as it is then.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Option<TaskRecord> {
        let notify = self
            .inner
            .waiters
            .lock()
            .ok()?
            .entry(id)
            .or_default()
            .clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let task = self.get(id)?;
        if task.status.is_finished() {
            return Some(task);
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.get(id)
    }

    fn wake_waiters(&self, id: Uuid) {
        let waiting = self
            .inner
            .waiters
            .lock()
            .ok()
            .and_then(|mut w| w.remove(&id));
        if let Some(notify) = waiting {
            notify.notify_waiters();
        }
    }

    /// Stops taking work, lets running attempts finish for up to `grace`,
    /// then interrupts the rest. Interrupted tasks go back to `queued` (their
    /// attempt uncharged) so a durable store can run them after a restart.
    pub async fn shutdown(&self, grace: Duration) {
        let inner = &self.inner;
        inner.stop.send_replace(true);
        let deadline = Instant::now() + grace;
        while self.running_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = self.running_count();
        if left > 0 {
            tracing::warn!(
                running = left,
                "grace period over: interrupting running attempts"
            );
            inner
                .draining
                .store(true, std::sync::atomic::Ordering::SeqCst);
            let tokens: Vec<CancelToken> = inner
                .running
                .lock()
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default();
            for token in tokens {
                token.cancel();
            }
            while self.running_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn running_count(&self) -> usize {
        self.inner.running.lock().map(|r| r.len()).unwrap_or(0)
    }

    async fn worker_loop(self, pool: Arc<CategoryPool>, worker: usize) {
        let mut stop = self.inner.stop.subscribe();
        let clock = self.inner.clock.clone();
        let store = self.inner.store.clone();
        let mut uncommitted = None;
        while let Some(job) = pool.take(worker, || clock.now(), &mut stop).await {
            self.run_job(&pool, job).await;
            // Outcomes not yet durable are bounded to one per worker: the
            // worker moves on while its outcome commits, but not while the
            // previous one is still uncommitted. A crash then re-runs at
            // most two tasks per worker that had finished.
            if let Some(mark) = uncommitted.replace(store.mark()) {
                store.durable(mark).await;
            }
            pool.release(worker);
        }
    }

    /// One job from a pool: resolve, admit, run, settle.
    async fn run_job(&self, pool: &Arc<CategoryPool>, job: Job) {
        let inner = &self.inner;
        let id = job.task_id;
        let Some(task) = inner.store.get(id) else {
            return;
        };
        if task.status != TaskStatus::Queued {
            return; // cancelled while queued
        }
        let Some(plugin) = inner.registry.resolve(&task.kind) else {
            self.no_handler(&task, &pool.name);
            return;
        };
        if plugin.info.category != pool.name {
            // A new version moved the kind to another pool.
            self.enqueue(id, task.priority, &plugin.info.category);
            return;
        }
        let limit = tenancy::limit(
            plugin.limits.max_concurrency,
            pool.size,
            inner.registry.plugins_in_pool(&pool.name),
        );
        if !inner
            .plugin_slots
            .take_or_hold(&plugin.info.name, limit, job, pool)
        {
            return; // back in the pool when one of its attempts ends
        }
        let _slot = tenancy::SlotGuard {
            slots: inner.plugin_slots.clone(),
            plugin: plugin.info.name.clone(),
        };

        let Some(admitted) = self.admit(&plugin, &task, pool) else {
            return;
        };

        // Register the cancel token before the task turns `running`, so a
        // cancel in between is never lost.
        let cancel = CancelToken::default();
        if let Ok(mut running) = inner.running.lock() {
            running.insert(id, cancel.clone());
        }
        let attempt_no = task.attempts + 1;
        let started_wall = inner.clock.wall();
        let version = AttemptPlugin {
            name: plugin.info.name.clone(),
            version: plugin.info.version.clone(),
        };
        let start = Transition::Start {
            attempt: attempt_no,
            plugin: version.clone(),
            category: plugin.info.category.clone(),
            at: started_wall,
        };
        if self.step(id, start).is_none() {
            self.forget_running(id);
            for (breaker, admission) in &admitted {
                if *admission == Admission::Trial {
                    breaker.abandon_trial();
                }
            }
            return;
        }
        inner.metrics.started(
            &pool.name,
            inner.clock.now().saturating_duration_since(job.enqueued),
        );

        let span = tracing::info_span!(
            "attempt",
            task.id = %id,
            task.kind = %task.kind,
            plugin = %plugin.info.name,
            plugin.version = %plugin.info.version,
            attempt = attempt_no,
            outcome = tracing::field::Empty,
        );
        let attempt = Attempt {
            task_id: id.to_string(),
            kind: task.kind.clone(),
            payload: task.payload.to_string(),
            priority: task.priority,
            attempt: attempt_no,
            budget: Duration::from_secs(task.timeout_s),
            cancel,
            tasks: Arc::new(self.clone()),
            fuel: None,
        };
        let run_started = Instant::now();
        let outcome = tracing::Instrument::instrument(
            inner.registry.runtime().run(&plugin, attempt),
            span.clone(),
        )
        .await;
        let run_time = run_started.elapsed();
        match &outcome {
            Ok(_) => span.record("outcome", "succeeded"),
            Err(f) => span.record("outcome", f.kind.to_string()),
        };
        span.in_scope(|| match &outcome {
            Ok(_) => tracing::debug!(
                elapsed_ms = run_time.as_millis() as u64,
                "attempt succeeded"
            ),
            Err(f) => tracing::info!(
                elapsed_ms = run_time.as_millis() as u64,
                error.kind = %f.kind,
                "attempt failed: {}",
                crate::task::one_line(&f.message)
            ),
        });

        // Feed the breakers: the plugin's own counts what says something
        // about the plugin; named ones hear from the capabilities and only
        // get their unused trial slots back here.
        let on_probation = inner
            .registry
            .is_on_probation(&plugin.info.name, &plugin.info.version);
        let plugin_verdict = match &outcome {
            Ok(_) => Some(true),
            Err(f) if counts_against_plugin(f.kind, on_probation) => Some(false),
            Err(_) => None,
        };
        for (i, (breaker, admission)) in admitted.iter().enumerate() {
            match (i, plugin_verdict) {
                (0, Some(success)) => inner.breakers.announce(breaker.record(success)),
                _ if *admission == Admission::Trial => breaker.abandon_trial(),
                _ => {}
            }
            // A trial ended: its slot goes to the next parked task.
            if *admission == Admission::Trial {
                self.release(breaker.name());
            }
        }
        self.settle(
            &task,
            attempt_no,
            version,
            started_wall,
            run_time,
            outcome,
            &pool.name,
        );
        // Only now is the attempt over: shutdown waits for the running set
        // to empty, and must find the outcome recorded when it does.
        self.forget_running(id);
    }

    /// Asks every breaker the attempt depends on; parks the task on the
    /// first one that says no. Returns the admissions (plugin breaker first).
    fn admit(
        &self,
        plugin: &PluginVersion,
        task: &TaskRecord,
        pool: &CategoryPool,
    ) -> Option<Vec<(Arc<Breaker>, Admission)>> {
        let breakers = &self.inner.breakers;
        let needed = std::iter::once(breakers.plugin(&plugin.info.name, &plugin.info.version))
            .chain(
                plugin
                    .depends_on
                    .iter()
                    .filter_map(|name| breakers.find(name)),
            );
        let mut admitted: Vec<(Arc<Breaker>, Admission)> = Vec::new();
        for breaker in needed {
            let (admission, transition) = breaker.admit();
            breakers.announce(transition);
            if admission == Admission::Rejected {
                for (b, a) in &admitted {
                    if *a == Admission::Trial {
                        b.abandon_trial();
                    }
                }
                self.park(task, &plugin.info.name, breaker.name(), &pool.name);
                return None;
            }
            admitted.push((breaker, admission));
        }
        Some(admitted)
    }

    fn park(&self, task: &TaskRecord, plugin: &str, breaker: &str, pool: &str) {
        let inner = &self.inner;
        let park = Transition::Park {
            breaker: breaker.to_string(),
        };
        if self.step(task.task_id, park).is_none() {
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
            self.release(breaker);
            return;
        }
        // A version rolled back or replaced meanwhile will not half-open for
        // this task's sake: let it go to the version now serving.
        if let Some((name, version)) = plugin_breaker_version(breaker) {
            let replaced = inner.registry.is_rolled_back(name, version)
                || inner
                    .registry
                    .resolve(&task.kind)
                    .is_some_and(|v| v.info.name != name || v.info.version != version);
            if replaced {
                self.release_all(breaker);
            }
        }
    }

    /// Puts as many tasks parked on `breaker` back in their queues as it
    /// would let through now: all of them when it is closed, one per free
    /// trial slot when it is half-open, none while it is open.
    fn release(&self, breaker: &str) {
        let room = match self.inner.breakers.find(breaker) {
            Some(b) => b.room(),
            None => None,
        };
        self.unpark(breaker, room);
    }

    /// Puts every task parked on `breaker` back (its version was replaced
    /// or rolled back: the tasks go to the version now serving).
    fn release_all(&self, breaker: &str) {
        self.unpark(breaker, None);
    }

    fn unpark(&self, breaker: &str, limit: Option<usize>) {
        for parked in self.inner.parked.take(breaker, limit) {
            let unpark = Transition::Unpark {
                breaker: Some(breaker.to_string()),
            };
            if let Some(task) = self.step(parked.id, unpark) {
                self.enqueue(parked.id, task.priority, &parked.pool);
            }
        }
    }

    fn forget_running(&self, id: Uuid) {
        if let Ok(mut running) = self.inner.running.lock() {
            running.remove(&id);
        }
    }

    /// No plugin handles the kind any more: wait (uncharged) for a
    /// replacement until the task's timeout has passed since it was created.
    fn no_handler(&self, task: &TaskRecord, pool: &str) {
        let inner = &self.inner;
        let age = inner
            .clock
            .wall()
            .duration_since(task.created_at)
            .unwrap_or_default();
        let budget = Duration::from_secs(task.timeout_s);
        if age >= budget {
            let failure = TaskFailure::new(
                FailureKind::NoHandler,
                format!(
                    "no loaded plugin handles kind `{}`, and none came back within the task's {} s timeout",
                    task.kind, task.timeout_s
                ),
            );
            inner.metrics.ended_unrun(pool, FailureKind::NoHandler);
            self.finish(task.task_id, Err(failure), None);
            return;
        }
        let wait = (budget - age).min(Duration::from_secs(5));
        let due = Transition::Defer {
            due: inner.clock.wall() + wait,
        };
        if self.step(task.task_id, due).is_some() {
            self.arm_timer(task.task_id, pool, inner.clock.now() + wait);
        }
    }

    /// Applies a lifecycle transition. A refused one means the task moved
    /// on meanwhile (cancelled, finished, already re-queued): logged, and
    /// the caller drops what it was about to do with the task.
    fn step(&self, id: Uuid, transition: Transition) -> Option<TaskRecord> {
        let name = transition.name();
        match self.inner.store.transition(id, transition) {
            Ok(task) => Some(task),
            Err(e) => {
                tracing::debug!(task.id = %id, transition = name, "transition refused: {e}");
                None
            }
        }
    }

    /// Queues task `id` again in `pool` at `due`.
    fn arm_timer(&self, id: Uuid, pool: &str, due: Instant) {
        if let Ok(mut timers) = self.inner.timers.lock() {
            timers.push(Reverse((due, id, pool.to_string())));
        }
        self.inner.timers_changed.notify_one();
    }

    /// Records an attempt's outcome and decides what happens next.
    #[allow(clippy::too_many_arguments)]
    fn settle(
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
        let interrupted_by_shutdown = matches!(&outcome, Err(f) if f.kind == FailureKind::Cancelled)
            && inner.draining.load(std::sync::atomic::Ordering::SeqCst);
        let error = match &outcome {
            Ok(_) => None,
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
            && inner.registry.is_rolled_back(&plugin.name, &plugin.version);
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
            );
            return;
        }
        if rerun_after_rollback {
            let requeue = Transition::Requeue {
                log: record,
                failure: error,
            };
            if self.step(id, requeue).is_some() {
                self.enqueue(id, task.priority, pool);
            }
            return;
        }
        if retry && let Some(failure) = error {
            let delay = inner.config.retry.delay(id, attempt_no);
            let retry = Transition::Retry {
                log: record,
                failure,
                due: inner.clock.wall() + delay,
            };
            if self.step(id, retry).is_some() {
                self.arm_timer(id, pool, inner.clock.now() + delay);
            }
            return;
        }
        self.finish(id, outcome, Some(record));
    }

    fn finish(
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
        if self.step(id, end).is_some() {
            self.wake_waiters(id);
        }
    }

    /// Fires retry timers: a due task goes back to its pool's queue.
    async fn timer_loop(self) {
        let inner = &self.inner;
        let mut stop = inner.stop.subscribe();
        loop {
            let changed = inner.timers_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = inner.clock.now();
            let mut due = Vec::new();
            let next = {
                let Ok(mut timers) = inner.timers.lock() else {
                    return;
                };
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

    /// Reacts to breaker transitions: wakes parked tasks when a breaker
    /// half-opens or closes, arms a timer when one opens, and rolls back a
    /// plugin version whose breaker opens while it is on probation.
    async fn breaker_loop(self, mut transitions: broadcast::Receiver<crate::breaker::Transition>) {
        loop {
            let transition = match transitions.recv().await {
                Ok(t) => t,
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // Missed some: release everything; the breakers re-park
                    // whatever still may not run.
                    for name in self.inner.parked.breakers() {
                        self.release(&name);
                    }
                    continue;
                }
                Err(broadcast::error::RecvError::Closed) => return,
            };
            match transition.to {
                BreakerState::HalfOpen | BreakerState::Closed => self.release(&transition.breaker),
                BreakerState::Open => {
                    self.arm_half_open(&transition.breaker);
                    if self.inner.config.rollback {
                        self.maybe_roll_back(&transition.breaker).await;
                    }
                }
            }
        }
    }

    /// When an open breaker's time is up, move it to half-open so the tasks
    /// parked on it are released.
    fn arm_half_open(&self, name: &str) {
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
    async fn maybe_roll_back(&self, breaker: &str) {
        let Some((name, version)) = plugin_breaker_version(breaker) else {
            return;
        };
        let Some(rolled_back) = self.inner.registry.roll_back(name, version).await else {
            return;
        };
        tracing::warn!(
            plugin = name,
            bad_version = version,
            restored_version = %rolled_back.info.version,
            "automatic rollback: the new version's breaker opened during probation"
        );
        self.retry_after_rollback(name, version);
        self.release_all(breaker);
    }

    /// Tasks whose last attempt failed on a rolled-back version run again on
    /// the restored one, without that attempt counting.
    fn retry_after_rollback(&self, name: &str, version: &str) {
        let inner = &self.inner;
        let candidates = inner.store.list(&TaskFilter {
            status: None,
            kind: None,
            limit: usize::MAX,
        });
        for task in candidates {
            let last_on_bad = task.attempt_log.last().is_some_and(|a| {
                a.plugin.name == name && a.plugin.version == version && a.error.is_some()
            });
            let eligible = matches!(task.status, TaskStatus::RetryWait | TaskStatus::Failed)
                && last_on_bad
                && task
                    .error
                    .as_ref()
                    .is_some_and(|e| counts_against_plugin(e.kind, true));
            if !eligible {
                continue;
            }
            let Some(category) = task.category.clone() else {
                continue;
            };
            if self.step(task.task_id, Transition::Rerun).is_some() {
                self.enqueue(task.task_id, task.priority, &category);
            }
        }
    }

    /// The pools as the metrics and `/api/hp/*` show them.
    pub fn pool_gauges(&self) -> Vec<PoolGauges> {
        let inner = &self.inner;
        let parked = inner.parked.by_pool();
        let mut waiting: HashMap<String, usize> = HashMap::new();
        if let Ok(t) = inner.timers.lock() {
            for Reverse((_, _, pool)) in t.iter() {
                *waiting.entry(pool.clone()).or_default() += 1;
            }
        }
        inner
            .pools
            .values()
            .map(|p| PoolGauges {
                name: p.name.clone(),
                size: p.size,
                running: p.running(),
                queued: p.depths(),
                parked: parked.get(&p.name).copied().unwrap_or(0),
                retry_wait: waiting.get(&p.name).copied().unwrap_or(0),
            })
            .collect()
    }
}

/// The plugin and version of an automatic breaker's name (`plugin:NAME@VERSION`).
fn plugin_breaker_version(breaker: &str) -> Option<(&str, &str)> {
    breaker.strip_prefix("plugin:")?.rsplit_once('@')
}

/// Whether a failure says something about what the plugin itself did
/// (and so counts for its automatic breaker): it trapped, ran out of
/// memory, fuel or time. A retryable error is usually a destination's
/// failure (which the destination's breaker counts), and a fatal one the
/// caller's bad input, except on a version on probation after a swap,
/// where a fatal error is the new version's doing.
fn counts_against_plugin(kind: FailureKind, on_probation: bool) -> bool {
    match kind {
        FailureKind::Trap | FailureKind::Timeout | FailureKind::OutOfMemory | FailureKind::Fuel => {
            true
        }
        FailureKind::Fatal => on_probation,
        _ => false,
    }
}
