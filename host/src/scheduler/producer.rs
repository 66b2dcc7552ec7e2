//! A pool's workers: take a job, resolve who serves its kind now, keep to
//! the plugin's share of the pool, ask the breakers, run the attempt.
//!
//! Each worker of a pool loops over [`CategoryPool::take`]; one job is one
//! attempt ([`Scheduler::run_job`]). The task turns `running` only after
//! its breakers admitted it, and the outcome goes to the completer.

use super::completer::{counts_against_plugin, cut_short};
use super::pool::CategoryPool;
use super::tenancy;
use super::{AttemptRunner, Scheduler, Served};
use crate::breaker::{Admission, Breaker};
use crate::runtime::Attempt;
use crate::runtime::sandbox::CancelToken;
use crate::store::queue::Job;
use crate::store::{AttemptPlugin, TaskRecord, Transition};
use crate::sync::lock;
use crate::task::{FailureKind, TaskFailure, TaskStatus};
use futures::FutureExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

impl<R: AttemptRunner> Scheduler<R> {
    pub(super) async fn worker_loop(self, pool: Arc<CategoryPool>, worker: usize) {
        let mut stop = self.inner.stop.subscribe();
        let clock = self.inner.clock.clone();
        let store = self.inner.store.clone();
        let mut uncommitted = None;
        let mut settling: Option<tokio::task::JoinHandle<()>> = None;
        let runner = self.inner.runner.clone();
        while let Some(job) = pool
            .take(worker, || clock.now(), || runner.kinds(), &mut stop)
            .await
        {
            let id = job.task_id;
            // A panic in the host while it runs a job (a bug) ends that
            // task, not the worker: the pool keeps its size.
            let ran = std::panic::AssertUnwindSafe(self.run_job(&pool, job))
                .catch_unwind()
                .await;
            match ran {
                Ok(Some(next)) => {
                    // The worker moves on while its outcome is recorded, but
                    // not while the previous one still is: the outcomes in
                    // flight are bounded to one per worker.
                    if let Some(previous) = settling.replace(next) {
                        let _ = previous.await;
                    }
                }
                Ok(None) => {}
                Err(panic) => self.contain_panic(id, &panic_message(panic.as_ref())).await,
            }
            // Outcomes not yet durable are bounded likewise: a crash re-runs
            // at most three tasks per worker that had finished.
            if let Some(mark) = uncommitted.replace(store.mark()) {
                store.durable(mark).await;
            }
            pool.release(worker);
        }
        if let Some(last) = settling {
            let _ = last.await;
        }
    }

    /// A job's run panicked: its task fails with what happened (it is not
    /// left `running`), and whoever waits for it hears of it.
    async fn contain_panic(&self, id: Uuid, what: &str) {
        tracing::error!(task.id = %id, "the host panicked while running a task (a wasmhive bug): {what}");
        self.forget_running(id);
        let Some(task) = self.inner.store.get(id).await else {
            return;
        };
        let failure = TaskFailure::new(
            FailureKind::Fatal,
            format!(
                "the host failed while running this task (a wasmhive bug; the daemon log has it): {what}"
            ),
        );
        let log = (task.status == TaskStatus::Running).then(|| {
            let started = task.started_at.unwrap_or_else(|| self.inner.clock.wall());
            cut_short(&task, failure.clone(), started)
        });
        self.finish(id, Err(failure), log).await;
        // Its trial slots came back when the job's admissions dropped:
        // let the tasks parked behind them go.
        for breaker in self.inner.parked.breakers() {
            self.release(&breaker).await;
        }
    }

