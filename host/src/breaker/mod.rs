//! Circuit breakers: stop sending work to something that keeps failing,
//! then probe it carefully before trusting it again.
//!
//! Semantics follow resilience4j, adapted to the counts the original system
//! used: a [`Breaker`] is **closed** until `failures` consecutive failures,
//! then **open** for `open_s` seconds, then **half-open**: it admits at most
//! `half_open_trials` trial calls; any trial failure opens it again, and
//! `half_open_trials` successes close it. Time comes from the injected
//! [`Clock`].
//!
//! The scheduler asks [`Breaker::admit`] before it starts an attempt that
//! would use the breaker's dependency and *parks* the task while the answer
//! is [`Admission::Rejected`] (no attempt is charged). [`BreakerSet`] holds
//! the named breakers from the config (`openai`, `vectors`, `browser`, ...)
//! and one automatic breaker per plugin version.

use crate::clock::Clock;
use crate::sync::{lock, read, write};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::broadcast;

/// How one breaker trips and recovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failures: u32,
    /// Seconds it stays open before it lets trials through.
    pub open_s: u64,
    /// Trial calls admitted while half-open; as many successes close it.
    pub half_open_trials: u32,
    /// Outbound hosts (patterns as in a manifest's `http` list) whose calls
    /// this breaker guards; plugins granted any of them depend on it.
    pub hosts: Vec<String>,
    /// Host capabilities it guards (e.g. `vectors`); plugins granted one
    /// depend on it.
    pub capabilities: Vec<String>,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failures: 5,
            open_s: 60,
            half_open_trials: 1,
            hosts: Vec::new(),
            capabilities: Vec::new(),
        }
    }
}

impl BreakerConfig {
    /// The defaults of the original system: openai 5 / 60 s, vectors 3 / 30 s,
    /// browser 5 / 45 s.
    pub fn defaults() -> BTreeMap<String, BreakerConfig> {
        let named = |failures, open_s, capabilities: &[&str]| BreakerConfig {
            failures,
            open_s,
            capabilities: capabilities.iter().map(|c| c.to_string()).collect(),
            ..BreakerConfig::default()
        };
        BTreeMap::from([
            ("openai".to_string(), named(5, 60, &[])),
            ("vectors".to_string(), named(3, 30, &["vectors"])),
            ("browser".to_string(), named(5, 45, &[])),
        ])
    }
}

/// The state of a breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Closed,
    Open,
    HalfOpen,
}

/// What a breaker says to a call about to start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Allowed,
    /// Half-open: go ahead as one of the trial calls; report its outcome.
    Trial,
    /// Open (or half-open with all trials out): do not call. The breaker
    /// announces its next transition on [`BreakerSet::transitions`].
    Rejected,
}

/// A state change, announced to whoever parks work on breakers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    pub breaker: String,
    pub from: State,
    pub to: State,
}

#[derive(Debug)]
struct Inner {
    state: State,
    consecutive_failures: u32,
    opened_at: Option<Instant>,
    trials_out: u32,
    trial_successes: u32,
    opened_count: u64,
    successes: u64,
    failures: u64,
    rejected: u64,
}

/// One breaker.
#[derive(Debug)]
pub struct Breaker {
    name: String,
    config: BreakerConfig,
    clock: Arc<dyn Clock>,
    inner: Mutex<Inner>,
}

/// A breaker as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    pub name: String,
    pub state: State,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    pub open_s: u64,
    /// Seconds until an open breaker lets trials through.
    pub half_open_in_s: Option<f64>,
    pub times_opened: u64,
    pub successes: u64,
    pub failures: u64,
    /// Calls turned away (tasks parked) while open.
    pub rejected: u64,
}

