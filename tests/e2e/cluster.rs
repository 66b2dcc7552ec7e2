//! Several daemons on one PostgreSQL under load, as an operator runs them:
//! three daemons sharing 10,000 tasks while the leader is killed, and the
//! database itself stopped and started again while tasks keep arriving.

use crate::support::{Daemon, Dirs};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use wasmhive::store::postgres::local::LocalServer;

/// Short leases, so a dead daemon's attempts and leadership come free soon.
const CONFIG: &str = "[pools]\nbatch = 4\n[store]\nlease_s = 2\n";

async fn node(dirs: &Dirs, url: &str) -> Result<Daemon> {
    Daemon::start_with_env(dirs, &[("WASMHIVE_STORE", url)]).await
}

/// The node id of a daemon.
async fn node_id(daemon: &Daemon) -> Result<String> {
    let (_, workers) = daemon.get("/api/hp/workers").await?;
    workers["node"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("no node id: {workers}"))
}

/// Waits until `daemon` reports a leader other than `not`; its id.
async fn until_leader(daemon: &Daemon, not: Option<&str>) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, nodes) = daemon.get("/api/v1/nodes").await?;
        if status == 200
            && let Some(leader) = nodes["leader"].as_str()
            && Some(leader) != not
        {
            return Ok(leader.to_string());
        }
        ensure!(Instant::now() < deadline, "no new leader: {nodes}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for every task in `ids`, spread over `daemons`, 16 at a time.
async fn wait_all(daemons: &[&Daemon], ids: &[String]) -> Result<Vec<Value>> {
    use futures::StreamExt;
    let waits = ids
        .iter()
        .enumerate()
        .map(|(i, id)| daemons[i % daemons.len()].wait(id));
    let done: Vec<Result<Value>> = futures::stream::iter(waits).buffered(16).collect().await;
    done.into_iter().collect()
}

/// Waits until `daemon` runs some of `ids`; those it runs.
async fn running_of(daemon: &Daemon, ids: &[String]) -> Result<Vec<String>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, workers) = daemon.get("/api/hp/workers").await?;
        let running: Vec<String> = workers["pools"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|p| p["workers"].as_array().cloned().unwrap_or_default())
            .filter_map(|w| w["task_id"].as_str().map(str::to_string))
            .filter(|id| ids.contains(id))
            .collect();
        if !running.is_empty() {
            return Ok(running);
        }
        ensure!(Instant::now() < deadline, "it never ran one: {workers}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every attempt of `task` is in its log, and each one but the last was
/// cut short by a daemon that went away: no attempt was claimed twice.
fn claimed_once(task: &Value) -> Result<()> {
    let attempts = task["attempts"].as_u64().unwrap_or(0);
    let log = task["attempt_log"].as_array().context("no attempt log")?;
    ensure!(
        attempts >= 1 && log.len() as u64 == attempts,
        "attempts and log disagree: {task}"
    );
    for earlier in &log[..log.len() - 1] {
        ensure!(
            earlier["error"]["kind"] == "interrupted",
            "an attempt ran again without its daemon going away: {task}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn three_daemons_share_ten_thousand_tasks_through_a_killed_leader() -> Result<()> {
    let pg = LocalServer::start(&[])?;
    let url = pg.url();
    let dirs = [
        Dirs::with_config(CONFIG)?,
        Dirs::with_config(CONFIG)?,
        Dirs::with_config(CONFIG)?,
    ];
    let mut started = Vec::new();
    for d in &dirs {
        d.install("echo", "echo")?;
        d.install("busy", "busy")?;
        started.push(node(d, &url).await?);
    }
    let leader = until_leader(&started[0], None).await?;
    let mut ids = Vec::new();
    for d in &started {
        ids.push(node_id(d).await?);
    }
    let mut daemons: Vec<Option<Daemon>> = started.into_iter().map(Some).collect();
    let victim = ids
        .iter()
        .position(|id| *id == leader)
        .with_context(|| format!("the leader {leader} is none of {ids:?}"))?;

    // 10,000 echo tasks, round-robin over the daemons in batches of 100;
    // a third of the way through, every worker of every daemon (3 x 4)
    // gets a long task, and the leader is killed (kill -9) while it runs
    // some of them.
    let mut echo_ids = Vec::new();
    let mut busy_ids = Vec::new();
    let mut on_victim = Vec::new();
    let mut alive: Vec<usize> = (0..daemons.len()).collect();
    for batch in 0..100 {
        if batch == 33 {
            let busy = (0..12)
                .map(|_| json!({ "kind": "busy", "priority": "HIGH", "payload": { "ms": 5000 } }))
                .collect();
            let other = daemons[(victim + 1) % 3].as_ref().context("no daemon")?;
            busy_ids = other.submit_batch(busy).await?;
            let killed = daemons[victim].take().context("no leader")?;
            on_victim = running_of(&killed, &busy_ids).await?;
            killed.kill().await?;
            alive.retain(|&d| d != victim);
        }
        let to = alive[batch % alive.len()];
        let tasks = (0..100)
            .map(|i| json!({ "kind": "echo", "payload": { "n": batch * 100 + i } }))
            .collect();
        let daemon = daemons[to].as_ref().context("a killed daemon")?;
        echo_ids.extend(daemon.submit_batch(tasks).await?);
    }
    let survivors: Vec<&Daemon> = daemons.iter().flatten().collect();

    // Another daemon takes the lead, and rescues the dead one's attempts.
    let new_leader = until_leader(survivors[0], Some(&leader)).await?;
    ensure!(new_leader != leader);
    // A worker of the killed daemon shows a task as soon as it took the
    // job; an attempt whose start had committed is recorded as interrupted
    // and runs again, one that had not is only a claim, rescued unrun.
    let mut rescued = 0;
    for id in &on_victim {
        let task = survivors[0].wait(id).await?;
        ensure!(task["status"] == "succeeded", "{task}");
        claimed_once(&task)?;
        if task["attempt_log"][0]["error"]["kind"] == "interrupted" {
            rescued += 1;
        }
    }
    ensure!(
        on_victim.is_empty() || rescued > 0,
        "none of the killed daemon's attempts was recorded as interrupted"
    );

    // Nothing is lost, nothing ran twice but what the kill cut short.
    let mut all = busy_ids.clone();
    all.extend(echo_ids.iter().cloned());
    ensure!(all.len() == 10_012);
    let tasks = wait_all(&survivors, &all).await?;
    for (i, task) in tasks.iter().enumerate() {
        ensure!(task["status"] == "succeeded", "task {i}: {task}");
        claimed_once(task)?;
    }
    for (i, task) in tasks[12..].iter().enumerate() {
        ensure!(
            task["result"]["n"] == i,
            "task {i} ran the wrong payload: {task}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_database_restarted_under_load_loses_no_accepted_task() -> Result<()> {
    let mut pg = LocalServer::start(&[])?;
    let url = pg.url();
    let (a_dirs, b_dirs) = (Dirs::with_config(CONFIG)?, Dirs::with_config(CONFIG)?);
    for d in [&a_dirs, &b_dirs] {
        d.install("echo", "echo")?;
        d.install("busy", "busy")?;
    }
    let a = node(&a_dirs, &url).await?;
    let b = node(&b_dirs, &url).await?;

    // Attempts running while the database goes away: their outcomes are
    // written once it is back.
    let running = a
        .submit_batch(
            (0..4)
                .map(|_| json!({ "kind": "busy", "payload": { "ms": 2000 } }))
                .collect(),
        )
        .await?;

    // A client submitting one task at a time, round-robin, doing what a
    // 503 says: wait `Retry-After` (shortened here), then send it again.
    let (accepted_tx, mut accepted_rx) = tokio::sync::mpsc::unbounded_channel();
    let urls = [a.url.clone(), b.url.clone()];
    let client = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut refused = 0;
        for n in 0..1500 {
            let base = &urls[n % 2];
            loop {
                let response = http
                    .post(format!("{base}/api/v1/tasks"))
                    .json(&json!({ "kind": "echo", "payload": { "n": n } }))
                    .send()
                    .await?;
                let status = response.status().as_u16();
                if status == 202 {
                    let body: Value = response.json().await?;
                    let id = body["task_id"].as_str().context("no id")?.to_string();
                    let _ = accepted_tx.send((n, id));
                    break;
                }
                ensure!(status == 503, "refused with {status}");
                ensure!(
                    response.headers().contains_key("retry-after"),
                    "a 503 without Retry-After"
                );
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        anyhow::Ok(refused)
    });

    // A few hundred accepted, then the database stops as if it crashed,
    // and comes back.
    let mut accepted = Vec::new();
    while accepted.len() < 300 {
        accepted.push(accepted_rx.recv().await.context("the client stopped")?);
    }
    tokio::task::block_in_place(|| pg.stop())?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, health) = a.get("/api/hp/health").await?;
        if health["status"] == "degraded" {
            break;
        }
        ensure!(Instant::now() < deadline, "never degraded: {health}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A task that cannot be read is not "not found": reads say the store
    // is away, as submissions do.
    let (status, body) = a.get(&format!("/api/v1/tasks/{}", accepted[0].1)).await?;
    ensure!(
        status == 503,
        "a read while the database is away: {status} {body}"
    );
    ensure!(body["error"]["code"] == "store_unavailable", "{body}");
    let (status, body) = a.get("/api/v1/tasks").await?;
    ensure!(
        status == 503,
        "a listing while the database is away: {status} {body}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    tokio::task::block_in_place(|| pg.start_again())?;

    let refused = client.await??;
    ensure!(
        refused > 0,
        "no submission was refused while the database was away"
    );
    while let Ok(one) = accepted_rx.try_recv() {
        accepted.push(one);
    }
    ensure!(accepted.len() == 1500, "{} accepted", accepted.len());
    let ids: Vec<String> = accepted.iter().map(|(_, id)| id.clone()).collect();
    let tasks = wait_all(&[&a, &b], &ids).await?;
    for ((n, _), task) in accepted.iter().zip(&tasks) {
        ensure!(task["status"] == "succeeded", "task {n}: {task}");
        ensure!(task["result"]["n"] == *n, "task {n}: {task}");
    }
    for task in wait_all(&[&a], &running).await? {
        ensure!(task["status"] == "succeeded", "{task}");
    }
    Ok(())
}
