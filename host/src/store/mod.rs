//! Where tasks live: the [`Store`] boundary and its backends.
//!
//! Everything above (scheduler, API) talks to [`Store`]; a backend is one
//! file here: [`sqlite`] (the default: durable, in the data directory) and
//! [`memory`] (tests and benchmarks; lost on restart). Inserts are async
//! and return once the task is durable; reads come from memory; other
//! changes are written behind.
//!
//! The operations are async so that a backend may answer from a database
//! server (several daemons sharing one queue). One stays synchronous
//! because it is called where nothing may wait (a plugin slot freed in
//! `Drop`): [`Store::unclaim`], written behind (a lease bounds what a lost
//! one costs).
//!
//! The store owns the queue as well as the records: what may be claimed
//! and which retries are due are derived from the tasks' states (`ready`),
//! so a task is queued exactly when its record says so. The scheduler
//! claims work ([`Store::claim`]), moves tasks through their lifecycle
//! ([`Store::transition`], checked in [`lifecycle`]) and asks for due
//! retries ([`Store::due`]); it keeps no queue or timer of its own. A
//! Postgres backend for several daemons sharing one queue is a third
//! variant behind the same methods (claims with `FOR UPDATE SKIP LOCKED`).
//! The store knows nothing of plugins or WebAssembly.

#[cfg(test)]
mod conformance;
pub mod lifecycle;
pub mod memory;
pub mod node;
pub mod postgres;
pub mod queue;
mod ready;
pub mod record;
pub mod sqlite;

pub use lifecycle::{Transition, TransitionError};
pub use record::{AttemptPlugin, AttemptRecord, Progress, TaskChange, TaskRecord};

use crate::task::TaskStatus;
use std::path::PathBuf;
use std::time::SystemTime;
use uuid::Uuid;

/// What another daemon sharing the store did that this one must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteEvent {
    /// A task finished (whoever waits for it here hears of it).
    Finished(Uuid),
    /// Someone asked for a task to be cancelled (the daemon running its
    /// attempt stops it).
    CancelRequested(Uuid),
    /// This daemon's lease on a task it held was not renewed (the task was
    /// cancelled, or rescued by another daemon): an attempt still running
    /// here is stopped, and its end is recorded as an interruption, never
    /// as a cancellation (if the attempt was still this daemon's after
    /// all, the task runs again rather than ending).
    LeaseLost(Uuid),
}

/// Which tasks a listing returns.
#[derive(Debug, Clone, Default)]
pub struct TaskFilter {
    pub status: Option<TaskStatus>,
    pub kind: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The result of an insert.
#[derive(Debug, Clone)]
pub enum Inserted {
    /// A new task was recorded.
    New(TaskRecord),
    /// A task with the same idempotency key exists; it is returned instead.
    Existing(TaskRecord),
}

/// Why the store could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("could not open the task store {path}: {message}")]
    Open { path: PathBuf, message: String },
    /// A database server's store could not be reached or prepared.
    #[error("could not use the task store at {url}: {message}")]
    Connect { url: String, message: String },
    /// Writes fail (disk full, read-only, locked, corrupt): try later.
    #[error("the task store cannot accept work right now: {0}")]
    Unavailable(String),
}

/// The task store. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(memory::MemoryStore),
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PostgresStore),
}

impl Store {
    /// A store that keeps tasks in memory only.
    pub fn memory() -> Store {
        Store::Memory(memory::MemoryStore::default())
    }

    /// Records a task; returns once it is durable.
    pub async fn insert(&self, record: TaskRecord) -> Result<Inserted, StoreError> {
        match self {
            Store::Memory(m) => Ok(m.insert(record)),
            Store::Sqlite(s) => s.insert(record).await,
            Store::Postgres(p) => p.insert(record).await,
        }
    }

