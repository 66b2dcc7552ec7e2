//! The run queue of one pool: five priority levels, FIFO within a level,
//! weighted fair between levels.
//!
//! Policy (weighted fair queuing with finish tags, as in stride
//! scheduling): each level has a weight — CRITICAL 32, HIGH 16, NORMAL 8,
//! LOW 4, BULK 1 — and its head job carries a *tag*. The next job comes from
//! the level with the lowest tag (ties go to the more urgent level); the
//! level's next job is tagged `STRIDE / weight` later. A level that was
//! empty joins at the virtual time (the tag last served) plus its own
//! stride, so idleness earns no credit. Consequences:
//!
//! - a burst with one task per level runs most urgent first, and a new
//!   CRITICAL job is next unless something has waited a whole BULK stride;
//! - when levels are backlogged they get dispatches in proportion to their
//!   weights: 8 NORMAL per BULK, and under a constant CRITICAL flood BULK
//!   still gets one dispatch in 33, so nothing starves;
//! - background levels (LOW, BULK) can be held back from the last free
//!   workers ([`PriorityQueue::pop`] with `background = false`), which keeps
//!   room for urgent work while BULK saturates a pool.

use crate::task::Priority;
use std::collections::VecDeque;
use std::time::Instant;
use uuid::Uuid;

/// Dispatch weight of each level, most urgent first.
pub const WEIGHTS: [u64; 5] = [32, 16, 8, 4, 1];
const STRIDE: u64 = 1 << 20;

/// A queued task as the pool sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Job {
    pub task_id: Uuid,
    pub priority: Priority,
    /// When it entered this queue (for the queue-wait histogram).
    pub enqueued: Instant,
}

#[derive(Debug, Default)]
pub struct PriorityQueue {
    levels: [VecDeque<Job>; 5],
    tags: Tags,
}

/// The policy's state without the jobs: each level's tag and the virtual
/// time. [`PriorityQueue`] keeps it beside its jobs; a backend whose jobs
/// live in a database keeps one per pool and asks it which level is next
/// among the levels that have work.
#[derive(Debug, Clone, Default)]
pub struct Tags {
    pass: [u64; 5],
    virtual_time: u64,
}

impl Tags {
    /// Level `l` had no work and now has: it joins at the virtual time.
    pub fn join(&mut self, l: usize) {
        self.pass[l] = self.pass[l].max(self.virtual_time) + STRIDE / WEIGHTS[l];
    }

    /// The level to serve next among those `has_work` says have work (the
    /// first `allowed` levels only).
    pub fn pick(&self, allowed: usize, has_work: impl Fn(usize) -> bool) -> Option<usize> {
        (0..allowed.min(5))
            .filter(|&l| has_work(l))
            .min_by_key(|&l| (self.pass[l], l))
    }

    /// Level `l` was served one job; `more` when it still has work.
    pub fn served(&mut self, l: usize, more: bool) {
        self.virtual_time = self.pass[l];
        if more {
            self.pass[l] += STRIDE / WEIGHTS[l];
        }
    }
}

/// How many levels, most urgent first, a claim may take from: all five,
/// or without LOW and BULK (`background = false`).
pub fn allowed_levels(background: bool) -> usize {
    if background { 5 } else { 3 }
}

/// A priority's level, 0 (CRITICAL) to 4 (BULK).
pub fn level(p: Priority) -> usize {
    match p {
        Priority::Critical => 0,
        Priority::High => 1,
        Priority::Normal => 2,
        Priority::Low => 3,
        Priority::Bulk => 4,
    }
}

impl PriorityQueue {
    pub fn push(&mut self, job: Job) {
        let l = level(job.priority);
        if self.levels[l].is_empty() {
            self.tags.join(l);
        }
        self.levels[l].push_back(job);
    }

