//! Scheduling over HTTP: priority order, no starvation, cancellation of a
//! spinning guest, automatic rollback of a bad release.

use crate::support::{Daemon, Dirs, error_kind};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn submit_with(daemon: &Daemon, body: Value) -> Result<String> {
    let (status, task) = daemon
        .request(reqwest::Method::POST, "/api/v1/tasks", Some(body))
        .await?;
    ensure!(status == 202, "submission refused ({status}): {task}");
    task["task_id"]
        .as_str()
        .map(str::to_string)
        .context("no task_id")
}

fn started_at(task: &Value) -> String {
    task["started_at"].as_str().unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_tasks_run_in_priority_order() -> Result<()> {
    let dirs = Dirs::with_config("[pools]\nbatch = 1\n")?;
    dirs.install("echo", "echo")?;
    dirs.install("busy", "busy")?;
    let daemon = Daemon::start(&dirs).await?;
    // Occupy the only worker, then queue one task per priority, least
    // urgent first. Each runs 20 ms, so start times (ms) are distinct.
    // Long enough that all five are queued before it ends, even on a loaded machine.
    let blocker = daemon.submit("busy", json!({ "ms": 1500 })).await?;
    let mut ids = Vec::new();
    for priority in ["BULK", "LOW", "NORMAL", "HIGH", "CRITICAL"] {
        let body = json!({ "kind": "busy", "payload": { "ms": 20 }, "priority": priority });
        ids.push((priority, submit_with(&daemon, body).await?));
    }
    daemon.wait(&blocker).await?;
    let mut order = Vec::new();
    for (priority, id) in &ids {
        let task = daemon.wait(id).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
        order.push((started_at(&task), *priority));
    }
    order.sort();
    let order: Vec<&str> = order.into_iter().map(|(_, p)| p).collect();
    assert_eq!(order, ["CRITICAL", "HIGH", "NORMAL", "LOW", "BULK"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_makes_progress_under_a_critical_flood() -> Result<()> {
    let dirs = Dirs::with_config("[pools]\nbatch = 1\n")?;
    dirs.install("busy", "busy")?;
    let daemon = Daemon::start(&dirs).await?;
    // Long enough that the whole flood is queued before it ends.
    let blocker = daemon.submit("busy", json!({ "ms": 1500 })).await?;
    let bulk = submit_with(
        &daemon,
        json!({ "kind": "busy", "payload": { "ms": 1 }, "priority": "BULK" }),
    )
    .await?;
    let mut critical = Vec::new();
    for _ in 0..120 {
        let body = json!({ "kind": "busy", "payload": { "ms": 2 }, "priority": "CRITICAL" });
        critical.push(submit_with(&daemon, body).await?);
    }
    daemon.wait(&blocker).await?;
    let bulk = daemon.wait(&bulk).await?;
    let bulk_started = started_at(&bulk);
    let mut before_bulk = 0;
    for id in &critical {
        let task = daemon.wait(id).await?;
        if started_at(&task) < bulk_started {
            before_bulk += 1;
        }
    }
    // One BULK dispatch per 32 CRITICAL ones while both are queued.
    assert!(
        (20..=40).contains(&before_bulk),
        "BULK started after {before_bulk} of 120 CRITICAL tasks"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn cancelling_a_spinning_guest_frees_its_worker() -> Result<()> {
    let dirs = Dirs::with_config("[pools]\nbatch = 1\n")?;
    dirs.install("spin", "spin")?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    let spin = submit_with(&daemon, json!({ "kind": "spin", "timeout_s": 120 })).await?;
    let queued = daemon.submit("echo", json!("after the spin")).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, task) = daemon.get(&format!("/api/v1/tasks/{spin}")).await?;
        if task["status"] == "running" {
            break;
        }
        ensure!(Instant::now() < deadline, "spin never started: {task}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let asked = Instant::now();
    let (status, task) = daemon
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tasks/{spin}"),
            None,
        )
        .await?;
    let took = asked.elapsed();
    println!("cancel of a spinning guest answered in {took:?}");
    assert_eq!(status, 200, "{task}");
    assert_eq!(task["status"], "cancelled");
    assert_eq!(error_kind(&task), "cancelled");
    assert!(took < Duration::from_secs(2), "{took:?}");
    // The only worker is free again.
    assert_eq!(daemon.wait(&queued).await?["status"], "succeeded");

    // Cancelling a queued task, and the errors.
    let blocker = submit_with(&daemon, json!({ "kind": "spin", "timeout_s": 120 })).await?;
    let waiting = daemon.submit("echo", json!(1)).await?;
    let (status, task) = daemon
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tasks/{waiting}"),
            None,
        )
        .await?;
    assert_eq!(status, 200);
    assert_eq!(task["status"], "cancelled");
    assert_eq!(task["attempts"], 0);
    let (status, body) = daemon
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tasks/{waiting}"),
            None,
        )
        .await?;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("task_finished"))
    );
    let (status, _) = daemon
        .request(
            reqwest::Method::DELETE,
            "/api/v1/tasks/01a22bf8-3b7d-7703-9cfd-b97064e1df34",
            None,
        )
        .await?;
    assert_eq!(status, 404);
    daemon
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tasks/{blocker}"),
            None,
        )
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_release_is_rolled_back_and_its_failures_retried_on_the_good_one() -> Result<()> {
    let dirs = Dirs::with_config("[plugin_breaker]\nfailures = 3\nopen_s = 60\n")?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    assert_eq!(
        daemon.run("echo", json!(0)).await?["plugin"]["version"],
        "1.0.0"
    );

    dirs.install("echo-broken", "echo")?;
    daemon
        .wait_for_plugin("echo.wasm", "load 3.0.0", |p| {
            p.is_some_and(|p| p["version"] == "3.0.0")
        })
        .await?;
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(submit_with(&daemon, json!({ "kind": "echo", "payload": { "i": i } })).await?);
    }
    let entry = daemon
        .wait_for_plugin("echo.wasm", "roll back to 1.0.0", |p| {
            p.is_some_and(|p| p["version"] == "1.0.0" && p["rolled_back"].is_object())
        })
        .await?
        .unwrap_or_default();
    assert_eq!(entry["rolled_back"]["version"], "3.0.0", "{entry}");
    for (i, id) in ids.iter().enumerate() {
        let task = daemon.wait(id).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"], json!({ "i": i }));
        assert_eq!(task["plugin"]["version"], "1.0.0");
        // Attempts on the bad release were not charged.
        let charged = task["attempt_log"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["charged"] == true)
            .count();
        assert_eq!(charged, 1, "{task}");
    }
    // The bad file stays out until it changes.
    assert_eq!(
        daemon.run("echo", json!("ok")).await?["plugin"]["version"],
        "1.0.0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifest_timeout_is_a_ceiling_a_task_may_only_lower() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("spin", "spin")?;
    dirs.write("spin.toml", b"[limits]\ntimeout_s = 1\n")?;
    let daemon = Daemon::start(&dirs).await?;
    let task = daemon
        .run_with(json!({ "kind": "spin", "timeout_s": 300, "max_retries": 0 }))
        .await?;
    assert_eq!(task["timeout_s"], 1, "{task}");
    assert_eq!(error_kind(&task), "timeout");
    let took = task["attempt_log"][0]["duration_ms"]
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!((1000..3000).contains(&took), "the attempt ran {took} ms");
    Ok(())
}
