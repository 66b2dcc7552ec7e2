//! Locks that survive a panic elsewhere.
//!
//! A panic while a lock is held (a bug) poisons it. The data behind these
//! locks is plain bookkeeping that every change leaves consistent, so the
//! right answer is to keep using it as the last change left it, not to
//! invent one (run the job anyway, report nothing parked, allow the call).

use std::sync::{Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Locks `m`, poisoned or not.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Read-locks `l`, poisoned or not.
pub fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(PoisonError::into_inner)
}

/// Write-locks `l`, poisoned or not.
pub fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn a_poisoned_lock_gives_back_the_last_written_value() {
        let m = Arc::new(Mutex::new(1));
        let l = Arc::new(RwLock::new(1));
        let (held_m, held_l) = (m.clone(), l.clone());
        let panicked = std::thread::spawn(move || {
            let mut m = lock(&held_m);
            let mut l = write(&held_l);
            *m = 2;
            *l = 2;
            panic!("a bug while both are held");
        })
        .join();
        assert!(panicked.is_err() && m.is_poisoned() && l.is_poisoned());
        assert_eq!(*lock(&m), 2);
        assert_eq!(*read(&l), 2);
        *write(&l) = 3;
        assert_eq!(*read(&l), 3);
    }
}