impl Breaker {
    pub fn new(name: impl Into<String>, config: BreakerConfig, clock: Arc<dyn Clock>) -> Breaker {
        Breaker {
            name: name.into(),
            config,
            clock,
            inner: Mutex::new(Inner {
                state: State::Closed,
                consecutive_failures: 0,
                opened_at: None,
                trials_out: 0,
                trial_successes: 0,
                opened_count: 0,
                successes: 0,
                failures: 0,
                rejected: 0,
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// The counts. A panic while they were held (a bug) leaves them as
    /// the last update made them: the breaker keeps working from those
    /// rather than falling back to an answer of its own.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        lock(&self.inner)
    }

    /// When an open breaker will let trials through.
    pub fn half_open_at(&self) -> Option<Instant> {
        let inner = self.lock();
        match inner.state {
            State::Open => inner.opened_at.map(|t| t + self.open_for()),
            _ => None,
        }
    }

    fn open_for(&self) -> Duration {
        Duration::from_secs(self.config.open_s)
    }

    /// Asks to start a call. Moves an open breaker whose time is up to
    /// half-open. Returns the transition it made, if any.
    pub fn admit(&self) -> (Admission, Option<Transition>) {
        let mut inner = self.lock();
        let mut transition = None;
        if inner.state == State::Open
            && inner
                .opened_at
                .is_some_and(|t| self.clock.now() >= t + self.open_for())
        {
            transition = Some(self.set(&mut inner, State::HalfOpen));
        }
        let admission = match inner.state {
            State::Closed => Admission::Allowed,
            State::HalfOpen if inner.trials_out < self.config.half_open_trials.max(1) => {
                inner.trials_out += 1;
                Admission::Trial
            }
            State::HalfOpen | State::Open => {
                inner.rejected += 1;
                Admission::Rejected
            }
        };
        (admission, transition)
    }

    /// Gives back a trial slot taken by [`admit`](Self::admit) for a call
    /// that never reached the dependency.
    pub fn abandon_trial(&self) {
        let mut inner = self.lock();
        if inner.state == State::HalfOpen {
            inner.trials_out = inner.trials_out.saturating_sub(1);
        }
    }

    /// Whether [`admit`](Self::admit) would let a call through now (without
    /// taking a trial slot).
    pub fn would_admit(&self) -> bool {
        let inner = self.lock();
        match inner.state {
            State::Closed => true,
            State::HalfOpen => inner.trials_out < self.config.half_open_trials.max(1),
            State::Open => inner
                .opened_at
                .is_some_and(|t| self.clock.now() >= t + self.open_for()),
        }
    }

    /// How many more calls it would let through now: `None` for any
    /// number (closed), its free trial slots when half-open (all of them
    /// when open with its time up), 0 while open.
    pub fn room(&self) -> Option<usize> {
        let trials = self.config.half_open_trials.max(1) as usize;
        let inner = self.lock();
        match inner.state {
            State::Closed => None,
            State::HalfOpen => Some(trials.saturating_sub(inner.trials_out as usize)),
            State::Open => Some(
                if inner
                    .opened_at
                    .is_some_and(|t| self.clock.now() >= t + self.open_for())
                {
                    trials
                } else {
                    0
                },
            ),
        }
    }

    /// Moves an open breaker whose time is up to half-open (called by the
    /// timer that wakes parked work).
    pub fn poll(&self) -> Option<Transition> {
        let mut inner = self.lock();
        (inner.state == State::Open
            && inner
                .opened_at
                .is_some_and(|t| self.clock.now() >= t + self.open_for()))
        .then(|| self.set(&mut inner, State::HalfOpen))
    }

    /// Reports a call's outcome. Returns the transition it caused, if any.
    pub fn record(&self, success: bool) -> Option<Transition> {
        let mut inner = self.lock();
        if success {
            inner.successes += 1;
            inner.consecutive_failures = 0;
            if inner.state == State::HalfOpen {
                inner.trials_out = inner.trials_out.saturating_sub(1);
                inner.trial_successes += 1;
                if inner.trial_successes >= self.config.half_open_trials.max(1) {
                    return Some(self.set(&mut inner, State::Closed));
                }
            }
            return None;
        }
        inner.failures += 1;
        inner.consecutive_failures += 1;
        match inner.state {
            State::HalfOpen => Some(self.set(&mut inner, State::Open)),
            State::Closed if inner.consecutive_failures >= self.config.failures.max(1) => {
                Some(self.set(&mut inner, State::Open))
            }
            _ => None,
        }
    }

    fn set(&self, inner: &mut Inner, to: State) -> Transition {
        let from = inner.state;
        inner.state = to;
        inner.trials_out = 0;
        inner.trial_successes = 0;
        match to {
            State::Open => {
                inner.opened_at = Some(self.clock.now());
                inner.opened_count += 1;
            }
            State::Closed => {
                inner.opened_at = None;
                inner.consecutive_failures = 0;
            }
            State::HalfOpen => {}
        }
        let transition = Transition {
            breaker: self.name.clone(),
            from,
            to,
        };
        tracing::warn!(breaker = %self.name, from = ?from, to = ?to, "circuit breaker transition");
        transition
    }

    pub fn state(&self) -> State {
        self.lock().state
    }

    pub fn status(&self) -> BreakerStatus {
        let half_open_in_s = self
            .half_open_at()
            .map(|t| t.saturating_duration_since(self.clock.now()).as_secs_f64());
        let inner = self.lock();
        BreakerStatus {
            name: self.name.clone(),
            state: inner.state,
            consecutive_failures: inner.consecutive_failures,
            failure_threshold: self.config.failures,
            open_s: self.config.open_s,
            half_open_in_s,
            times_opened: inner.opened_count,
            successes: inner.successes,
            failures: inner.failures,
            rejected: inner.rejected,
        }
    }
}

/// The named breakers and the automatic per-plugin-version ones.
#[derive(Debug)]
pub struct BreakerSet {
    clock: Arc<dyn Clock>,
    named: BTreeMap<String, Arc<Breaker>>,
    plugin_config: BreakerConfig,
    plugins: RwLock<BTreeMap<String, Arc<Breaker>>>,
    transitions: broadcast::Sender<Transition>,
}

impl BreakerSet {
    pub fn new(
        named: &BTreeMap<String, BreakerConfig>,
        plugin_config: BreakerConfig,
        clock: Arc<dyn Clock>,
    ) -> BreakerSet {
        let named = named
            .iter()
            .map(|(name, config)| {
                (
                    name.clone(),
                    Arc::new(Breaker::new(name.clone(), config.clone(), clock.clone())),
                )
            })
            .collect();
        BreakerSet {
            clock,
            named,
            plugin_config,
            plugins: RwLock::default(),
            transitions: broadcast::channel(1024).0,
        }
    }

    /// Every transition of every breaker in the set.
    pub fn transitions(&self) -> broadcast::Receiver<Transition> {
        self.transitions.subscribe()
    }

    /// Publishes a transition returned by a breaker's method.
    pub fn announce(&self, transition: Option<Transition>) {
        if let Some(t) = transition {
            // No subscriber is fine: nothing is parked yet.
            let _ = self.transitions.send(t);
        }
    }

    /// Every named breaker's name and settings.
    pub fn named_configs(&self) -> impl Iterator<Item = (&str, &BreakerConfig)> {
        self.named.iter().map(|(n, b)| (n.as_str(), &b.config))
    }

    pub fn named(&self, name: &str) -> Option<&Arc<Breaker>> {
        self.named.get(name)
    }

    /// A named or plugin breaker by its name.
    pub fn find(&self, name: &str) -> Option<Arc<Breaker>> {
        self.named
            .get(name)
            .cloned()
            .or_else(|| read(&self.plugins).get(name).cloned())
    }

    /// The automatic breaker of one plugin version, created on first use.
    pub fn plugin(&self, plugin: &str, version: &str) -> Arc<Breaker> {
        let key = format!("plugin:{plugin}@{version}");
        if let Some(b) = read(&self.plugins).get(&key).cloned() {
            return b;
        }
        write(&self.plugins)
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Breaker::new(
                    key,
                    self.plugin_config.clone(),
                    self.clock.clone(),
                ))
            })
            .clone()
    }

    /// Reports the outcome of a call through a named breaker (the hook the
    /// host capabilities use). Unknown names are ignored.
    pub fn report(&self, name: &str, success: bool) {
        if let Some(b) = self.named.get(name) {
            self.announce(b.record(success));
        }
    }

    /// Whether the named breaker `name` refuses calls now (open and not yet
    /// due to half-open). Unknown names are never open.
    pub fn is_open(&self, name: &str) -> bool {
        let Some(b) = self.named.get(name) else {
            return false;
        };
        self.announce(b.poll());
        b.state() == State::Open
    }

    /// Every breaker, named first.
    pub fn statuses(&self) -> Vec<BreakerStatus> {
        let mut all: Vec<BreakerStatus> = self.named.values().map(|b| b.status()).collect();
        all.extend(read(&self.plugins).values().map(|b| b.status()));
        all
    }
}

#[cfg(test)]
mod tests;
