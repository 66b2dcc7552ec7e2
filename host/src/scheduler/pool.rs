//! A category pool: its workers' slots over the store's queue.
//!
//! Each pool has `size` workers (tokio tasks driven by the scheduler) that
//! [`take`](CategoryPool::take) jobs by claiming them from the store
//! ([`Store::claim`]). The last `reserved` free workers are kept from
//! background work (LOW, BULK) so an urgent task does not wait behind a
//! pool saturated by BULK.

use crate::store::Store;
use crate::store::queue::Job;
use crate::sync::lock;
use serde::Serialize;
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
            {
                // One claim at a time per pool, so two workers cannot both
                // count the reserve as free and take it for background work.
                let _claiming = self.claiming.lock().await;
                if *stop.borrow() {
                    return None;
                }
                let background = self.running() + self.reserved < self.size;
                let kinds = if self.store.shared() {
                    kinds()
                } else {
                    Vec::new()
                };
                if let Some(job) = self
                    .store
                    .claim(&self.name, 1, background, &kinds)
                    .await
                    .pop()
                {
                    if let Some(slot) = lock(&self.workers).get_mut(worker) {
                        *slot = Some(Busy {
                            task_id: job.task_id,
                            since: now(),
                        });
                    }
                    return Some(job);
                }
            }
            tokio::select! {
                () = &mut notified => {}
                changed = stop.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                }
            }
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
