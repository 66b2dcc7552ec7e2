//! Time, injected: everything that waits or compares times (retry timers,
//! breakers, aging) asks a [`Clock`], so tests drive time exactly with a
//! [`ManualClock`] instead of sleeping.
//!
//! Wasm deadlines are the exception: they are enforced by the engine's epoch
//! thread in real time, because they bound real CPU use.

use crate::sync::lock;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// A boxed future a clock returns from `sleep_until`.
pub type Sleep = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A source of time.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Monotonic now.
    fn now(&self) -> Instant;
    /// Wall-clock now, for timestamps clients see.
    fn wall(&self) -> SystemTime;
    /// Resolves once `now() >= deadline`.
    fn sleep_until(&self, deadline: Instant) -> Sleep;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        Box::pin(tokio::time::sleep_until(deadline.into()))
    }
}

/// A clock that moves only when told to ([`ManualClock::advance`]).
#[derive(Debug, Clone)]
pub struct ManualClock {
    start: Instant,
    wall_start: SystemTime,
    offset: Arc<Mutex<Duration>>,
    moved: watch::Sender<Duration>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            start: Instant::now(),
            wall_start: SystemTime::now(),
            offset: Arc::default(),
            moved: watch::channel(Duration::ZERO).0,
        }
    }
}

impl ManualClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves time forward and wakes every sleeper whose deadline passed.
    pub fn advance(&self, by: Duration) {
        let offset = {
            let mut offset = lock(&self.offset);
            *offset += by;
            *offset
        };
        self.moved.send_replace(offset);
    }

    fn offset(&self) -> Duration {
        *lock(&self.offset)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.start + self.offset()
    }

    fn wall(&self) -> SystemTime {
        self.wall_start + self.offset()
    }

    fn sleep_until(&self, deadline: Instant) -> Sleep {
        let mut moved = self.moved.subscribe();
        let start = self.start;
        Box::pin(async move {
            loop {
                let now = start + *moved.borrow_and_update();
                if now >= deadline {
                    return;
                }
                if moved.changed().await.is_err() {
                    // The clock is gone: nothing will ever advance it.
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_manual_sleeper_wakes_only_when_time_passes_its_deadline() {
        let clock = ManualClock::new();
        let deadline = clock.now() + Duration::from_secs(2);
        let sleeper = tokio::spawn(clock.sleep_until(deadline));
        clock.advance(Duration::from_millis(1999));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished());
        clock.advance(Duration::from_millis(1));
        assert!(sleeper.await.is_ok());
        assert_eq!(clock.now(), deadline);
    }
}
