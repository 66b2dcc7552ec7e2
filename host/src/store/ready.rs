//! The store's queue: which tasks may be claimed now, and which retries are
//! due when.
//!
//! The index is derived from the tasks' states and kept beside them under
//! the store's lock, so it can never disagree with them: every change of a
//! record passes through [`Index::changed`], which files the task by what
//! it now is.
//!
//! - *ready*: `queued`, not parked on a breaker, not claimed, not pending,
//!   in its pool's [`PriorityQueue`] (the claim policy: five levels,
//!   weighted fair between them);
//! - *claimed*: taken by a worker ([`Index::claim`]) and not yet started,
//!   parked or given back ([`Index::unclaim`]);
//! - *pending*: inserted but not yet durable (a SQLite insert before its
//!   commit): no worker may run what the store could still refuse;
//! - *due*: `retry_wait`, by the time its next attempt is due.
//!
//! A task leaves every set when it changes into something else (starts,
//! parks, is cancelled, finishes), so the producer never has to tidy up.

use super::queue::{Job, PriorityQueue};
use super::record::TaskRecord;
use crate::task::{Priority, TaskStatus};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::sync::Notify;
use uuid::Uuid;

/// What the index needs to know of a record, before and after a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    status: TaskStatus,
    parked: bool,
    due: Option<SystemTime>,
    pool: Option<String>,
    priority: Priority,
}

impl Facts {
    pub fn of(t: &TaskRecord) -> Facts {
        Facts {
            status: t.status,
            parked: t.parked_on.is_some(),
            due: (t.status == TaskStatus::RetryWait)
                .then_some(t.next_attempt_at)
                .flatten(),
            pool: t.category.clone(),
            priority: t.priority,
        }
    }

    /// Queued and not waiting on a breaker: claimable unless held.
    fn queued(&self) -> bool {
        self.status == TaskStatus::Queued && !self.parked
    }
}

#[derive(Debug, Default)]
pub struct Index {
    ready: HashMap<String, PriorityQueue>,
    claimed: HashSet<Uuid>,
    pending: HashSet<Uuid>,
    due: BTreeSet<(SystemTime, Uuid)>,
    /// Retries waiting per pool.
    due_in: HashMap<String, usize>,
    wakers: HashMap<String, Arc<Notify>>,
    due_changed: Arc<Notify>,
}

impl Index {
    /// Files task `id` by what it is now (`after`, `None` once deleted),
    /// given what it was (`before`, `None` when new).
    pub fn changed(&mut self, id: Uuid, before: Option<&Facts>, after: Option<&Facts>) {
        if before == after {
            return;
        }
        let held = self.claimed.contains(&id) || self.pending.contains(&id);
        let was_ready = before.is_some_and(Facts::queued) && !held;
        if !after.is_some_and(Facts::queued) {
            self.claimed.remove(&id);
            self.pending.remove(&id);
        }
        let is_ready = after.is_some_and(Facts::queued) && !held;
        let moved = before.and_then(|b| b.pool.as_ref()) != after.and_then(|a| a.pool.as_ref());
        if was_ready
            && (!is_ready || moved)
            && let Some(pool) = before.and_then(|b| b.pool.as_ref())
            && let Some(queue) = self.ready.get_mut(pool)
        {
            queue.remove(id);
        }
        if is_ready
            && (!was_ready || moved)
            && let Some(after) = after
        {
            self.push(id, after);
        }
        if let Some((due, pool)) = before.and_then(|b| Some((b.due?, b.pool.as_ref()?)))
            && self.due.remove(&(due, id))
            && let Some(n) = self.due_in.get_mut(pool)
        {
            *n = n.saturating_sub(1);
        }
        if let Some((due, pool)) = after.and_then(|a| Some((a.due?, a.pool.clone()?))) {
            self.due.insert((due, id));
            *self.due_in.entry(pool).or_default() += 1;
            self.due_changed.notify_one();
        }
    }

    fn push(&mut self, id: Uuid, facts: &Facts) {
        let Some(pool) = &facts.pool else {
            return;
        };
        self.ready.entry(pool.clone()).or_default().push(Job {
            task_id: id,
            priority: facts.priority,
            enqueued: Instant::now(),
        });
        self.waker(pool).notify_one();
    }

    /// A new task that must not run before `publish` (not yet durable).
    pub fn hold_pending(&mut self, id: Uuid) {
        self.pending.insert(id);
    }

    /// A pending task became durable: it may run now.
    pub fn publish(&mut self, id: Uuid, facts: &Facts) {
        if self.pending.remove(&id) && facts.queued() && !self.claimed.contains(&id) {
            self.push(id, facts);
        }
    }

