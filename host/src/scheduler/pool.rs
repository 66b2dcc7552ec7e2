//! A category pool: its run queue and its workers' slots.
//!
//! Each pool has `size` workers (tokio tasks driven by the scheduler) that
//! [`take`](CategoryPool::take) jobs from the pool's [`PriorityQueue`]. The
//! last `reserved` free workers are kept from background work (LOW, BULK) so
//! an urgent task does not wait behind a pool saturated by BULK.

use super::queue::{Job, PriorityQueue};
use serde::Serialize;
use std::sync::Mutex;
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
struct PoolState {
    queue: PriorityQueue,
    workers: Vec<Option<Busy>>,
}

#[derive(Debug)]
pub struct CategoryPool {
    pub name: String,
    pub size: usize,
    /// Free workers that LOW and BULK tasks may not take.
    pub reserved: usize,
    state: Mutex<PoolState>,
    wake: Notify,
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
    pub fn new(name: &str, size: usize) -> CategoryPool {
        CategoryPool {
            name: name.to_string(),
            size,
            reserved: usize::from(size >= 2),
            state: Mutex::new(PoolState {
                queue: PriorityQueue::default(),
                workers: vec![None; size],
            }),
            wake: Notify::new(),
        }
    }

    pub fn push(&self, job: Job) {
        if let Ok(mut s) = self.state.lock() {
            s.queue.push(job);
        }
        self.wake.notify_one();
    }

    /// Removes a queued job; false if it is not in this queue.
    pub fn remove(&self, task_id: Uuid) -> bool {
        self.state
            .lock()
            .map(|mut s| s.queue.remove(task_id))
            .unwrap_or(false)
    }

    /// Waits for the next job worker `worker` may run; `None` once `stop`
    /// turns true.
    pub async fn take(
        &self,
        worker: usize,
        now: impl Fn() -> Instant,
        stop: &mut watch::Receiver<bool>,
    ) -> Option<Job> {
        loop {
            let notified = self.wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state.lock().ok()?;
                if *stop.borrow() {
                    return None;
                }
                let running = s.workers.iter().filter(|w| w.is_some()).count();
                let background = running + self.reserved < self.size;
                if let Some(job) = s.queue.pop(background) {
                    if let Some(slot) = s.workers.get_mut(worker) {
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
        if let Ok(mut s) = self.state.lock()
            && let Some(slot) = s.workers.get_mut(worker)
        {
            *slot = None;
        }
        // A worker held back from background work may take it now.
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    pub fn running(&self) -> usize {
        self.state
            .lock()
            .map(|s| s.workers.iter().filter(|w| w.is_some()).count())
            .unwrap_or(0)
    }

    /// Queued jobs per priority, CRITICAL first.
    pub fn depths(&self) -> [usize; 5] {
        self.state
            .lock()
            .map(|s| s.queue.depths())
            .unwrap_or_default()
    }

    pub fn workers(&self, now: Instant) -> Vec<WorkerStatus> {
        let Ok(s) = self.state.lock() else {
            return Vec::new();
        };
        s.workers
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
