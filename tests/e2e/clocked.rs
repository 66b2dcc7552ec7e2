//! Time-driven behaviour with an injected clock: the daemon runs in-process
//! on a `ManualClock`, real guests run in real time, and the test moves the
//! clock to exactly where a retry timer or breaker should fire.

use crate::support::fixture;
use anyhow::{Result, bail};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmhive::breaker::State;
use wasmhive::clock::ManualClock;
use wasmhive::config::PluginBreakerConfig;
use wasmhive::scheduler::retry::RetryPolicy;
use wasmhive::scheduler::{NewTask, SubmitError, Submitted};
use wasmhive::store::TaskRecord;
use wasmhive::task::{Priority, TaskStatus};
use wasmhive::{Config, Daemon};

struct Clocked {
    daemon: Daemon,
    clock: ManualClock,
    _dir: tempfile::TempDir,
}

async fn start(
    plugins: &[(&str, Option<&str>)],
    configure: impl FnOnce(&mut Config),
) -> Result<Clocked> {
    let dir = tempfile::tempdir()?;
    let plugin_dir = dir.path().join("plugins");
    std::fs::create_dir_all(&plugin_dir)?;
    for (name, manifest) in plugins {
        std::fs::copy(fixture(name), plugin_dir.join(format!("{name}.wasm")))?;
        if let Some(m) = manifest {
            std::fs::write(plugin_dir.join(format!("{name}.toml")), m)?;
        }
    }
    let mut config = Config {
        plugins: plugin_dir,
        data: dir.path().join("data"),
        ..Config::default()
    };
    config.pools.insert("batch".into(), 4);
    configure(&mut config);
    let clock = ManualClock::new();
    let daemon = Daemon::start_with_clock(config, Arc::new(clock.clone())).await?;
    daemon.ready().await;
    Ok(Clocked {
        daemon,
        clock,
        _dir: dir,
    })
}

impl Clocked {
    async fn submit(&self, kind: &str, payload: serde_json::Value) -> Result<uuid::Uuid> {
        Ok(self.try_submit(kind, payload).await?.task.task_id)
    }

    async fn try_submit(
        &self,
        kind: &str,
        payload: serde_json::Value,
    ) -> Result<Submitted, SubmitError> {
        self.daemon
            .scheduler()
            .submit(NewTask {
                kind: kind.into(),
                payload,
                priority: Priority::Normal,
                timeout_s: None,
                max_retries: None,
                idempotency_key: None,
                parent_id: None,
            })
            .await
    }

    async fn task(&self, id: uuid::Uuid) -> Result<TaskRecord> {
        match self.daemon.scheduler().get(id).await {
            Some(t) => Ok(t),
            None => bail!("task {id} vanished"),
        }
    }

