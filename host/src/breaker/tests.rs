use super::*;
use crate::clock::ManualClock;

fn breaker(clock: &ManualClock, failures: u32, open_s: u64, trials: u32) -> Breaker {
    let config = BreakerConfig {
        failures,
        open_s,
        half_open_trials: trials,
        ..BreakerConfig::default()
    };
    Breaker::new("openai", config, Arc::new(clock.clone()))
}

#[test]
fn opens_after_n_consecutive_failures_and_a_success_resets_the_count() {
    let clock = ManualClock::new();
    let b = breaker(&clock, 3, 60, 1);
    b.record(false);
    b.record(false);
    b.record(true);
    b.record(false);
    b.record(false);
    assert_eq!(b.state(), State::Closed);
    let t = b.record(false);
    assert_eq!(t.map(|t| t.to), Some(State::Open));
    assert_eq!(b.admit().0, Admission::Rejected);
}

#[test]
fn a_panic_while_the_counts_were_held_does_not_let_calls_through() {
    let clock = ManualClock::new();
    let b = Arc::new(breaker(&clock, 1, 60, 1));
    b.record(false);
    let held = b.clone();
    let poisoned = std::thread::spawn(move || {
        let _counts = held.inner.lock();
        panic!("a bug while the counts are held");
    })
    .join();
    assert!(poisoned.is_err() && b.inner.is_poisoned());
    // Still open: no fallback to letting everything through.
    assert_eq!(b.admit().0, Admission::Rejected);
    assert_eq!(b.state(), State::Open);
    assert!(!b.would_admit());
}

#[test]
fn half_opens_after_open_s_admits_bounded_trials_and_closes_on_success() {
    let clock = ManualClock::new();
    let b = breaker(&clock, 1, 60, 2);
    b.record(false);
    clock.advance(Duration::from_secs(59));
    assert_eq!(b.admit().0, Admission::Rejected);
    assert_eq!(b.status().half_open_in_s, Some(1.0));
    clock.advance(Duration::from_secs(1));
    let (admission, transition) = b.admit();
    assert_eq!(admission, Admission::Trial);
    assert_eq!(transition.map(|t| t.to), Some(State::HalfOpen));
    assert_eq!(b.admit().0, Admission::Trial);
    assert_eq!(b.admit().0, Admission::Rejected, "only two trials");
    assert_eq!(b.record(true), None);
    assert_eq!(b.record(true).map(|t| t.to), Some(State::Closed));
    assert_eq!(b.admit().0, Admission::Allowed);
}

#[test]
fn a_failed_trial_opens_it_again_for_a_full_period() {
    let clock = ManualClock::new();
    let b = breaker(&clock, 1, 30, 1);
    b.record(false);
    clock.advance(Duration::from_secs(30));
    assert_eq!(b.admit().0, Admission::Trial);
    assert_eq!(b.record(false).map(|t| t.to), Some(State::Open));
    clock.advance(Duration::from_secs(29));
    assert_eq!(b.poll(), None);
    clock.advance(Duration::from_secs(1));
    assert_eq!(b.poll().map(|t| t.to), Some(State::HalfOpen));
    assert_eq!(b.status().times_opened, 2);
}

#[test]
fn a_plugin_version_has_one_breaker() {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new());
    let set = BreakerSet::new(&BreakerConfig::defaults(), BreakerConfig::default(), clock);
    let a = set.plugin("rag", "1.0.0");
    let b = set.plugin("rag", "1.0.0");
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!(a.name(), "plugin:rag@1.0.0");
}
