//! Tasks parked on open circuit breakers, kept out of the hot path.
//!
//! A task whose breaker refuses it waits here (it stays `queued`, with
//! `parked_on` set) instead of cycling through its pool. When the breaker
//! half-opens only as many tasks as it has trial slots go back to their
//! pools, oldest first, and one more each time a trial ends; when it
//! closes, all of them. So a half-open period costs a few attempts, not a
//! re-park of the whole backlog. Each plugin's parked tasks are counted:
//! past its `[limits] max_parked`, submissions of its kinds are refused
//! (503 with `Retry-After`) instead of piling up behind a breaker that does
//! not recover.

use crate::sync::lock;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use uuid::Uuid;

/// One parked task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parked {
    pub id: Uuid,
    /// The pool it goes back to.
    pub pool: String,
    /// The plugin (file stem) that would run it.
    pub plugin: String,
}

#[derive(Debug, Default)]
struct State {
    by_breaker: HashMap<String, VecDeque<Parked>>,
    by_plugin: HashMap<String, usize>,
}

/// Every parked task, by breaker and by plugin.
#[derive(Debug, Default)]
pub struct Parking {
    state: Mutex<State>,
}

impl Parking {
    pub fn park(&self, breaker: &str, parked: Parked) {
        let mut s = lock(&self.state);
        *s.by_plugin.entry(parked.plugin.clone()).or_default() += 1;
        s.by_breaker
            .entry(breaker.to_string())
            .or_default()
            .push_back(parked);
    }

    /// Takes the oldest `limit` tasks parked on `breaker` (all of them for
    /// `None`), to go back to their pools.
    pub fn take(&self, breaker: &str, limit: Option<usize>) -> Vec<Parked> {
        let mut s = lock(&self.state);
        let Some(queue) = s.by_breaker.get_mut(breaker) else {
            return Vec::new();
        };
        let n = limit.unwrap_or(usize::MAX).min(queue.len());
        let taken: Vec<Parked> = queue.drain(..n).collect();
        if queue.is_empty() {
            s.by_breaker.remove(breaker);
        }
        for p in &taken {
            if let Some(count) = s.by_plugin.get_mut(&p.plugin) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    s.by_plugin.remove(&p.plugin);
                }
            }
        }
        taken
    }

    /// Breakers with parked tasks.
    pub fn breakers(&self) -> Vec<String> {
        lock(&self.state).by_breaker.keys().cloned().collect()
    }

    /// Breakers with parked tasks of `plugin`.
    pub fn breakers_of(&self, plugin: &str) -> Vec<String> {
        lock(&self.state)
            .by_breaker
            .iter()
            .filter(|(_, q)| q.iter().any(|p| p.plugin == plugin))
            .map(|(b, _)| b.clone())
            .collect()
    }

    /// Tasks of `plugin` parked now.
    pub fn of_plugin(&self, plugin: &str) -> usize {
        lock(&self.state)
            .by_plugin
            .get(plugin)
            .copied()
            .unwrap_or(0)
    }

    /// Parked tasks per breaker.
    pub fn by_breaker(&self) -> HashMap<String, usize> {
        lock(&self.state)
            .by_breaker
            .iter()
            .map(|(b, q)| (b.clone(), q.len()))
            .collect()
    }

    /// Parked tasks per pool.
    pub fn by_pool(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for p in lock(&self.state).by_breaker.values().flatten() {
            *out.entry(p.pool.clone()).or_default() += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(plugin: &str) -> Parked {
        Parked {
            id: Uuid::now_v7(),
            pool: "batch".into(),
            plugin: plugin.into(),
        }
    }

    #[test]
    fn releases_are_bounded_oldest_first_and_counted_per_plugin() {
        let parking = Parking::default();
        let first = parked("flaky");
        parking.park("plugin:flaky@1.0.0", first.clone());
        for _ in 0..4 {
            parking.park("plugin:flaky@1.0.0", parked("flaky"));
        }
        parking.park("openai", parked("rag"));
        assert_eq!(parking.of_plugin("flaky"), 5);
        assert_eq!(parking.take("plugin:flaky@1.0.0", Some(1)), [first]);
        assert_eq!(parking.of_plugin("flaky"), 4);
        assert!(parking.take("plugin:flaky@1.0.0", Some(0)).is_empty());
        assert_eq!(parking.by_breaker().get("plugin:flaky@1.0.0"), Some(&4));
        assert_eq!(parking.take("plugin:flaky@1.0.0", None).len(), 4);
        assert_eq!(parking.of_plugin("flaky"), 0);
        assert_eq!(parking.breakers(), ["openai"]);
        assert_eq!(parking.breakers_of("rag"), ["openai"]);
        assert_eq!(parking.by_pool().get("batch"), Some(&1));
    }
}
