//! Locks that survive a panic elsewhere.
//!
//! A panic while a lock is held (a bug) poisons it. The data behind these
//! locks is plain bookkeeping that every change leaves consistent, so the
//! right answer is to keep using it as the last change left it, not to
//! invent one (run the job anyway, report nothing parked, allow the call).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
