//! Decides what runs when: per-category pools, five priorities, retries,
//! timeouts, cancellation and breaker-aware parking.
//!
//! [`Scheduler::submit`] records a task in the [`Store`] and queues it in the
//! [`CategoryPool`] of the plugin that handles its kind. The rest is split by
//! job:
//!
//! - [`producer`]: each pool's workers take jobs and run one attempt each:
//!   resolve the version serving the kind *now*, hold the job back if its
//!   plugin has its share of the pool, ask the breakers ([`breakers`]), mark
//!   it running and run it through the [`AttemptRunner`];
//! - [`completer`]: records an attempt's outcome and decides what follows
//!   (done, retry after a backoff, re-run after a rollback, back to the
//!   queue on shutdown);
//! - [`breakers`]: parks tasks on open breakers, releases them as the
//!   breakers half-open or close, and rolls back a version on probation;
//! - [`maintenance`]: due retries, recovery at start, retention.
//!
//! Every change of a task's state is a [`Transition`] the store checks; a
//! refused one means the task moved on, and the caller drops it. Time comes
//! from the injected [`Clock`]; the sandbox sits behind [`AttemptRunner`]
//! (the plugin [`Registry`] in the daemon, a scripted runner in the tests).

mod breakers;
mod children;
mod completer;
pub mod maintenance;
pub mod parking;
pub mod pool;
mod producer;
mod remote;
pub mod retry;
pub mod runner;
pub mod tenancy;
#[cfg(test)]
mod tests;

use crate::breaker::BreakerSet;
use crate::clock::Clock;
use crate::metrics::{Metrics, PoolGauges};
use crate::runtime::registry::Registry;
use crate::runtime::sandbox::CancelToken;
use crate::store::{
    Inserted, Store, StoreError, TaskFilter, TaskRecord, Transition, TransitionError,
};
use crate::sync::lock;
use crate::task::{FailureKind, Priority};
use pool::CategoryPool;
use retry::RetryPolicy;
pub use runner::{AttemptRunner, Served};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, watch};
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

