//! Graceful shutdown: stop accepting, let running attempts finish within
//! the grace period, interrupt and re-queue the rest.

use crate::support::{Daemon as Process, Dirs, fixture};
use anyhow::Result;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};
use wasmhive::clock::SystemClock;
use wasmhive::scheduler::{NewTask, SubmitError};
use wasmhive::task::{FailureKind, Priority, TaskStatus};
use wasmhive::{Config, Daemon};

fn task(kind: &str, payload: serde_json::Value) -> NewTask {
    NewTask {
        kind: kind.into(),
        payload,
        priority: Priority::Normal,
        timeout_s: Some(60),
        max_retries: None,
        idempotency_key: None,
        parent_id: None,
    }
}

async fn daemon(grace_s: u64) -> Result<(Daemon, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let plugins = dir.path().join("plugins");
    std::fs::create_dir_all(&plugins)?;
    for name in ["busy", "spin"] {
        std::fs::copy(fixture(name), plugins.join(format!("{name}.wasm")))?;
    }
    let mut config = Config {
        plugins,
        data: dir.path().join("data"),
        ..Config::default()
    };
    config.runtime.shutdown_grace_s = grace_s;
    Ok((
        {
            let daemon = Daemon::start_with_clock(config, Arc::new(SystemClock)).await?;
            daemon.ready().await;
            daemon
        },
        dir,
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn running_work_finishes_within_the_grace_period() -> Result<()> {
    let (daemon, _dir) = daemon(30).await?;
    let scheduler = daemon.scheduler().clone();
    let id = scheduler
        .submit(task("busy", json!({ "ms": 300 })))
        .await?
        .task
        .task_id;
    while scheduler
        .get(id)
        .await
        .is_some_and(|t| t.status == TaskStatus::Queued)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    daemon.shutdown().await;
    assert_eq!(
        scheduler.get(id).await.map(|t| t.status),
        Some(TaskStatus::Succeeded)
    );
    assert!(matches!(
        scheduler.submit(task("busy", json!({}))).await,
        Err(SubmitError::ShuttingDown)
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn past_the_grace_period_work_is_interrupted_and_requeued_uncharged() -> Result<()> {
    let (daemon, _dir) = daemon(0).await?;
    let scheduler = daemon.scheduler().clone();
    let id = scheduler
        .submit(task("spin", json!({})))
        .await?
        .task
        .task_id;
    while scheduler
        .get(id)
        .await
        .is_some_and(|t| t.status != TaskStatus::Running)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    daemon.shutdown().await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let t = scheduler
        .get(id)
        .await
        .ok_or_else(|| anyhow::anyhow!("task vanished"))?;
    assert_eq!(t.status, TaskStatus::Queued, "{t:?}");
    assert_eq!(t.attempts, 0);
    assert_eq!(t.attempt_log.len(), 1);
    assert!(!t.attempt_log[0].charged);
    assert_eq!(
        t.attempt_log[0].error.as_ref().map(|e| e.kind),
        Some(FailureKind::Cancelled)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_daemon_cleanly() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("busy", "busy")?;
    let daemon = Process::start(&dirs).await?;
    let id = daemon.submit("busy", json!({ "ms": 300 })).await?;
    let exited = daemon.terminate(Duration::from_secs(20)).await?;
    assert!(exited.success(), "{exited:?}");
    let log = std::fs::read_to_string(dirs.log())?;
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
    assert!(
        !log.contains("interrupting"),
        "the 300 ms task {id} fit in the grace period: {log}"
    );
    Ok(())
}