    /// The next job. With `background = false`, LOW and BULK jobs stay queued.
    pub fn pop(&mut self, background: bool) -> Option<Job> {
        let l = self
            .tags
            .pick(allowed_levels(background), |l| !self.levels[l].is_empty())?;
        let job = self.levels[l].pop_front()?;
        self.tags.served(l, !self.levels[l].is_empty());
        Some(job)
    }

    pub fn len(&self) -> usize {
        self.levels.iter().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queued jobs per level, most urgent first.
    pub fn depths(&self) -> [usize; 5] {
        std::array::from_fn(|l| self.levels[l].len())
    }

    /// Removes a job (a cancelled task); false if it is not queued here.
    pub fn remove(&mut self, task_id: Uuid) -> bool {
        for level in &mut self.levels {
            if let Some(i) = level.iter().position(|j| j.task_id == task_id) {
                level.remove(i);
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(p: Priority) -> Job {
        Job {
            task_id: Uuid::now_v7(),
            priority: p,
            enqueued: Instant::now(),
        }
    }

    fn drain(q: &mut PriorityQueue, n: usize) -> Vec<Priority> {
        (0..n)
            .filter_map(|_| q.pop(true))
            .map(|j| j.priority)
            .collect()
    }

    #[test]
    fn one_of_each_comes_out_most_urgent_first_and_fifo_within_a_level() {
        let mut q = PriorityQueue::default();
        let first_normal = job(Priority::Normal);
        q.push(first_normal);
        for p in [
            Priority::Bulk,
            Priority::Low,
            Priority::Normal,
            Priority::High,
            Priority::Critical,
        ] {
            q.push(job(p));
        }
        assert_eq!(
            drain(&mut q, 6),
            [
                Priority::Critical,
                Priority::High,
                Priority::Normal,
                Priority::Normal,
                Priority::Low,
                Priority::Bulk
            ]
        );
        let mut q = PriorityQueue::default();
        let (a, b) = (job(Priority::Normal), job(Priority::Normal));
        q.push(a);
        q.push(b);
        assert_eq!(q.pop(true).map(|j| j.task_id), Some(a.task_id));
    }

    #[test]
    fn bulk_progresses_under_a_constant_critical_flood() {
        let mut q = PriorityQueue::default();
        for _ in 0..10 {
            q.push(job(Priority::Bulk));
        }
        let mut bulk_done = 0;
        for _ in 0..330 {
            q.push(job(Priority::Critical)); // the flood never lets up
            if q.pop(true).map(|j| j.priority) == Some(Priority::Bulk) {
                bulk_done += 1;
            }
        }
        // Weight 1 of 33: about one dispatch in 33 goes to BULK.
        assert!((9..=11).contains(&bulk_done), "{bulk_done}");
    }

    #[test]
    fn backlogged_levels_share_by_weight() {
        let mut q = PriorityQueue::default();
        for _ in 0..90 {
            q.push(job(Priority::Normal));
            q.push(job(Priority::Bulk));
        }
        let first = drain(&mut q, 90);
        let bulk = first.iter().filter(|p| **p == Priority::Bulk).count();
        assert_eq!(bulk, 10, "8 NORMAL per BULK: {first:?}");
        assert_eq!(first[..8], [Priority::Normal; 8]);
    }

    #[test]
    fn a_new_critical_job_overtakes_a_bulk_backlog() {
        let mut q = PriorityQueue::default();
        for _ in 0..100 {
            q.push(job(Priority::Bulk));
        }
        drain(&mut q, 50);
        q.push(job(Priority::Critical));
        assert_eq!(q.pop(true).map(|j| j.priority), Some(Priority::Critical));
    }

    #[test]
    fn background_levels_can_be_held_back() {
        let mut q = PriorityQueue::default();
        q.push(job(Priority::Bulk));
        assert_eq!(q.pop(false), None);
        q.push(job(Priority::Normal));
        assert_eq!(q.pop(false).map(|j| j.priority), Some(Priority::Normal));
        assert_eq!(q.pop(true).map(|j| j.priority), Some(Priority::Bulk));
        assert!(q.is_empty());
    }
}