    /// Takes up to `n` ready tasks of `pool` in the claim policy's order;
    /// with `background = false`, LOW and BULK stay queued.
    pub fn claim(&mut self, pool: &str, n: usize, background: bool) -> Vec<Job> {
        let Some(queue) = self.ready.get_mut(pool) else {
            return Vec::new();
        };
        let jobs: Vec<Job> = std::iter::from_fn(|| queue.pop(background))
            .take(n)
            .collect();
        self.claimed.extend(jobs.iter().map(|j| j.task_id));
        jobs
    }

    /// Gives a claimed task back: it is ready again (at the back of its level).
    pub fn unclaim(&mut self, id: Uuid, facts: Option<&Facts>) {
        if self.claimed.remove(&id)
            && let Some(facts) = facts
            && facts.queued()
            && !self.pending.contains(&id)
        {
            self.push(id, facts);
        }
    }

    /// Notified when a task of `pool` becomes ready.
    pub fn waker(&mut self, pool: &str) -> Arc<Notify> {
        self.wakers.entry(pool.to_string()).or_default().clone()
    }

    /// Notified when a retry is filed.
    pub fn due_changed(&self) -> Arc<Notify> {
        self.due_changed.clone()
    }

    /// Ready tasks of `pool` per priority, CRITICAL first.
    pub fn depths(&self, pool: &str) -> [usize; 5] {
        self.ready
            .get(pool)
            .map(PriorityQueue::depths)
            .unwrap_or_default()
    }

    /// Retries waiting, per pool.
    pub fn waiting(&self) -> HashMap<String, usize> {
        self.due_in
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(p, n)| (p.clone(), *n))
            .collect()
    }

    /// Retries due at `now`, soonest first, and when the next one after
    /// them is due.
    pub fn due(&self, now: SystemTime) -> (Vec<Uuid>, Option<SystemTime>) {
        let mut due = Vec::new();
        for (at, id) in &self.due {
            if *at > now {
                return (due, Some(*at));
            }
            due.push(*id);
        }
        (due, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn facts(status: TaskStatus, priority: Priority) -> Facts {
        Facts {
            status,
            parked: false,
            due: None,
            pool: Some("batch".into()),
            priority,
        }
    }

    #[test]
    fn a_task_is_claimable_once_and_only_while_queued() {
        let mut index = Index::default();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let queued = facts(TaskStatus::Queued, Priority::Normal);
        index.changed(a, None, Some(&queued));
        index.changed(b, None, Some(&queued));
        index.changed(
            b,
            Some(&queued),
            Some(&facts(TaskStatus::Cancelled, Priority::Normal)),
        );
        let claimed = index.claim("batch", 10, true);
        assert_eq!(claimed.iter().map(|j| j.task_id).collect::<Vec<_>>(), [a]);
        assert!(index.claim("batch", 10, true).is_empty(), "claimed once");
        index.unclaim(a, Some(&queued));
        assert_eq!(index.claim("batch", 1, true).len(), 1, "given back");
        // Started: gone from every set; a retry files it by its due time.
        let running = facts(TaskStatus::Running, Priority::Normal);
        index.changed(a, Some(&queued), Some(&running));
        index.unclaim(a, Some(&running));
        assert!(index.claim("batch", 1, true).is_empty());
        let now = SystemTime::now();
        let waiting = Facts {
            due: Some(now + Duration::from_secs(2)),
            ..facts(TaskStatus::RetryWait, Priority::Normal)
        };
        index.changed(a, Some(&running), Some(&waiting));
        assert_eq!(index.due(now), (vec![], Some(now + Duration::from_secs(2))));
        assert_eq!(index.due(now + Duration::from_secs(2)).0, [a]);
        assert_eq!(index.waiting().get("batch"), Some(&1));
        index.changed(a, Some(&waiting), Some(&queued));
        assert!(index.waiting().is_empty());
        assert_eq!(index.depths("batch"), [0, 0, 1, 0, 0]);
    }

    #[test]
    fn a_pending_insert_runs_only_once_published_and_a_parked_task_never() {
        let mut index = Index::default();
        let id = Uuid::now_v7();
        let queued = facts(TaskStatus::Queued, Priority::High);
        index.hold_pending(id);
        index.changed(id, None, Some(&queued));
        assert!(index.claim("batch", 1, true).is_empty());
        index.publish(id, &queued);
        let parked = Facts {
            parked: true,
            ..queued.clone()
        };
        index.changed(id, Some(&queued), Some(&parked));
        assert!(index.claim("batch", 1, true).is_empty(), "parked");
        index.changed(id, Some(&parked), Some(&queued));
        assert_eq!(index.claim("batch", 1, false).len(), 1, "unparked");
    }
}
