//! Turns submitted tasks into attempts on the sandbox and records outcomes.
//!
//! [`Scheduler::submit`] validates a task against the registry, records it
//! in the [`Store`], and hands it to a worker; a fixed number of workers
//! (`runtime.workers`) run attempts at once, first come first served (a
//! fair semaphore). Each attempt resolves the plugin version serving the
//! kind *when it starts*, runs it through [`Runtime::run`], and writes the
//! outcome back; clients waiting on the task are then woken.
//!
//! Priorities, per-category pools, retries and breakers come on top of this
//! shape without changing the API above it.

use crate::capabilities::host_api::ProgressSink;
use crate::runtime::registry::Registry;
use crate::runtime::sandbox::CancelToken;
use crate::runtime::{Attempt, Runtime};
use crate::store::{AttemptPlugin, Inserted, Progress, Store, TaskFilter, TaskRecord};
use crate::task::{FailureKind, Priority, TaskFailure, TaskStatus};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, Semaphore};
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
}

/// Why a submission was refused. Each is the caller's to fix.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SubmitError {
    #[error("no loaded plugin handles kind `{kind}`; loaded kinds: {known}")]
    UnknownKind { kind: String, known: String },
    #[error("timeout_s must be between 1 and {max}")]
    Timeout { max: u64 },
}

/// The outcome of a submission.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub task: TaskRecord,
    /// False when an idempotency key matched an existing task.
    pub created: bool,
}

/// Scheduler defaults.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    pub workers: usize,
    /// Applied when a submission names no `timeout_s`.
    pub default_timeout_s: u64,
    pub default_max_retries: u32,
}

/// Cheap to clone; all clones drive the same workers.
#[derive(Debug, Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    registry: Arc<Registry>,
    workers: Arc<Semaphore>,
    config: SchedulerConfig,
    /// Clients waiting for a task to finish.
    waiters: Mutex<HashMap<Uuid, Arc<Notify>>>,
}

impl Scheduler {
    pub fn new(store: Store, registry: Arc<Registry>, config: SchedulerConfig) -> Scheduler {
        Scheduler {
            inner: Arc::new(Inner {
                store,
                registry,
                workers: Arc::new(Semaphore::new(config.workers)),
                config,
                waiters: Mutex::default(),
            }),
        }
    }

    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// Records the task and queues it. An idempotency key that was seen
    /// before returns the existing task instead.
    pub fn submit(&self, new: NewTask) -> Result<Submitted, SubmitError> {
        let inner = &self.inner;
        let plugin = inner
            .registry
            .resolve(&new.kind)
            .ok_or_else(|| SubmitError::UnknownKind {
                kind: new.kind.clone(),
                known: self.known_kinds(),
            })?;
        let ceiling = plugin.limits.timeout.as_secs();
        let timeout_s = new
            .timeout_s
            .unwrap_or(inner.config.default_timeout_s)
            .min(ceiling);
        if timeout_s == 0 {
            return Err(SubmitError::Timeout { max: ceiling });
        }
        let record = TaskRecord {
            task_id: Uuid::now_v7(),
            kind: new.kind,
            category: Some(plugin.info.category.clone()),
            priority: new.priority,
            status: TaskStatus::Queued,
            payload: new.payload,
            attempts: 0,
            max_retries: new.max_retries.unwrap_or(inner.config.default_max_retries),
            timeout_s,
            result: None,
            error: None,
            plugin: None,
            progress: None,
            idempotency_key: new.idempotency_key,
            created_at: SystemTime::now(),
            started_at: None,
            finished_at: None,
        };
        match inner.store.insert(record) {
            Inserted::Existing(task) => Ok(Submitted {
                task,
                created: false,
            }),
            Inserted::New(task) => {
                let scheduler = self.clone();
                let id = task.task_id;
                tokio::spawn(async move { scheduler.dispatch(id).await });
                Ok(Submitted {
                    task,
                    created: true,
                })
            }
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

    pub fn get(&self, id: Uuid) -> Option<TaskRecord> {
        self.inner.store.get(id)
    }

    pub fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        self.inner.store.list(filter)
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

    async fn dispatch(self, id: Uuid) {
        let Ok(_worker) = self.inner.workers.clone().acquire_owned().await else {
            return;
        };
        self.run_attempt(id).await;
    }

    async fn run_attempt(&self, id: Uuid) {
        let inner = &self.inner;
        let Some(task) = inner.store.get(id) else {
            return;
        };
        // The version serving the kind now: a hot swap since submission is
        // picked up here; tasks already running keep their version.
        let Some(plugin) = inner.registry.resolve(&task.kind) else {
            let failure = TaskFailure::new(
                FailureKind::NoHandler,
                format!("no loaded plugin handles kind `{}` any more", task.kind),
            );
            self.finish(id, Err(failure));
            return;
        };
        let attempt_no = task.attempts + 1;
        inner.store.update(id, |t| {
            t.status = TaskStatus::Running;
            t.attempts = attempt_no;
            t.started_at.get_or_insert_with(SystemTime::now);
            t.category = Some(plugin.info.category.clone());
            t.plugin = Some(AttemptPlugin {
                name: plugin.info.name.clone(),
                version: plugin.info.version.clone(),
            });
        });
        let span = tracing::info_span!(
            "attempt",
            task.id = %id,
            task.kind = %task.kind,
            plugin = %plugin.info.name,
            plugin.version = %plugin.info.version,
            attempt = attempt_no,
        );
        let started = Instant::now();
        let attempt = Attempt {
            task_id: id.to_string(),
            kind: task.kind.clone(),
            payload: task.payload.to_string(),
            priority: task.priority,
            attempt: attempt_no,
            budget: Duration::from_secs(task.timeout_s),
            cancel: CancelToken::default(),
            progress: Arc::new(StoreProgress {
                store: inner.store.clone(),
            }),
        };
        let runtime: &Runtime = inner.registry.runtime();
        let outcome =
            tracing::Instrument::instrument(runtime.run(&plugin, attempt), span.clone()).await;
        span.in_scope(|| match &outcome {
            Ok(_) => tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "attempt succeeded"
            ),
            Err(f) => tracing::info!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                error.kind = %f.kind,
                "attempt failed: {}",
                f.message
            ),
        });
        self.finish(id, outcome);
    }

    fn finish(&self, id: Uuid, outcome: Result<serde_json::Value, TaskFailure>) {
        self.inner.store.update(id, |t| {
            t.finished_at = Some(SystemTime::now());
            match outcome {
                Ok(result) => {
                    t.status = TaskStatus::Succeeded;
                    t.result = Some(result);
                    t.error = None;
                }
                Err(failure) => {
                    t.status = if failure.kind == FailureKind::Cancelled {
                        TaskStatus::Cancelled
                    } else {
                        TaskStatus::Failed
                    };
                    t.error = Some(failure);
                }
            }
        });
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
}

/// Records a plugin's progress reports on its task.
struct StoreProgress {
    store: Store,
}

impl ProgressSink for StoreProgress {
    fn progress(&self, task_id: &str, percent: u8, message: String) {
        if let Ok(id) = task_id.parse::<Uuid>() {
            self.store.update(id, |t| {
                t.progress = Some(Progress { percent, message });
            });
        }
    }
}
