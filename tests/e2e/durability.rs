//! The durable store: nothing accepted is lost across `kill -9`, retry
//! timers and idempotency keys survive a restart, a full store answers 503.

use crate::support::{Daemon, Dirs, error_kind};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn every_accepted_task_finishes_across_a_kill_9() -> Result<()> {
    // One worker: the 5000 tasks take several seconds, so the kill lands in
    // the middle of the run.
    let dirs = Dirs::with_config("[pools]\nbatch = 1\n")?;
    dirs.install("busy", "busy")?;
    let daemon = Daemon::start(&dirs).await?;
    let submitting = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..5 {
        let chunk = (0..1000)
            .map(|_| json!({ "kind": "busy", "payload": { "ms": 2 } }))
            .collect();
        ids.extend(daemon.submit_batch(chunk).await?);
    }
    assert_eq!(ids.len(), 5000);
    // Let part of the work finish, then kill the daemon without warning.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, done) = daemon
            .get("/api/v1/tasks?status=succeeded&limit=1000")
            .await?;
        if done["count"].as_u64().unwrap_or(0) >= 500 {
            break;
        }
        ensure!(Instant::now() < deadline, "no progress before the kill");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    println!("submitted 5000 in {:?}; killing", submitting.elapsed());
    daemon.kill().await?;
    // What the first daemon finished, from its own log (written as it ran).
    let first_log = std::fs::read_to_string(dirs.log())?;
    let finished_before_kill: std::collections::HashSet<&str> = first_log
        .lines()
        .filter(|l| l.contains("attempt succeeded"))
        .filter_map(|l| l.split("task.id=").nth(1)?.split([' ', '}']).next())
        .collect();
    ensure!(
        (500..ids.len()).contains(&finished_before_kill.len()),
        "the kill should land mid-run; the log shows {} of {} finished",
        finished_before_kill.len(),
        ids.len()
    );

    let daemon = Daemon::start(&dirs).await?;
    let mut duplicates = 0;
    let mut interrupted = 0;
    for id in &ids {
        let task = daemon.wait(id).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
        let log = task["attempt_log"].as_array().cloned().unwrap_or_default();
        let cut = log
            .iter()
            .filter(|a| a["error"]["kind"] == "interrupted")
            .count();
        assert_eq!(
            log.len(),
            1 + cut,
            "one successful attempt, plus any cut by the kill: {task}"
        );
        interrupted += cut;
        if finished_before_kill.contains(id.as_str()) && log.len() > 1 {
            duplicates += 1;
        }
        if finished_before_kill.contains(id.as_str()) && cut == 0 {
            // Finished before the kill and not re-run: its outcome was durable.
            assert_eq!(log.len(), 1);
        }
    }
    println!(
        "kill -9 with 5000 tasks, 1 worker: {} finished before the kill, {interrupted} attempts cut, {duplicates} finished twice",
        finished_before_kill.len()
    );
    // Per worker, only the task in hand and the outcomes still waiting for
    // their group commit can run again (the single worker here: a handful).
    assert!(duplicates <= 3, "{duplicates} tasks finished twice");
    assert!(
        interrupted <= 4,
        "{interrupted} attempts were cut by the kill"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_timers_and_idempotency_keys_survive_a_restart() -> Result<()> {
    let dirs = Dirs::with_config("[retry]\nbase_s = 1.5\njitter_s = 0.01\n")?;
    dirs.install("flaky", "flaky")?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    let flaky = daemon.submit("flaky", json!({ "fail": 1 })).await?;
    let keyed = daemon
        .run_with(json!({ "kind": "echo", "payload": "first", "idempotency_key": "order-7" }))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let due = loop {
        let (_, task) = daemon.get(&format!("/api/v1/tasks/{flaky}")).await?;
        if task["status"] == "retry_wait" {
            break task["next_attempt_at"]
                .as_str()
                .context("no next_attempt_at")?
                .to_string();
        }
        ensure!(Instant::now() < deadline, "flaky never failed: {task}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // A clean stop: everything recorded is on disk when the process exits.
    let exited = daemon.terminate(Duration::from_secs(20)).await?;
    ensure!(exited.success(), "{exited:?}");

    let daemon = Daemon::start(&dirs).await?;
    let (_, task) = daemon.get(&format!("/api/v1/tasks/{flaky}")).await?;
    assert_eq!(
        task["next_attempt_at"].as_str(),
        Some(due.as_str()),
        "{task}"
    );
    let task = daemon.wait(&flaky).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["attempts"], 2);
    let second = task["attempt_log"][1]["started_at"]
        .as_str()
        .unwrap_or_default();
    assert!(
        second >= due.as_str(),
        "retried at {second}, before its due time {due}"
    );

    let again = daemon
        .run_with(json!({ "kind": "echo", "payload": "second", "idempotency_key": "order-7" }))
        .await?;
    assert_eq!(again["task_id"], keyed["task_id"]);
    assert_eq!(again["result"], "first");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_store_answers_503_and_keeps_serving() -> Result<()> {
    let dirs = Dirs::with_config("[store]\nmax_size_mb = 1\n")?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    let accepted = daemon.run("echo", json!("before")).await?;
    let big = "x".repeat(200 * 1024);
    let client = reqwest::Client::new();
    let mut refused = None;
    for _ in 0..40 {
        let response = client
            .post(format!("{}/api/v1/tasks", daemon.url))
            .json(&json!({ "kind": "echo", "payload": big }))
            .send()
            .await?;
        if response.status() == 503 {
            refused = Some(response);
            break;
        }
        ensure!(response.status() == 202, "unexpected {}", response.status());
    }
    let response = refused.context("the 1 MiB store never filled up")?;
    assert_eq!(
        response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("5")
    );
    let body: Value = response.json().await?;
    assert_eq!(body["error"]["code"], "store_unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("full"),
        "{body}"
    );

    let (status, health) = daemon.get("/api/hp/health").await?;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "degraded", "{health}");
    let id = accepted["task_id"].as_str().unwrap_or_default();
    let (status, task) = daemon.get(&format!("/api/v1/tasks/{id}")).await?;
    assert_eq!((status, task["status"].as_str()), (200, Some("succeeded")));
    assert_eq!(error_kind(&task), "none");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_database_is_the_daemons_alone_and_maps_no_shared_memory() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    daemon.run("echo", json!("before")).await?;
    // No `-shm` file: the WAL index lives in the daemon's heap, so a full
    // or unwritable file system cannot fault a mapped page (SIGBUS).
    for db in ["tasks.db", "vectors.db"] {
        assert!(dirs.data().join(db).exists(), "{db} was not created");
        assert!(
            !dirs.data().join(format!("{db}-shm")).exists(),
            "the WAL index of {db} is memory-mapped from a file"
        );
    }
    // Another process can neither take the write lock nor read a half
    // state: the daemon holds the database for as long as it runs.
    let other = rusqlite::Connection::open(dirs.data().join("tasks.db"))?;
    let taken = other.execute_batch("BEGIN EXCLUSIVE; ROLLBACK;");
    let message = taken.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("locked"),
        "another process got the lock: {message}"
    );
    drop(other);
    assert_eq!(daemon.run("echo", json!("after")).await?["result"], "after");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_database_stops_the_start_with_what_to_do() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    std::fs::create_dir_all(dirs.data())?;
    std::fs::write(dirs.data().join("tasks.db"), vec![0x5a; 64 * 1024])?;
    let Err(error) = Daemon::start(&dirs).await else {
        anyhow::bail!("the daemon started on a corrupt database");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("tasks.db") && message.contains("corrupt"),
        "{message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_daemon_on_the_same_data_directory_is_refused() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    let first = Daemon::start(&dirs).await?;
    let Err(error) = Daemon::start(&dirs).await else {
        anyhow::bail!("a second daemon started on the same data directory");
    };
    let message = format!("{error:#}");
    assert!(
        message.contains("another wasmhive daemon is using the data directory")
            && message.contains("--data"),
        "{message}"
    );
    // The first keeps serving; once it is gone the directory is free.
    let done = first.run("echo", json!("still here")).await?;
    assert_eq!(done["status"], "succeeded", "{done}");
    first.kill().await?;
    let again = Daemon::start(&dirs).await?;
    let (status, _) = again.get("/api/hp/health").await?;
    assert_eq!(status, 200);
    Ok(())
}

/// A JSON document nested `depth` levels deep: `{"a":{"a":...{"a":1}}}`.
fn nested(depth: usize) -> Value {
    (0..depth).fold(json!(1), |inner, _| json!({ "a": inner }))
}

#[tokio::test(flavor = "multi_thread")]
async fn what_is_acknowledged_reads_back_after_a_restart_however_deep() -> Result<()> {
    let dirs = Dirs::new()?;
    // Wraps its payload one level deeper in its result.
    dirs.install("echo-v2", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    let (status, body) = daemon.try_submit("echo", nested(65)).await?;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_payload", "{body}");
    assert!(body.to_string().contains("at most 64"), "{body}");
    // At the limit the payload is taken, and a result one deeper is not.
    let deep = daemon.run("echo", nested(64)).await?;
    assert_eq!(deep["status"], "failed", "{deep}");
    assert_eq!(error_kind(&deep), "fatal", "{deep}");
    assert!(
        deep.to_string().contains("the result nests 65 levels"),
        "{deep}"
    );
    let fits = daemon.run("echo", nested(63)).await?;
    assert_eq!(fits["status"], "succeeded", "{fits}");
    daemon.terminate(Duration::from_secs(30)).await?;

    let daemon = Daemon::start(&dirs).await?;
    for task in [&deep, &fits] {
        let id = task["task_id"].as_str().unwrap_or_default();
        let (status, back) = daemon.get(&format!("/api/v1/tasks/{id}")).await?;
        assert_eq!(status, 200, "{back}");
        assert_eq!(back["status"], task["status"], "{back}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_prunes_finished_tasks_and_nothing_else() -> Result<()> {
    let dirs = Dirs::with_config("[store]\nretention_s = 1\nprune_interval_s = 1\n")?;
    dirs.install("echo", "echo")?;
    dirs.install("spin", "spin")?;
    let daemon = Daemon::start(&dirs).await?;
    let done = daemon.run("echo", json!("old")).await?;
    let done = done["task_id"].as_str().unwrap_or_default().to_string();
    let running = daemon.submit("spin", json!({})).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = daemon.get(&format!("/api/v1/tasks/{done}")).await?;
        if status == 404 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the finished task was never pruned"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, task) = daemon.get(&format!("/api/v1/tasks/{running}")).await?;
    assert_eq!(
        (status, task["status"].as_str()),
        (200, Some("running")),
        "{task}"
    );
    Ok(())
}
