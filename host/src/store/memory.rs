//! The in-memory backend: a map of records behind one lock. Task ids are
//! UUIDv7 (time-ordered), so the `BTreeMap` keeps tasks in creation order
//! and listings are newest-first without sorting.

use super::queue::Job;
use super::ready::{Facts, Index};
use super::record::TaskChange;
use super::{Inserted, TaskFilter, TaskRecord};
use crate::task::TaskStatus;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;
use tokio::sync::{Notify, broadcast};
use uuid::Uuid;

/// Task changes a slow live view may fall behind by before it skips some.
const CHANGES_BUFFERED: usize = 4096;

#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<RwLock<Inner>>,
    /// Every insert and change, for live views; built only while someone
    /// listens.
    changes: broadcast::Sender<TaskChange>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            inner: Arc::default(),
            changes: broadcast::channel(CHANGES_BUFFERED).0,
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    tasks: BTreeMap<Uuid, TaskRecord>,
    idempotency: HashMap<String, Uuid>,
    /// The queue: what may be claimed, what is due when.
    index: Index,
}

impl MemoryStore {
    /// The tasks, for reading. A panic while they were held (a bug) leaves
    /// them as its last completed change made them: the store keeps
    /// answering from that, never with a made-up answer (a task it did not
    /// store reported as stored, an empty listing).
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        crate::sync::read(&self.inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        crate::sync::write(&self.inner)
    }

    /// Records a task; a child task is linked to its parent (added to the
    /// parent's `children`) in the same step.
    pub fn insert(&self, record: TaskRecord) -> Inserted {
        self.insert_as(record, None).0
    }

    /// Records a task that may not be claimed before [`Self::publish`]
    /// (a backend's insert that is not yet durable). `seq` numbers the
    /// changes under the lock: the child's, then the parent's as linking
    /// left it (returned for the backend to write with the child).
    pub fn insert_pending(
        &self,
        record: TaskRecord,
        seq: &dyn Fn() -> i64,
    ) -> (Inserted, Option<(TaskRecord, i64)>) {
        self.insert_as(record, Some(seq))
    }

    /// Undoes the link of a child whose insert was refused.
    pub fn unlink(&self, parent: Uuid, child: Uuid) {
        self.update(parent, |p| p.children.retain(|c| *c != child));
    }

    /// A pending insert is durable: its task may be claimed now.
    pub fn publish(&self, id: Uuid) {
        let mut guard = self.write();
        let Inner { tasks, index, .. } = &mut *guard;
        if let Some(record) = tasks.get(&id) {
            index.publish(id, &Facts::of(record));
        }
    }

    fn insert_as(
        &self,
        record: TaskRecord,
        pending: Option<&dyn Fn() -> i64>,
    ) -> (Inserted, Option<(TaskRecord, i64)>) {
        let mut inner = self.write();
        if let Some(key) = &record.idempotency_key {
            if let Some(existing) = inner
                .idempotency
                .get(key)
                .and_then(|id| inner.tasks.get(id))
            {
                return (Inserted::Existing(existing.clone()), None);
            }
            inner.idempotency.insert(key.clone(), record.task_id);
        }
        let parent = record
            .parent_id
            .and_then(|p| inner.tasks.get_mut(&p))
            .map(|p| {
                if !p.children.contains(&record.task_id) {
                    p.children.push(record.task_id);
                }
                self.announce(p);
                (p.clone(), pending.map_or(0, |seq| seq()))
            });
        if pending.is_some() {
            inner.index.hold_pending(record.task_id);
        }
        inner
            .index
            .changed(record.task_id, None, Some(&Facts::of(&record)));
        inner.tasks.insert(record.task_id, record.clone());
        self.announce(&record);
        (Inserted::New(record), parent)
    }

    /// Live views of task changes (sent under the store's lock, so in order).
    pub fn subscribe(&self) -> broadcast::Receiver<TaskChange> {
        self.changes.subscribe()
    }

