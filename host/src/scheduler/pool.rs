//! A category pool: its workers' slots over the store's queue.
//!
//! Each pool has `size` workers (tokio tasks driven by the scheduler) that
//! [`take`](CategoryPool::take) jobs by claiming them from the store
//! ([`Store::claim`]). One worker claims at a time, for every idle worker
//! at once (one round trip to a database serves them all); the jobs it
//! claimed for the others wait for them in the pool's hand-over queue. The
//! last `reserved` free workers are kept from background work (LOW, BULK)
//! so an urgent task does not wait behind a pool saturated by BULK.

use crate::store::Store;
use crate::store::queue::Job;
use crate::sync::lock;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::sync::{Notify, watch};
use uuid::Uuid;

/// What one worker is doing.
#[derive(Debug, Clone, Copy)]
struct Busy {
    task_id: Uuid,
    since: Instant,
}

#[derive(Debug)]
pub struct CategoryPool {
    pub name: String,
    pub size: usize,
    /// Free workers that LOW and BULK tasks may not take.
    pub reserved: usize,
    store: Store,
    workers: Mutex<Vec<Option<Busy>>>,
    /// Held while a worker claims (the claim may wait on a database).
    claiming: tokio::sync::Mutex<()>,
    /// Jobs claimed for idle workers that have not taken them yet.
    handed: Mutex<VecDeque<Job>>,
    /// Signalled for each job put in `handed`.
    hand_over: Notify,
    /// The store's signal that a task of this pool may be claimed.
    wake: Arc<Notify>,
}

/// One worker as `/api/hp/workers` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerStatus {
    pub worker: usize,
    pub state: &'static str,
    pub task_id: Option<Uuid>,
    pub busy_for_s: Option<f64>,
}

impl CategoryPool {
    pub fn new(name: &str, size: usize, store: Store) -> CategoryPool {
        CategoryPool {
            name: name.to_string(),
            size,
            reserved: usize::from(size >= 2),
            wake: store.ready_waker(name),
            store,
            workers: Mutex::new(vec![None; size]),
            claiming: tokio::sync::Mutex::new(()),
            handed: Mutex::default(),
            hand_over: Notify::new(),
        }
    }

    /// Gives a claimed job back to the queue (its plugin had no free slot).
    pub fn give_back(&self, job: Job) {
        self.store.unclaim(job.task_id);
    }

    /// Waits for the next job worker `worker` may run, of the kinds
    /// `kinds` says this daemon serves (see [`Store::claim`]); `None` once
    /// `stop` turns true.
    pub async fn take(
        &self,
        worker: usize,
        now: impl Fn() -> Instant,
        kinds: impl Fn() -> Vec<String>,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Job> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let handed = self.hand_over.notified();
            tokio::pin!(handed);
            handed.as_mut().enable();
            if !*stop.borrow()
                && let Some(job) = self.take_handed(worker, &now)
            {
                return Some(job);
            }
            {
                // One claim at a time per pool, so two workers cannot both
                // count the reserve as free and take it for background work.
                let _claiming = self.claiming.lock().await;
                if *stop.borrow() {
                    self.give_back_handed();
                    return None;
                }
                if let Some(job) = self.take_handed(worker, &now) {
                    return Some(job);
                }
                // Nothing is handed over now (only a claim fills it, and it
                // was emptied under this lock): every idle worker gets one
                // job, LOW and BULK only as far as the reserve is kept free.
                let running = self.running();
                let room = (self.size - self.reserved).saturating_sub(running);
                let (n, background) = if room > 0 { (room, true) } else { (1, false) };
                let kinds = if self.store.shared() {
                    kinds()
                } else {
                    Vec::new()
                };
                let mut jobs = self
                    .store
                    .claim(&self.name, n, background, &kinds)
                    .await
                    .into_iter();
                if let Some(job) = jobs.next() {
                    self.busy(worker, &job, &now);
                    let others: Vec<Job> = jobs.collect();
                    let count = others.len();
                    lock(&self.handed).extend(others);
                    for _ in 0..count {
                        self.hand_over.notify_one();
                    }
                    return Some(job);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = &mut handed => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        self.give_back_handed();
                        return None;
                    }
                }
            }
        }
    }

    /// A job another worker claimed for this one, if there is one.
    fn take_handed(&self, worker: usize, now: &impl Fn() -> Instant) -> Option<Job> {
        let job = lock(&self.handed).pop_front()?;
        self.busy(worker, &job, now);
        Some(job)
    }

    fn busy(&self, worker: usize, job: &Job, now: &impl Fn() -> Instant) {
        if let Some(slot) = lock(&self.workers).get_mut(worker) {
            *slot = Some(Busy {
                task_id: job.task_id,
                since: now(),
            });
        }
    }

    /// Gives back what was claimed for workers that will not take it.
    fn give_back_handed(&self) {
        let left: Vec<Job> = lock(&self.handed).drain(..).collect();
        for job in left {
            self.give_back(job);
        }
    }

    /// Worker `worker` is free again.
    pub fn release(&self, worker: usize) {
        if let Some(slot) = lock(&self.workers).get_mut(worker) {
            *slot = None;
        }
        // A worker held back from background work may take it now. Any
        // waiting worker will do (the reserve counts the pool, not the
        // worker), so one is woken, not the herd.
        self.wake.notify_one();
    }

    /// The tasks its busy workers run.
    pub fn running_tasks(&self) -> Vec<Uuid> {
        lock(&self.workers)
            .iter()
            .flatten()
            .map(|b| b.task_id)
            .collect()
    }

    pub fn running(&self) -> usize {
        lock(&self.workers).iter().filter(|w| w.is_some()).count()
    }

    /// Queued jobs per priority, CRITICAL first.
    pub async fn depths(&self) -> [usize; 5] {
        self.store.depths(&self.name).await
    }

    pub fn workers(&self, now: Instant) -> Vec<WorkerStatus> {
        lock(&self.workers)
            .iter()
            .enumerate()
            .map(|(worker, busy)| WorkerStatus {
                worker,
                state: if busy.is_some() { "busy" } else { "idle" },
                task_id: busy.map(|b| b.task_id),
                busy_for_s: busy.map(|b| now.saturating_duration_since(b.since).as_secs_f64()),
            })
            .collect()
    }
}
