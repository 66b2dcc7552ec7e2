//! The PostgreSQL store end to end: daemons started with `--store
//! postgres://…` (here through `WASMHIVE_STORE`) against a throwaway server,
//! running real plugins, sharing one queue.

use crate::support::{Daemon, Dirs};
use anyhow::{Result, ensure};
use serde_json::json;
use std::time::Duration;
use wasmhive::store::postgres::local::LocalServer;

async fn node(dirs: &Dirs, url: &str) -> Result<Daemon> {
    Daemon::start_with_env(dirs, &[("WASMHIVE_STORE", url)]).await
}

#[tokio::test(flavor = "multi_thread")]
async fn two_daemons_share_one_queue_and_its_keys() -> Result<()> {
    let pg = LocalServer::start(&[])?;
    let url = pg.url();
    let (a_dirs, b_dirs) = (Dirs::new()?, Dirs::new()?);
    for dirs in [&a_dirs, &b_dirs] {
        dirs.install("echo", "echo")?;
    }
    let a = node(&a_dirs, &url).await?;
    let b = node(&b_dirs, &url).await?;
    let (_, health) = a.get("/api/hp/health").await?;
    ensure!(health["store"]["backend"] == "postgres", "{health}");

    // Tasks submitted to either daemon all run, and each is visible from
    // the other.
    let mut ids = Vec::new();
    for i in 0..40 {
        let daemon = if i % 2 == 0 { &a } else { &b };
        ids.push(daemon.submit("echo", json!({ "i": i })).await?);
    }
    for (i, id) in ids.iter().enumerate() {
        let other = if i % 2 == 0 { &b } else { &a };
        let task = other.wait(id).await?;
        ensure!(task["status"] == "succeeded", "{task}");
        ensure!(task["result"]["i"] == i, "{task}");
    }

    // An idempotency key is one task across daemons.
    let keyed = json!({ "kind": "echo", "payload": { "k": 1 }, "idempotency_key": "order-7" });
    let (first_status, first) = a
        .request(reqwest::Method::POST, "/api/v1/tasks", Some(keyed.clone()))
        .await?;
    let (_, again) = b
        .request(reqwest::Method::POST, "/api/v1/tasks", Some(keyed))
        .await?;
    ensure!(first_status == 202, "{first}");
    ensure!(first["task_id"] == again["task_id"], "{first} vs {again}");

    // A restarted daemon finds what was stored.
    a.terminate(Duration::from_secs(30)).await?;
    let a = node(&a_dirs, &url).await?;
    let (status, task) = a.get(&format!("/api/v1/tasks/{}", ids[1])).await?;
    ensure!(
        status == 200 && task["status"] == "succeeded",
        "{status} {task}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_database_is_a_clear_start_up_error() -> Result<()> {
    let dirs = Dirs::new()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let url = format!("postgres://wasmhive:secret@127.0.0.1:{port}/postgres");
    let started = node(&dirs, &url).await;
    ensure!(started.is_err(), "a daemon started without its database");
    let log = std::fs::read_to_string(dirs.log())?;
    ensure!(log.contains("cannot be reached"), "{log}");
    ensure!(!log.contains("secret"), "the password was logged: {log}");
    Ok(())
}

/// Waits until the task is `running` (the attempt has started somewhere).
async fn until_running(daemon: &Daemon, id: &str) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, task) = daemon.get(&format!("/api/v1/tasks/{id}")).await?;
        if task["status"] == "running" {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "never started: {task}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_and_wait_reach_the_daemon_running_the_attempt() -> Result<()> {
    let pg = LocalServer::start(&[])?;
    let url = pg.url();
    // One worker each: two spinning tasks run one on each daemon.
    let (a_dirs, b_dirs) = (
        Dirs::with_config("[pools]\nbatch = 1\n")?,
        Dirs::with_config("[pools]\nbatch = 1\n")?,
    );
    for dirs in [&a_dirs, &b_dirs] {
        dirs.install("spin", "spin")?;
        dirs.install("echo", "echo")?;
    }
    let a = node(&a_dirs, &url).await?;
    let b = node(&b_dirs, &url).await?;
    let spins = [
        a.submit("spin", json!({})).await?,
        a.submit("spin", json!({})).await?,
    ];
    for id in &spins {
        until_running(&a, id).await?;
    }
    // Both cancelled through A: one of them runs on B.
    for id in &spins {
        let (status, body) = a
            .request(
                reqwest::Method::DELETE,
                &format!("/api/v1/tasks/{id}"),
                None,
            )
            .await?;
        ensure!(status == 202 || status == 200, "{status} {body}");
    }
    for id in &spins {
        let task = a.wait(id).await?;
        ensure!(task["status"] == "cancelled", "{task}");
    }

    // With one daemon's worker held by a spinning task, `?wait` on either
    // daemon returns the echo the other one ran.
    let spin = a.submit("spin", json!({})).await?;
    until_running(&a, &spin).await?;
    let (on_a, on_b) = tokio::join!(
        a.run("echo", json!({ "from": "a" })),
        b.run("echo", json!({ "from": "b" })),
    );
    ensure!(on_a?["result"]["from"] == "a");
    ensure!(on_b?["result"]["from"] == "b");
    let (status, _) = b
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tasks/{spin}"),
            None,
        )
        .await?;
    ensure!(status == 202 || status == 200);
    ensure!(a.wait(&spin).await?["status"] == "cancelled");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_daemons_attempt_runs_again_on_another() -> Result<()> {
    let pg = LocalServer::start(&[])?;
    let url = pg.url();
    let config = "[pools]\nbatch = 1\n[store]\nlease_s = 2\n";
    let (a_dirs, b_dirs) = (Dirs::with_config(config)?, Dirs::with_config(config)?);
    for dirs in [&a_dirs, &b_dirs] {
        dirs.install("busy", "busy")?;
    }
    let a = node(&a_dirs, &url).await?;
    let id = a.submit("busy", json!({ "ms": 1500 })).await?;
    until_running(&a, &id).await?;
    a.kill().await?;
    // B never knew A: it finds A's attempt once A's lease runs out.
    let b = node(&b_dirs, &url).await?;
    let task = b.wait(&id).await?;
    ensure!(task["status"] == "succeeded", "{task}");
    ensure!(task["attempts"] == 2, "{task}");
    ensure!(
        task["attempt_log"][0]["error"]["kind"] == "interrupted",
        "the lost attempt is recorded: {task}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_are_listed_with_their_plugins_and_a_version_mismatch_is_reported() -> Result<()> {
    let pg = LocalServer::start(&[])?;
    let url = pg.url();
    let (a_dirs, b_dirs) = (Dirs::new()?, Dirs::new()?);
    a_dirs.install("echo", "echo")?;
    b_dirs.install("echo-v2", "echo")?;
    let a = node(&a_dirs, &url).await?;
    let b = node(&b_dirs, &url).await?;
    // B's heartbeat after its start-up scan may still be on its way.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let listed = loop {
        let (status, listed) = a.get("/api/v1/nodes").await?;
        ensure!(status == 200, "{listed}");
        let both_loaded = listed["nodes"]
            .as_array()
            .is_some_and(|n| n.len() == 2 && n.iter().all(|n| n["plugins"]["echo"].is_string()));
        if both_loaded {
            break listed;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "B never appeared: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let nodes = listed["nodes"].as_array().cloned().unwrap_or_default();
    let addresses: Vec<&str> = nodes.iter().filter_map(|n| n["address"].as_str()).collect();
    ensure!(addresses.contains(&a.url.as_str()), "{listed}");
    ensure!(addresses.contains(&b.url.as_str()), "{listed}");
    ensure!(nodes.iter().all(|n| n["pools"]["batch"] == 8), "{listed}");
    let mismatch = &listed["plugin_mismatches"][0];
    ensure!(mismatch["plugin"] == "echo", "{listed}");
    let versions: Vec<&str> = mismatch["versions"]
        .as_object()
        .map(|v| v.values().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    ensure!(
        versions.contains(&"1.0.0") && versions.contains(&"2.0.0"),
        "{listed}"
    );
    let metrics = reqwest::get(format!("{}/metrics", a.url))
        .await?
        .text()
        .await?;
    ensure!(
        metrics.contains("wasmhive_plugin_mismatch{plugin=\"echo\"} 1"),
        "{metrics}"
    );
    Ok(())
}