    fn announce(&self, record: &TaskRecord) {
        if self.changes.receiver_count() > 0 {
            let _ = self.changes.send(TaskChange::from(record));
        }
    }

    pub fn get(&self, id: Uuid) -> Option<TaskRecord> {
        self.read().tasks.get(&id).cloned()
    }

    pub fn update(&self, id: Uuid, change: impl FnOnce(&mut TaskRecord)) -> Option<TaskRecord> {
        self.update_then(id, change, TaskRecord::clone)
    }

    /// Applies `change`, then reads the changed record with `then` under
    /// the same lock (so a writer sees changes in the order they happened).
    pub fn update_then<R>(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut TaskRecord),
        then: impl FnOnce(&TaskRecord) -> R,
    ) -> Option<R> {
        let mut guard = self.write();
        let Inner { tasks, index, .. } = &mut *guard;
        let record = tasks.get_mut(&id)?;
        let before = Facts::of(record);
        change(record);
        index.changed(id, Some(&before), Some(&Facts::of(record)));
        self.announce(record);
        Some(then(record))
    }

    /// Applies `change` unless it refuses, then reads the changed record
    /// with `then` under the same lock. A refused change is not announced
    /// (it changed nothing). `None` when there is no such task.
    pub fn try_update_then<R, E>(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut TaskRecord) -> Result<(), E>,
        then: impl FnOnce(&TaskRecord) -> R,
    ) -> Option<Result<R, E>> {
        let mut guard = self.write();
        let Inner { tasks, index, .. } = &mut *guard;
        let record = tasks.get_mut(&id)?;
        let before = Facts::of(record);
        if let Err(e) = change(record) {
            return Some(Err(e));
        }
        index.changed(id, Some(&before), Some(&Facts::of(record)));
        self.announce(record);
        Some(Ok(then(record)))
    }

    /// Forgets a task (a refused insert, or retention).
    pub fn remove(&self, id: Uuid) {
        let mut inner = self.write();
        let Some(record) = inner.tasks.remove(&id) else {
            return;
        };
        inner.index.changed(id, Some(&Facts::of(&record)), None);
        if let Some(key) = record.idempotency_key {
            inner.idempotency.remove(&key);
        }
    }

    /// Takes up to `n` tasks of `pool` that may run now, most urgent first
    /// (see [`super::queue`]); with `background = false`, LOW and BULK stay.
    /// A claimed task is not claimed again unless given back
    /// ([`Self::unclaim`]); it leaves the claim when it starts, parks, or
    /// ends.
    pub fn claim(&self, pool: &str, n: usize, background: bool) -> Vec<Job> {
        self.write().index.claim(pool, n, background)
    }

    /// Gives a claimed task back to its queue.
    pub fn unclaim(&self, id: Uuid) {
        let mut guard = self.write();
        let Inner { tasks, index, .. } = &mut *guard;
        index.unclaim(id, tasks.get(&id).map(Facts::of).as_ref());
    }

    /// Notified when a task of `pool` may be claimed.
    pub fn ready_waker(&self, pool: &str) -> Arc<Notify> {
        self.write().index.waker(pool)
    }

    /// Notified when a retry is filed.
    pub fn due_changed(&self) -> Arc<Notify> {
        self.read().index.due_changed()
    }

    /// Claimable tasks of `pool` per priority, CRITICAL first.
    pub fn depths(&self, pool: &str) -> [usize; 5] {
        self.read().index.depths(pool)
    }

    /// Tasks in `retry_wait`, per pool.
    pub fn waiting(&self) -> HashMap<String, usize> {
        self.read().index.waiting()
    }

    /// Retries due at `now`, and when the next one after them is due.
    pub fn due(&self, now: SystemTime) -> (Vec<Uuid>, Option<SystemTime>) {
        self.read().index.due(now)
    }

    /// Tasks in `retry_wait` or `failed` whose last attempt failed on
    /// `version` of plugin `name`, oldest first: read under the lock, no
    /// record copied.
    pub fn failed_on(&self, name: &str, version: &str) -> Vec<Uuid> {
        self.read()
            .tasks
            .values()
            .filter(|t| matches!(t.status, TaskStatus::RetryWait | TaskStatus::Failed))
            .filter(|t| {
                t.attempt_log.last().is_some_and(|a| {
                    a.error.is_some() && a.plugin.name == name && a.plugin.version == version
                })
            })
            .map(|t| t.task_id)
            .collect()
    }

    /// Every task, oldest first.
    pub fn all(&self) -> Vec<TaskRecord> {
        self.read().tasks.values().cloned().collect()
    }

    /// Ids of tasks that finished before `before`.
    pub fn finished_before(&self, before: std::time::SystemTime) -> Vec<Uuid> {
        self.read()
            .tasks
            .values()
            .filter(|t| t.finished_at.is_some_and(|f| f < before))
            .map(|t| t.task_id)
            .collect()
    }

    pub fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        let inner = self.read();
        inner
            .tasks
            .values()
            .rev()
            .filter(|t| filter.status.is_none_or(|s| t.status == s))
            .filter(|t| filter.kind.as_ref().is_none_or(|k| &t.kind == k))
            .take(filter.limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::{Priority, TaskStatus};
    use std::time::SystemTime;

    fn record(kind: &str, key: Option<&str>) -> TaskRecord {
        TaskRecord {
            idempotency_key: key.map(str::to_string),
            ..TaskRecord::new(
                kind,
                serde_json::json!({}),
                Priority::Normal,
                SystemTime::now(),
            )
        }
    }

    #[test]
    fn an_idempotency_key_returns_the_first_task() {
        let store = MemoryStore::default();
        let first = record("echo", Some("k1"));
        let first_id = first.task_id;
        assert!(matches!(store.insert(first), Inserted::New(_)));
        match store.insert(record("echo", Some("k1"))) {
            Inserted::Existing(t) => assert_eq!(t.task_id, first_id),
            Inserted::New(_) => panic!("a duplicate key made a second task"),
        }
    }

    #[test]
    fn listings_are_newest_first_and_filtered() {
        let store = MemoryStore::default();
        let a = record("echo", None);
        let b = record("busy", None);
        let c = record("echo", None);
        let (a_id, c_id) = (a.task_id, c.task_id);
        for r in [a, b, c] {
            store.insert(r);
        }
        store.update(a_id, |t| t.status = TaskStatus::Succeeded);
        let echo = store.list(&TaskFilter {
            kind: Some("echo".into()),
            limit: 10,
            ..TaskFilter::default()
        });
        assert_eq!(
            echo.iter().map(|t| t.task_id).collect::<Vec<_>>(),
            vec![c_id, a_id]
        );
        let done = store.list(&TaskFilter {
            status: Some(TaskStatus::Succeeded),
            limit: 10,
            ..TaskFilter::default()
        });
        assert_eq!(done.len(), 1);
    }

    #[test]
    fn after_a_panic_under_its_lock_the_store_still_stores_what_it_says() {
        let store = std::sync::Arc::new(MemoryStore::default());
        let kept = record("echo", Some("k"));
        store.insert(kept.clone());
        let held = store.clone();
        let poisoned = std::thread::spawn(move || {
            held.update(kept.task_id, |_| panic!("a bug inside a change"));
        })
        .join();
        assert!(poisoned.is_err());
        let new = record("echo", None);
        assert!(matches!(store.insert(new.clone()), Inserted::New(_)));
        assert!(store.get(new.task_id).is_some(), "acknowledged, so stored");
        assert!(matches!(
            store.insert(record("echo", Some("k"))),
            Inserted::Existing(_)
        ));
        assert_eq!(store.all().len(), 2);
    }
}