    /// One job from a pool: resolve, admit, run; the outcome is recorded
    /// by the task returned (if the job ran), so the worker can take its
    /// next job while a database commits it.
    pub(super) async fn run_job(
        &self,
        pool: &Arc<CategoryPool>,
        job: Job,
    ) -> Option<tokio::task::JoinHandle<()>> {
        let inner = &self.inner;
        let id = job.task_id;
        let Some(task) = inner.store.claimed(id).await else {
            // Unreadable now (the database away for a moment): the claim
            // goes back, or this daemon would renew its lease for good with
            // no worker to run it, and the task would stay queued.
            inner.store.unclaim(id);
            return None;
        };
        if task.status != TaskStatus::Queued {
            return None; // cancelled while queued
        }
        let Some(plugin) = inner.runner.resolve(&task.kind) else {
            self.no_handler(&task, &pool.name).await;
            return None;
        };
        if plugin.category() != pool.name {
            self.move_to_pool(&task, plugin.category()).await;
            return None;
        }
        let limit = tenancy::limit(
            plugin.limits().max_concurrency,
            pool.size,
            inner.runner.plugins_in_pool(&pool.name),
        );
        if !inner
            .plugin_slots
            .take_or_hold(plugin.name(), limit, job, pool)
        {
            return None; // back in the pool when one of its attempts ends
        }
        let _slot = tenancy::SlotGuard {
            slots: inner.plugin_slots.clone(),
            plugin: plugin.name().to_string(),
        };

        let mut admitted = self.admit(&plugin, &task, pool).await?;

        // Register the cancel token before the task turns `running`, so a
        // cancel in between is never lost.
        let cancel = CancelToken::default();
        lock(&inner.running).insert(id, cancel.clone());
        let attempt_no = task.attempts + 1;
        let started_wall = inner.clock.wall();
        let version = AttemptPlugin {
            name: plugin.name().to_string(),
            version: plugin.version().to_string(),
        };
        let start = Transition::Start {
            attempt: attempt_no,
            plugin: version.clone(),
            category: plugin.category().to_string(),
            at: started_wall,
        };
        if !self.step(id, start).await {
            self.forget_running(id);
            return None; // dropping `admitted` gives its trial slots back
        }
        inner.metrics.started(&pool.name, job.enqueued.elapsed());

        let span = tracing::info_span!(
            "attempt",
            task.id = %id,
            task.kind = %task.kind,
            plugin = %plugin.name(),
            plugin.version = %plugin.version(),
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
        let outcome =
            tracing::Instrument::instrument(inner.runner.run(&plugin, attempt), span.clone()).await;
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
            .runner
            .is_on_probation(plugin.name(), plugin.version());
        let plugin_verdict = match &outcome {
            Ok(_) => Some(true),
            Err(f) if counts_against_plugin(f.kind, on_probation) => Some(false),
            Err(_) => None,
        };
        for (i, (breaker, admission)) in admitted.take().into_iter().enumerate() {
            match (i, plugin_verdict) {
                (0, Some(success)) => inner.breakers.announce(breaker.record(success)),
                _ if admission == Admission::Trial => breaker.abandon_trial(),
                _ => {}
            }
            // A trial ended: its slot goes to the next parked task.
            if admission == Admission::Trial {
                self.release(breaker.name()).await;
            }
        }
        let this = self.clone();
        let pool = pool.name.clone();
        Some(tokio::spawn(async move {
            let settled = std::panic::AssertUnwindSafe(this.settle(
                &task,
                attempt_no,
                version,
                started_wall,
                run_time,
                outcome,
                &pool,
            ))
            .catch_unwind()
            .await;
            match settled {
                // Only now is the attempt over: shutdown waits for the
                // running set to empty, and must find the outcome recorded
                // when it does.
                Ok(()) => this.forget_running(id),
                Err(panic) => this.contain_panic(id, &panic_message(panic.as_ref())).await,
            }
        }))
    }

    /// Asks every breaker the attempt depends on; parks the task on the
    /// first one that says no. Returns the admissions (plugin breaker first).
    async fn admit(
        &self,
        plugin: &R::Version,
        task: &TaskRecord,
        pool: &CategoryPool,
    ) -> Option<Admitted> {
        let breakers = &self.inner.breakers;
        let needed = std::iter::once(breakers.plugin(plugin.name(), plugin.version())).chain(
            plugin
                .depends_on()
                .iter()
                .filter_map(|name| breakers.find(name)),
        );
        let mut admitted = Admitted(Vec::new());
        for breaker in needed {
            let (admission, transition) = breaker.admit();
            breakers.announce(transition);
            if admission == Admission::Rejected {
                drop(admitted); // gives back the trial slots taken so far
                self.park(task, plugin.name(), breaker.name(), &pool.name)
                    .await;
                return None;
            }
            admitted.0.push((breaker, admission));
        }
        Some(admitted)
    }

    pub(super) fn forget_running(&self, id: Uuid) {
        lock(&self.inner.running).remove(&id);
    }

    /// No plugin handles the kind any more: wait (uncharged) for a
    /// replacement until the task's timeout has passed since it was created.
    pub(super) async fn no_handler(&self, task: &TaskRecord, pool: &str) {
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
            self.finish(task.task_id, Err(failure), None).await;
            return;
        }
        let wait = (budget - age).min(Duration::from_secs(5));
        let defer = Transition::Defer {
            due: inner.clock.wall() + wait,
        };
        self.step(task.task_id, defer).await;
    }

    /// A new version moved the task's kind to another pool: the task goes
    /// to that pool's queue, or fails if no such pool is configured.
    async fn move_to_pool(&self, task: &TaskRecord, category: &str) {
        let inner = &self.inner;
        if !inner.pools.contains_key(category) {
            let failure = TaskFailure::new(
                FailureKind::NoHandler,
                format!(
                    "kind `{}` moved to pool `{category}`, which is not configured",
                    task.kind
                ),
            );
            self.finish(task.task_id, Err(failure), None).await;
            return;
        }
        inner
            .store
            .update(task.task_id, |t| t.category = Some(category.to_string()))
            .await;
        inner.store.unclaim(task.task_id);
    }
}

/// The breakers that admitted one attempt, plugin breaker first. A trial
/// slot the attempt's outcome did not settle (it never started, or the host
/// panicked while it ran) goes back to its breaker when this drops, so a
/// half-open breaker never waits on a trial that will not end.
struct Admitted(Vec<(Arc<Breaker>, Admission)>);

impl Admitted {
    /// The admissions, for the outcome to settle; nothing is left to drop.
    fn take(&mut self) -> Vec<(Arc<Breaker>, Admission)> {
        std::mem::take(&mut self.0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        for (breaker, admission) in self.0.drain(..) {
            if admission == Admission::Trial {
                breaker.abandon_trial();
            }
        }
    }
}

/// What a panic said, for the task's error and the log.
fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic".to_string())
}