    /// Every task change from now on (inserts, status, progress, outcome).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<TaskChange> {
        match self {
            Store::Postgres(p) => p.subscribe(),
            Store::Memory(m) => m.subscribe(),
            Store::Sqlite(s) => s.memory().subscribe(),
        }
    }

    /// The task, `None` if there is none, or why the store cannot say (a
    /// database server away): what a reader that must tell "no such task"
    /// from "cannot look" asks, such as the API.
    pub async fn read(&self, id: Uuid) -> Result<Option<TaskRecord>, StoreError> {
        match self {
            Store::Postgres(p) => p.read(id).await,
            Store::Memory(m) => Ok(m.get(id)),
            Store::Sqlite(s) => Ok(s.memory().get(id)),
        }
    }

    /// The tasks `filter` selects, or why the store cannot say.
    pub async fn query(&self, filter: &TaskFilter) -> Result<Vec<TaskRecord>, StoreError> {
        match self {
            Store::Postgres(p) => p.query(filter).await,
            Store::Memory(m) => Ok(m.list(filter)),
            Store::Sqlite(s) => Ok(s.memory().list(filter)),
        }
    }

    /// The task, or `None` when there is none or the store cannot say (the
    /// error is logged and reported by health).
    pub async fn get(&self, id: Uuid) -> Option<TaskRecord> {
        match self {
            Store::Postgres(p) => p.get(id).await,
            Store::Memory(m) => m.get(id),
            Store::Sqlite(s) => s.memory().get(id),
        }
    }

    /// Applies `change` to the task and returns it as it now is: for what
    /// is not its lifecycle (progress, children, the tree's count); a
    /// state change goes through [`Store::transition`].
    pub async fn update(
        &self,
        id: Uuid,
        change: impl FnOnce(&mut TaskRecord) + Send,
    ) -> Option<TaskRecord> {
        match self {
            Store::Memory(m) => m.update(id, change),
            Store::Sqlite(s) => s.update(id, change),
            Store::Postgres(p) => p.update(id, change).await,
        }
    }

    /// Moves the task through its lifecycle ([`Transition`]); a transition
    /// the task's state does not allow, or an outcome of an attempt that is
    /// not its current one, is refused and changes nothing.
    pub async fn transition(
        &self,
        id: Uuid,
        transition: Transition,
    ) -> Result<(), TransitionError> {
        match self {
            Store::Memory(m) => m
                .try_update_then(id, |t| transition.apply(t), |_| ())
                .ok_or(TransitionError::NotFound(id))?,
            Store::Sqlite(s) => s.transition(id, transition),
            Store::Postgres(p) => p.transition(id, transition).await,
        }
    }

    pub async fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        match self {
            Store::Postgres(p) => p.list(filter).await,
            Store::Memory(m) => m.list(filter),
            Store::Sqlite(s) => s.memory().list(filter),
        }
    }

    /// Claims up to `n` tasks of pool `pool` that may run now, in the
    /// queue's order ([`queue`]: CRITICAL first, weighted fair between
    /// levels); with `background = false` LOW and BULK stay queued. A
    /// claimed task is not handed out again until it is given back
    /// ([`Store::unclaim`]) or changes state (starts, parks, ends).
    ///
    /// In a store daemons share, only tasks of `kinds` (what this daemon
    /// has loaded) are claimed: another daemon may serve the others. One
    /// daemon's own store hands out every kind (one that nobody serves
    /// then fails with `no_handler`).
    pub async fn claim(
        &self,
        pool: &str,
        n: usize,
        background: bool,
        kinds: &[String],
    ) -> Vec<queue::Job> {
        match self {
            Store::Postgres(p) => p.claim(pool, n, background, kinds).await,
            Store::Memory(m) => m.claim(pool, n, background),
            Store::Sqlite(s) => s.memory().claim(pool, n, background),
        }
    }

    /// The task of a job [`Store::claim`] handed to this daemon: what the
    /// claim read, where the backend kept it (a copy that went stale
    /// meanwhile is harmless, since its start is checked under the task's
    /// lock), else the task as it is now.
    pub async fn claimed(&self, id: Uuid) -> Option<TaskRecord> {
        match self {
            Store::Postgres(p) => p.claimed(id).await,
            Store::Memory(m) => m.get(id),
            Store::Sqlite(s) => s.memory().get(id),
        }
    }

    /// Gives a claimed task back to its queue (its plugin has no free slot,
    /// or its kind moved to another pool).
    pub fn unclaim(&self, id: Uuid) {
        match self {
            Store::Postgres(p) => p.unclaim(id),
            Store::Memory(m) => m.unclaim(id),
            Store::Sqlite(s) => s.memory().unclaim(id),
        }
    }

    /// Notified when a task of `pool` may be claimed.
    pub fn ready_waker(&self, pool: &str) -> std::sync::Arc<tokio::sync::Notify> {
        match self {
            Store::Postgres(p) => p.ready_waker(pool),
            Store::Memory(m) => m.ready_waker(pool),
            Store::Sqlite(s) => s.memory().ready_waker(pool),
        }
    }

    /// Notified when a task is filed for a retry.
    pub fn due_changed(&self) -> std::sync::Arc<tokio::sync::Notify> {
        match self {
            Store::Postgres(p) => p.due_changed(),
            Store::Memory(m) => m.due_changed(),
            Store::Sqlite(s) => s.memory().due_changed(),
        }
    }

    /// Claimable tasks of `pool` per priority, CRITICAL first.
    pub async fn depths(&self, pool: &str) -> [usize; 5] {
        match self {
            Store::Postgres(p) => p.depths(pool).await,
            Store::Memory(m) => m.depths(pool),
            Store::Sqlite(s) => s.memory().depths(pool),
        }
    }

    /// Tasks in `retry_wait` per pool.
    pub async fn waiting(&self) -> std::collections::HashMap<String, usize> {
        match self {
            Store::Postgres(p) => p.waiting().await,
            Store::Memory(m) => m.waiting(),
            Store::Sqlite(s) => s.memory().waiting(),
        }
    }

    /// Tasks in `retry_wait` whose next attempt is due at `now`, soonest
    /// first, and when the next one after them is due (to the microsecond:
    /// what a database server keeps).
    pub async fn due(&self, now: SystemTime) -> (Vec<Uuid>, Option<SystemTime>) {
        match self {
            Store::Postgres(p) => p.due(now).await,
            Store::Memory(m) => m.due(now),
            Store::Sqlite(s) => s.memory().due(now),
        }
    }

    /// Tasks in `retry_wait` or `failed` whose last attempt failed on
    /// `version` of plugin `name` (a rollback gives them another run).
    pub async fn failed_on(&self, name: &str, version: &str) -> Vec<Uuid> {
        match self {
            Store::Postgres(p) => p.failed_on(name, version).await,
            Store::Memory(m) => m.failed_on(name, version),
            Store::Sqlite(s) => s.memory().failed_on(name, version),
        }
    }

    /// Tasks not finished (what a restart must pick up), oldest first.
    pub async fn unfinished(&self) -> Vec<TaskRecord> {
        let all = match self {
            Store::Postgres(p) => return p.unfinished().await,
            Store::Memory(m) => m.all(),
            Store::Sqlite(s) => s.memory().all(),
        };
        all.into_iter()
            .filter(|t| !t.status.is_finished())
            .collect()
    }

    /// Deletes tasks that finished before `before`; returns how many.
    pub async fn prune(&self, before: SystemTime) -> Result<usize, StoreError> {
        let (ids, n) = match self {
            Store::Postgres(p) => return p.prune(before).await,
            Store::Memory(m) => {
                let ids = m.finished_before(before);
                let n = ids.len();
                ids.into_iter().for_each(|id| m.remove(id));
                return Ok(n);
            }
            Store::Sqlite(s) => {
                let ids = s.memory().finished_before(before);
                let n = ids.len();
                (ids, n)
            }
        };
        if let Store::Sqlite(s) = self
            && n > 0
        {
            s.delete(ids).await?;
            s.compact().await?;
        }
        Ok(n)
    }

    /// Returns free pages to the file system (SQLite; nothing to do in memory).
    pub async fn compact(&self) -> Result<(), StoreError> {
        match self {
            Store::Memory(_) | Store::Postgres(_) => Ok(()),
            Store::Sqlite(s) => s.compact().await,
        }
    }

    /// Returns once every change made so far is durable.
    pub async fn sync(&self) -> Result<(), StoreError> {
        match self {
            // PostgreSQL: every change is committed before it returns.
            Store::Memory(_) | Store::Postgres(_) => Ok(()),
            Store::Sqlite(s) => s.sync().await,
        }
    }

    /// A mark covering every change made so far, for [`Store::durable`].
    pub fn mark(&self) -> u64 {
        match self {
            Store::Memory(_) | Store::Postgres(_) => 0,
            Store::Sqlite(s) => s.mark(),
        }
    }

    /// Returns once every change up to `mark` has been handled by the
    /// backend (committed, or its failure logged): the cheap form of
    /// [`Store::sync`] for the hot path, with no error to report.
    pub async fn durable(&self, mark: u64) {
        if let Store::Sqlite(s) = self {
            s.durable(mark).await;
        }
    }

    /// Running attempts whose daemon stopped renewing their lease (a store
    /// that daemons share; nothing otherwise), for another daemon to rescue.
    pub async fn expired(&self) -> Vec<TaskRecord> {
        match self {
            Store::Postgres(p) => p.expired().await,
            Store::Memory(_) | Store::Sqlite(_) => Vec::new(),
        }
    }

    /// What this daemon tells the others sharing the store about itself
    /// (nothing to tell when it is alone).
    pub fn describe_node(&self, source: node::NodeInfoSource) {
        if let Store::Postgres(p) = self {
            p.describe_node(source);
        }
    }

    /// The daemons sharing the store (alive: a heartbeat within three
    /// leases); `here` alone when the store is this daemon's own.
    pub async fn nodes(&self, here: node::NodeInfo) -> Result<Vec<node::NodeInfo>, StoreError> {
        match self {
            Store::Postgres(p) => {
                let mut nodes = p.nodes().await?;
                match nodes.iter_mut().find(|n| n.id == here.id) {
                    Some(mine) => *mine = here,
                    None => nodes.push(here),
                }
                nodes.sort_by(|a, b| a.id.cmp(&b.id));
                Ok(nodes)
            }
            Store::Memory(_) | Store::Sqlite(_) => Ok(vec![here]),
        }
    }

    /// This daemon's name among those sharing the store.
    pub fn node_name(&self) -> &str {
        match self {
            Store::Postgres(p) => p.node(),
            Store::Memory(_) | Store::Sqlite(_) => "local",
        }
    }

    /// Whether several daemons may share this store.
    pub fn shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Whether this daemon leads the periodic work (due retries, rescue,
    /// retention), and when that changes: always where one daemon owns the
    /// store; in a shared one, the daemon holding the leader row.
    pub fn leadership(&self) -> tokio::sync::watch::Receiver<bool> {
        match self {
            Store::Postgres(p) => p.leadership(),
            Store::Memory(_) | Store::Sqlite(_) => {
                // A sender dropped at once leaves its last value: `true`.
                tokio::sync::watch::channel(true).1
            }
        }
    }

    /// The daemon leading the periodic work, by node id (`None` for one
    /// daemon's own store, or while nobody leads a shared one).
    pub async fn leader(&self) -> Result<Option<String>, StoreError> {
        match self {
            Store::Postgres(p) => p.leader().await,
            Store::Memory(_) | Store::Sqlite(_) => Ok(None),
        }
    }

    /// Hands the leadership over before the daemon stops.
    pub async fn resign(&self) {
        if let Store::Postgres(p) = self {
            p.resign().await;
        }
    }

    /// Other daemons' events, for a store that daemons share (`None` for
    /// one daemon's own store).
    pub fn remote_events(&self) -> Option<tokio::sync::broadcast::Receiver<RemoteEvent>> {
        match self {
            Store::Postgres(p) => Some(p.remote_events()),
            Store::Memory(_) | Store::Sqlite(_) => None,
        }
    }

    /// Asks whichever daemon runs the task's attempt to stop it (nothing to
    /// do where one daemon runs everything).
    pub async fn request_cancel(&self, id: Uuid) -> Result<(), StoreError> {
        match self {
            Store::Postgres(p) => p.request_cancel(id).await,
            Store::Memory(_) | Store::Sqlite(_) => Ok(()),
        }
    }

    /// `None` when healthy; the last write error while writes fail.
    pub fn degraded(&self) -> Option<String> {
        match self {
            Store::Memory(_) => None,
            Store::Sqlite(s) => s.degraded(),
            Store::Postgres(p) => p.degraded(),
        }
    }

    /// `memory`, `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self {
            Store::Memory(_) => "memory",
            Store::Sqlite(_) => "sqlite",
            Store::Postgres(_) => "postgres",
        }
    }
}