    /// Waits (real time, the guests run for real) until `check` holds.
    async fn until(
        &self,
        id: uuid::Uuid,
        what: &str,
        check: impl Fn(&TaskRecord) -> bool,
    ) -> Result<TaskRecord> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let task = self.task(id).await?;
            if check(&task) {
                return Ok(task);
            }
            if Instant::now() > deadline {
                bail!("task {id}: {what} did not happen; it is {task:?}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Lets the daemon react to a clock move (timers, listeners), then
    /// checks the task did not move past `status`.
    async fn stays(&self, id: uuid::Uuid, status: TaskStatus) -> Result<()> {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let task = self.task(id).await?;
        if task.status != status {
            bail!("task {id} should still be {status:?}: {task:?}");
        }
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_follow_the_backoff_schedule_exactly() -> Result<()> {
    let t = start(&[("flaky", None)], |_| {}).await?;
    let policy = RetryPolicy::default();
    let id = t.submit("flaky", json!({ "fail": 2 })).await?;

    for failed in 1..=2u32 {
        let task = t
            .until(id, "fail and wait to retry", |task| {
                task.status == TaskStatus::RetryWait && task.attempts == failed
            })
            .await?;
        let delay = policy.delay(id, failed);
        let expected = t.daemon.scheduler().clock().wall() + delay;
        assert_eq!(task.next_attempt_at, Some(expected), "attempt {failed}");
        assert!(delay >= Duration::from_secs(2u64.pow(failed)), "{delay:?}");
        assert!(
            delay < Duration::from_secs(2u64.pow(failed) + 1),
            "{delay:?}"
        );

        t.clock.advance(delay - Duration::from_millis(1));
        t.stays(id, TaskStatus::RetryWait).await?;
        t.clock.advance(Duration::from_millis(1));
    }
    let task = t
        .until(id, "succeed", |task| task.status == TaskStatus::Succeeded)
        .await?;
    assert_eq!(task.attempts, 3);
    assert_eq!(task.result, Some(json!({ "succeeded_on_attempt": 3 })));
    let kinds: Vec<_> = task
        .attempt_log
        .iter()
        .map(|a| a.error.as_ref().map(|e| e.kind.as_str()))
        .collect();
    assert_eq!(kinds, [Some("retryable"), Some("retryable"), None]);
    Ok(())
}

/// A plugin breaker that opens after 2 failures for 30 s, one trial.
fn quick_breaker() -> PluginBreakerConfig {
    PluginBreakerConfig {
        failures: 2,
        open_s: 30,
        half_open_trials: 1,
        ..PluginBreakerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_open_plugin_breaker_parks_tasks_uncharged_then_half_opens_and_closes() -> Result<()> {
    // Failing attempts time out (the plugin's own doing, and retried).
    let t = start(&[("flaky", Some("[limits]\ntimeout_s = 1\n"))], |c| {
        c.plugin_breaker = quick_breaker();
    })
    .await?;
    let breaker = t.daemon.scheduler().breakers().plugin("flaky", "1.0.0");

    // Two failures in a row open it.
    let a = t
        .submit("flaky", json!({ "fail": 1, "spin": true }))
        .await?;
    t.until(a, "fail once", |task| task.status == TaskStatus::RetryWait)
        .await?;
    let b = t
        .submit("flaky", json!({ "fail": 1, "spin": true }))
        .await?;
    t.until(b, "fail once", |task| task.status == TaskStatus::RetryWait)
        .await?;
    assert_eq!(breaker.state(), State::Open);

    // A new task is parked, not run, not charged.
    let c = t.submit("flaky", json!({ "fail": 0 })).await?;
    let parked = t
        .until(c, "be parked", |task| task.parked_on.is_some())
        .await?;
    assert_eq!(parked.parked_on.as_deref(), Some("plugin:flaky@1.0.0"));
    assert_eq!(parked.status, TaskStatus::Queued);
    assert_eq!(parked.attempts, 0);

    // The retries come due while it is still open: parked too, uncharged.
    t.clock.advance(Duration::from_secs(5));
    for id in [a, b] {
        let task = t
            .until(id, "be parked", |task| task.parked_on.is_some())
            .await?;
        assert_eq!(task.attempts, 1);
    }
    t.stays(c, TaskStatus::Queued).await?;

    // At 30 s it half-opens: one trial runs, succeeds, and closes it; the
    // rest follow.
    t.clock.advance(Duration::from_secs(25));
    for (id, attempts) in [(a, 2), (b, 2), (c, 1)] {
        let task = t
            .until(id, "succeed", |task| task.status == TaskStatus::Succeeded)
            .await?;
        assert_eq!(task.attempts, attempts, "{task:?}");
    }
    let status = breaker.status();
    assert_eq!(status.state, State::Closed);
    assert_eq!(status.times_opened, 1);
    assert!(status.rejected >= 3, "{status:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_destination_or_a_caller_did_does_not_open_the_plugins_breaker() -> Result<()> {
    let t = start(&[("flaky", None), ("fatal", None)], |c| {
        c.plugin_breaker = PluginBreakerConfig {
            failures: 2,
            ..PluginBreakerConfig::default()
        };
    })
    .await?;
    // Retryable errors (a dead URL) and fatal ones (bad input), three of
    // each: neither plugin's breaker opens, and their next tasks run.
    for _ in 0..3 {
        let retried = t.submit("flaky", json!({ "fail": 5 })).await?;
        t.until(retried, "fail retryably", |task| {
            task.status == TaskStatus::RetryWait
        })
        .await?;
        let refused = t.submit("fatal", json!({})).await?;
        t.until(refused, "fail", |task| task.status == TaskStatus::Failed)
            .await?;
    }
    let breakers = t.daemon.scheduler().breakers();
    for plugin in ["flaky", "fatal"] {
        assert_eq!(
            breakers.plugin(plugin, "1.0.0").state(),
            State::Closed,
            "{plugin}"
        );
    }
    let ok = t.submit("flaky", json!({ "fail": 0 })).await?;
    t.until(ok, "succeed", |task| task.status == TaskStatus::Succeeded)
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_breaker_parks_the_plugins_granted_its_capability() -> Result<()> {
    let t = start(
        &[("echo", Some("[capabilities]\nvectors = true\n"))],
        |_| {},
    )
    .await?;
    let breakers = t.daemon.scheduler().breakers().clone();
    // The capability reports three failures: `vectors` opens (3 / 30 s).
    for _ in 0..3 {
        breakers.report("vectors", false);
    }
    let vectors = breakers.named("vectors").cloned();
    assert_eq!(vectors.as_ref().map(|b| b.state()), Some(State::Open));

    let id = t.submit("echo", json!("waits for vectors")).await?;
    let task = t
        .until(id, "be parked", |task| task.parked_on.is_some())
        .await?;
    assert_eq!(task.parked_on.as_deref(), Some("vectors"));

    t.clock.advance(Duration::from_secs(30));
    let task = t
        .until(id, "run as the trial", |task| {
            task.status == TaskStatus::Succeeded
        })
        .await?;
    assert_eq!(task.attempts, 1);
    breakers.report("vectors", true);
    assert_eq!(vectors.map(|b| b.state()), Some(State::Closed));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_runs_on_the_daemons_clock() -> Result<()> {
    let t = start(&[("echo", None)], |c| {
        c.store.retention_s = 60;
        c.store.prune_interval_s = 10;
    })
    .await?;
    let done = t.submit("echo", json!("old")).await?;
    t.until(done, "succeed", |task| task.status == TaskStatus::Succeeded)
        .await?;
    // 30 s on: retention has looked, and the task is younger than 60 s.
    t.clock.advance(Duration::from_secs(30));
    t.stays(done, TaskStatus::Succeeded).await?;
    // 70 s on: the next look deletes it; nothing real-time was waited for.
    t.clock.advance(Duration::from_secs(40));
    let deadline = Instant::now() + Duration::from_secs(20);
    while t.daemon.scheduler().get(done).await.is_some() {
        if Instant::now() > deadline {
            bail!("retention did not prune the task on the daemon's clock");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let fresh = t.submit("echo", json!("new")).await?;
    t.until(fresh, "succeed", |task| {
        task.status == TaskStatus::Succeeded
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_breaker_that_does_not_recover_releases_a_trial_at_a_time_and_bounds_its_backlog()
-> Result<()> {
    let t = start(
        &[
            ("panic", Some("[limits]\nmax_parked = 5\n")),
            ("echo", None),
        ],
        |c| {
            c.plugin_breaker = quick_breaker();
        },
    )
    .await?;
    let breaker = t.daemon.scheduler().breakers().plugin("panic", "1.0.0");
    for _ in 0..2 {
        let id = t.submit("panic", json!({})).await?;
        t.until(id, "trap", |task| task.status == TaskStatus::Failed)
            .await?;
    }
    assert_eq!(breaker.state(), State::Open);
    let mut parked = Vec::new();
    for _ in 0..5 {
        let id = t.submit("panic", json!({})).await?;
        t.until(id, "be parked", |task| task.parked_on.is_some())
            .await?;
        parked.push(id);
    }
    // The backlog is full: the next one is refused with when to come back.
    let refused = t.try_submit("panic", json!({})).await;
    match refused {
        Err(SubmitError::Backlog {
            parked: 5,
            retry_after_s,
            ..
        }) => assert!((1..=30).contains(&retry_after_s), "{retry_after_s}"),
        other => bail!("expected a backlog refusal, got {other:?}"),
    }
    // Other plugins are not held back.
    let echo = t.submit("echo", json!("fine")).await?;
    t.until(echo, "succeed", |task| task.status == TaskStatus::Succeeded)
        .await?;

    // Half-open: one trial goes (the oldest), traps, and the breaker opens
    // again; the other four stay parked, never run.
    t.clock.advance(Duration::from_secs(30));
    t.until(parked[0], "run as the trial", |task| {
        task.status == TaskStatus::Failed
    })
    .await?;
    t.stays(parked[1], TaskStatus::Queued).await?;
    assert_eq!(breaker.state(), State::Open);
    for id in &parked[1..] {
        let task = t.task(*id).await?;
        assert_eq!(
            (task.attempts, task.parked_on.is_some()),
            (0, true),
            "{task:?}"
        );
    }
    let by_breaker = t.daemon.scheduler().parked_by_breaker();
    assert_eq!(by_breaker.get("plugin:panic@1.0.0"), Some(&4));
    assert_eq!(t.daemon.scheduler().parked_of("panic"), 4);
    Ok(())
}
