//! Across daemons sharing one store (PostgreSQL): what another daemon did
//! that this one must act on, from the store's [`RemoteEvent`]s.

use super::{AttemptRunner, Scheduler};
use crate::store::RemoteEvent;
use crate::sync::lock;

impl<R: AttemptRunner> Scheduler<R> {
    /// Acts on what other daemons sharing the store did: whoever waits here
    /// for a task that finished there hears of it, and an attempt running
    /// here that was cancelled there is stopped.
    pub(super) async fn remote_loop(
        self,
        mut events: tokio::sync::broadcast::Receiver<RemoteEvent>,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        let mut stop = self.inner.stop.subscribe();
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    Ok(event) => self.on_remote(event),
                    // A waiter that missed its wake-up reads the task again
                    // when its wait times out.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                },
                _ = stop.changed() => return,
            }
        }
    }

    /// Acts on one event.
    pub(super) fn on_remote(&self, event: RemoteEvent) {
        match event {
            RemoteEvent::Finished(id) => self.wake_waiters(id),
            RemoteEvent::CancelRequested(id) => {
                let token = lock(&self.inner.running).get(&id).cloned();
                if let Some(token) = token {
                    token.cancel();
                }
            }
            RemoteEvent::LeaseLost(id) => {
                let token = lock(&self.inner.running).get(&id).cloned();
                if let Some(token) = token {
                    lock(&self.inner.lease_lost).insert(id);
                    token.cancel();
                }
            }
        }
    }
}