impl NewTask {
    /// A task of `kind` with the daemon's defaults for the rest.
    pub fn new(kind: &str, payload: serde_json::Value, priority: Priority) -> NewTask {
        NewTask {
            kind: kind.into(),
            payload,
            priority,
            timeout_s: None,
            max_retries: None,
            idempotency_key: None,
            parent_id: None,
        }
    }
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
    /// The store could not pass the request on to the daemon running it.
    #[error(transparent)]
    Store(#[from] StoreError),
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

/// Cheap to clone; all clones drive the same pools. `R` runs the attempts:
/// the plugin [`Registry`] unless a test says otherwise.
#[derive(Debug)]
pub struct Scheduler<R: AttemptRunner = Registry> {
    inner: Arc<Inner<R>>,
}

impl<R: AttemptRunner> Clone for Scheduler<R> {
    fn clone(&self) -> Self {
        Scheduler {
            inner: self.inner.clone(),
        }
    }
}

#[derive(Debug)]
struct Inner<R: AttemptRunner> {
    store: Store,
    runner: Arc<R>,
    clock: Arc<dyn Clock>,
    breakers: Arc<BreakerSet>,
    metrics: Arc<Metrics>,
    pools: BTreeMap<String, Arc<CategoryPool>>,
    config: SchedulerConfig,
    /// Cancel tokens of running attempts.
    running: Mutex<HashMap<Uuid, CancelToken>>,
    /// Attempts stopped because this daemon's lease on them looked lost
    /// ([`RemoteEvent::LeaseLost`](crate::store::RemoteEvent)): their end is
    /// an interruption.
    lease_lost: Mutex<std::collections::HashSet<Uuid>>,
    /// Clients waiting for a task to finish.
    waiters: Mutex<HashMap<Uuid, Arc<Notify>>>,
    /// Running attempts and held jobs per plugin (concurrency in a pool).
    plugin_slots: Arc<tenancy::PluginSlots>,
    /// Tasks parked on open breakers.
    parked: parking::Parking,
    /// Turns true when the daemon stops taking work.
    stop: watch::Sender<bool>,
    /// Set while shutting down: an interrupted attempt is re-queued, not cancelled.
    draining: std::sync::atomic::AtomicBool,
}

impl Scheduler<Registry> {
    /// The plugin registry the daemon's scheduler runs attempts through.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.runner
    }
}

impl<R: AttemptRunner> Scheduler<R> {
    /// Builds the pools and starts their workers, the retry timer and the
    /// breaker listener. Must be called inside a tokio runtime.
    pub fn start(
        store: Store,
        runner: Arc<R>,
        breakers: Arc<BreakerSet>,
        metrics: Arc<Metrics>,
        clock: Arc<dyn Clock>,
        config: SchedulerConfig,
    ) -> Scheduler<R> {
        let pools = config
            .pools
            .iter()
            .map(|(name, size)| {
                let pool = CategoryPool::new(name, *size, store.clone());
                (name.clone(), Arc::new(pool))
            })
            .collect();
        let transitions = breakers.transitions();
        let scheduler = Scheduler {
            inner: Arc::new(Inner {
                store,
                runner,
                clock,
                breakers,
                metrics,
                pools,
                config,
                running: Mutex::default(),
                lease_lost: Mutex::default(),
                waiters: Mutex::default(),
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
        tokio::spawn(async move { s.due_loop().await });
        let s = scheduler.clone();
        tokio::spawn(async move { s.breaker_loop(transitions).await });
        if let Some(events) = scheduler.inner.store.remote_events() {
            let s = scheduler.clone();
            tokio::spawn(async move { s.remote_loop(events).await });
        }
        if scheduler.inner.store.shared() {
            let s = scheduler.clone();
            tokio::spawn(async move { s.rescue_loop().await });
        }
        scheduler
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
    pub fn plugin_load(&self) -> HashMap<String, (usize, usize)> {
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
            .runner
            .resolve(&new.kind)
            .ok_or_else(|| SubmitError::UnknownKind {
                kind: new.kind.clone(),
                known: self.known_kinds(),
            })?;
        let parked = inner.parked.of_plugin(plugin.name());
        if parked >= plugin.limits().max_parked as usize {
            let breakers = inner.parked.breakers_of(plugin.name());
            let soonest = breakers
                .iter()
                .filter_map(|b| inner.breakers.find(b))
                .filter_map(|b| b.half_open_at())
                .min();
            return Err(SubmitError::Backlog {
                plugin: plugin.name().to_string(),
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
        let ceiling = plugin.limits().timeout.as_secs();
        let timeout_s = new.timeout_s.unwrap_or(inner.config.default_timeout_s);
        if timeout_s == 0 {
            return Err(SubmitError::Timeout { max: ceiling });
        }
        let max_retries = new.max_retries.unwrap_or(inner.config.retry.max_retries);
        if max_retries > MAX_RETRIES {
            return Err(SubmitError::Retries);
        }
        let category = plugin.category().to_string();
        let parent = match new.parent_id {
            Some(id) => inner.store.get(id).await,
            None => None,
        };
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
                Ok(Submitted {
                    task,
                    created: true,
                })
            }
        }
    }

    /// Whether a plugin handles `kind` now (what `submit` checks first).
    pub fn check_kind(&self, kind: &str) -> Result<(), SubmitError> {
        match self.inner.runner.resolve(kind) {
            Some(_) => Ok(()),
            None => Err(SubmitError::UnknownKind {
                kind: kind.to_string(),
                known: self.known_kinds(),
            }),
        }
    }

    fn known_kinds(&self) -> String {
        let mut kinds = self.inner.runner.kinds();
        kinds.sort();
        if kinds.is_empty() {
            "none (drop a plugin into the plugins directory)".to_string()
        } else {
            kinds.join(", ")
        }
    }

    pub async fn get(&self, id: Uuid) -> Option<TaskRecord> {
        self.inner.store.get(id).await
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub async fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        self.inner.store.list(filter).await
    }

    /// Cancels a queued, parked, waiting or running task. A running attempt
    /// is interrupted at the next epoch tick; the task then ends `cancelled`.
    pub async fn cancel(&self, id: Uuid) -> Result<(), CancelError> {
        let inner = &self.inner;
        let now = inner.clock.wall();
        let cancel = Transition::Cancel {
            at: now,
            message: "cancelled before it ran again".into(),
        };
        let (cancelled_now, running) = match inner.store.transition(id, cancel).await {
            Ok(_) => (true, false),
            Err(TransitionError::NotFound(_)) => return Err(CancelError::NotFound(id)),
            Err(TransitionError::Illegal {
                from: "running", ..
            }) => (false, true),
            Err(_) => (false, false),
        };
        let task = inner.store.get(id).await.ok_or(CancelError::NotFound(id))?;
        if running {
            let token = lock(&inner.running).get(&id).cloned();
            match token {
                Some(token) => token.cancel(),
                // Running on another daemon sharing the store: it stops it.
                None => inner.store.request_cancel(id).await?,
            }
            return Ok(());
        }
        if !cancelled_now {
            return Err(CancelError::Finished {
                id,
                status: task.status.as_str(),
            });
        }
        // The store took it out of its queue; a parking spot is skipped
        // when it comes up.
        if let Some(pool) = task.category.as_deref().and_then(|c| inner.pools.get(c)) {
            inner
                .metrics
                .ended_unrun(&pool.name, FailureKind::Cancelled);
        }
        self.wake_waiters(id);
        Ok(())
    }

    /// Waits up to `timeout` for the task to finish; returns it as it is then.
    pub async fn wait(&self, id: Uuid, timeout: Duration) -> Option<TaskRecord> {
        let notify = lock(&self.inner.waiters).entry(id).or_default().clone();
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let task = self.get(id).await?;
        if task.status.is_finished() {
            return Some(task);
        }
        let _ = tokio::time::timeout(timeout, notified).await;
        self.get(id).await
    }

    fn wake_waiters(&self, id: Uuid) {
        let waiting = lock(&self.inner.waiters).remove(&id);
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
        // The periodic work stopped with it: another daemon takes it over.
        inner.store.resign().await;
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
            let tokens: Vec<CancelToken> = lock(&inner.running).values().cloned().collect();
            for token in tokens {
                token.cancel();
            }
            while self.running_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    fn running_count(&self) -> usize {
        lock(&self.inner.running).len()
    }

    /// Applies a lifecycle transition. A refused one means the task moved
    /// on meanwhile (cancelled, finished, already re-queued): logged, and
    /// the caller drops what it was about to do with the task.
    ///
    /// One the store could not write (its database is away) is tried again,
    /// backing off, until it is written or refused: a worker holding an
    /// outcome waits with it (the outcomes waiting are bounded by the
    /// workers, and a waiting worker claims nothing). Once the scheduler
    /// stops it gives up after a few more tries; the task is still
    /// `running` under this daemon's lease then, and is rescued and run
    /// again (at-least-once), never lost.
    async fn step(&self, id: Uuid, transition: Transition) -> bool {
        const FIRST_WAIT: Duration = Duration::from_millis(100);
        const LONGEST_WAIT: Duration = Duration::from_secs(2);
        const TRIES_ONCE_STOPPED: u32 = 5;
        let name = transition.name();
        let mut wait = FIRST_WAIT;
        let mut tries_once_stopped = 0;
        loop {
            match self.inner.store.transition(id, transition.clone()).await {
                Ok(()) => return true,
                Err(TransitionError::Store(e)) => {
                    if *self.inner.stop.borrow() {
                        tries_once_stopped += 1;
                        if tries_once_stopped > TRIES_ONCE_STOPPED {
                            tracing::warn!(task.id = %id, transition = name,
                                "not recorded before the daemon stopped: {e}");
                            return false;
                        }
                    }
                    if wait == FIRST_WAIT {
                        tracing::warn!(task.id = %id, transition = name,
                            "not recorded yet, trying again until the store takes it: {e}");
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(LONGEST_WAIT);
                }
                Err(e) => {
                    tracing::debug!(task.id = %id, transition = name, "transition refused: {e}");
                    return false;
                }
            }
        }
    }

    /// The pools as the metrics and `/api/hp/*` show them.
    pub async fn pool_gauges(&self) -> Vec<PoolGauges> {
        let inner = &self.inner;
        let parked = inner.parked.by_pool();
        let waiting = inner.store.waiting().await;
        let mut gauges = Vec::with_capacity(inner.pools.len());
        for p in inner.pools.values() {
            gauges.push(PoolGauges {
                name: p.name.clone(),
                size: p.size,
                running: p.running(),
                queued: p.depths().await,
                parked: parked.get(&p.name).copied().unwrap_or(0),
                retry_wait: waiting.get(&p.name).copied().unwrap_or(0),
            });
        }
        gauges
    }
}
