//! Where tasks live: the [`Store`] boundary and its backends.
//!
//! Everything above (scheduler, API) talks to [`Store`]; a backend is one
//! file here. Today the only backend is [`memory`] (tasks are lost on
//! restart); the durable SQLite backend slots in behind the same methods.
//! The store knows nothing of plugins or WebAssembly: it keeps
//! [`TaskRecord`]s and enforces idempotency keys.

pub mod memory;
pub mod record;

pub use record::{AttemptPlugin, AttemptRecord, Progress, TaskRecord};

use crate::task::TaskStatus;
use uuid::Uuid;

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

/// The task store. Cheap to clone.
#[derive(Debug, Clone)]
pub enum Store {
    Memory(memory::MemoryStore),
}

impl Store {
    /// A store that keeps tasks in memory only.
    pub fn memory() -> Store {
        Store::Memory(memory::MemoryStore::default())
    }

    pub fn insert(&self, record: TaskRecord) -> Inserted {
        match self {
            Store::Memory(m) => m.insert(record),
        }
    }

    pub fn get(&self, id: Uuid) -> Option<TaskRecord> {
        match self {
            Store::Memory(m) => m.get(id),
        }
    }

    /// Applies `change` to the task and returns it as it now is.
    pub fn update(&self, id: Uuid, change: impl FnOnce(&mut TaskRecord)) -> Option<TaskRecord> {
        match self {
            Store::Memory(m) => m.update(id, change),
        }
    }

    pub fn list(&self, filter: &TaskFilter) -> Vec<TaskRecord> {
        match self {
            Store::Memory(m) => m.list(filter),
        }
    }
}
