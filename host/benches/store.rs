//! Durable store benchmarks, run with `cargo xtask bench` (release profile):
//!
//! 1. end-to-end throughput with echo, submit -> succeeded, in-process, with
//!    the SQLite store (synchronous FULL and NORMAL) against the in-memory
//!    store in the same run (medians of three interleaved runs);
//! 2. REST submissions per second against the real `wasmhive` binary in its
//!    own process, loaded from this one over loopback (single and batch);
//! 3. one client on one keep-alive connection, sequential, as a Celery
//!    user's client measures: submit and `?wait` latency, daemon CPU per task;
//! 4. restart recovery time with 100k queued tasks in the database.
//!
//! Sections are named `end-to-end`, `rest-concurrent`, `rest-sequential`
//! and `restart`; `cargo bench --bench store -- NAME` runs only those whose
//! name contains NAME. In the sequential section, the memory store is
//! measured beside SQLite, so what durability costs is in the same run.
//!
//! Figures are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};
use support::Result;
use tokio::io::{AsyncBufReadExt, BufReader};
use wasmhive::Daemon;
use wasmhive::config::StoreBackend;
use wasmhive::store::TaskRecord;
use wasmhive::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
use wasmhive::task::Priority;

fn main() -> Result<()> {
    support::run(async_main)
}

/// Concurrent submitters: each waits for its task to be durable, so this
/// many are needed to keep group commits full.
const SUBMITTERS: usize = 2048;

/// Submits `n` echo tasks from [`SUBMITTERS`] concurrent submitters and
/// waits for all.
async fn end_to_end(backend: StoreBackend, synchronous: Synchronous, n: usize) -> Result<f64> {
    let root = tempfile::tempdir()?;
    let mut config = support::config(root.path(), 64);
    config.store.backend = backend;
    config.store.synchronous = synchronous;
    std::fs::create_dir_all(&config.plugins)?;
    support::install(&config.plugins, "echo", "echo")?;
    let daemon = Daemon::start(config).await?;
    daemon.ready().await;
    let scheduler = daemon.scheduler().clone();
    let start = Instant::now();
    let mut submitters = Vec::new();
    for s in 0..SUBMITTERS {
        let scheduler = scheduler.clone();
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (s..n).step_by(SUBMITTERS) {
                if let Ok(sub) = scheduler
                    .submit(support::task(
                        "echo",
                        serde_json::json!({ "i": i }),
                        Priority::Normal,
                    ))
                    .await
                {
                    ids.push(sub.task.task_id);
                }
            }
            for id in &ids {
                scheduler.wait(*id, Duration::from_secs(120)).await;
            }
            ids.len()
        }));
    }
    let mut done = 0;
    for s in submitters {
        done += s.await?;
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

async fn async_main() -> Result<()> {
    if support::selected("end-to-end") {
        end_to_end_section().await?;
    }
    if support::selected("rest-concurrent") {
        rest_concurrent().await?;
    }
    if support::selected("rest-sequential") {
        rest_sequential().await?;
    }
    if support::selected("restart") {
        restart().await?;
    }
    Ok(())
}

async fn end_to_end_section() -> Result<()> {
    println!("== 1. end to end, echo, in-process (submit -> succeeded)");
    // Each figure is the median of three runs, interleaved, so a noisy
    // neighbour on a shared machine moves all three backends alike.
    let n = 100_000;
    let (mut memory, mut normal, mut full) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..3 {
        memory.push(end_to_end(StoreBackend::Memory, Synchronous::Full, n).await?);
        normal.push(end_to_end(StoreBackend::Sqlite, Synchronous::Normal, n).await?);
        full.push(end_to_end(StoreBackend::Sqlite, Synchronous::Full, n).await?);
    }
    let (memory, normal, full) = (median(memory), median(normal), median(full));
    println!("memory store:              {memory:>8.0} tasks/s");
    println!(
        "sqlite, synchronous=NORMAL: {normal:>8.0} tasks/s  ({:.0}% of memory)",
        100.0 * normal / memory
    );
    println!(
        "sqlite, synchronous=FULL:   {full:>8.0} tasks/s  ({:.0}% of memory)",
        100.0 * full / memory
    );

    Ok(())
}

async fn rest_concurrent() -> Result<()> {
    println!("== 2. REST submissions, daemon in its own process (sqlite, FULL)");
    let root = tempfile::tempdir()?;
    let (mut child, base) = spawn_daemon(root.path(), "sqlite").await?;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    for (label, batch) in [("one task per request", 1usize), ("batches of 100", 100)] {
        let window = Duration::from_secs(3);
        let start = Instant::now();
        let mut loaders = Vec::new();
        for _ in 0..64 {
            let (client, base) = (client.clone(), base.clone());
            loaders.push(tokio::spawn(async move {
                let mut accepted = 0usize;
                while start.elapsed() < window {
                    let response = if batch == 1 {
                        client
                            .post(format!("{base}/api/v1/tasks"))
                            .json(&serde_json::json!({ "kind": "echo", "payload": 1 }))
                            .send()
                            .await
                    } else {
                        let tasks: Vec<_> = (0..batch)
                            .map(|_| serde_json::json!({ "kind": "echo", "payload": 1 }))
                            .collect();
                        client
                            .post(format!("{base}/api/v1/tasks/batch"))
                            .json(&serde_json::json!({ "tasks": tasks }))
                            .send()
                            .await
                    };
                    if response.is_ok_and(|r| r.status() == 202) {
                        accepted += batch;
                    }
                }
                accepted
            }));
        }
        let mut accepted = 0;
        for l in loaders {
            accepted += l.await?;
        }
        println!(
            "{label:<22} {:>8.0} durable submissions/s (64 keep-alive clients)",
            accepted as f64 / start.elapsed().as_secs_f64()
        );
    }
    child.kill().await?;

    Ok(())
}

async fn rest_sequential() -> Result<()> {
    println!("== 3. one client, one keep-alive connection, sequential");
    for store in ["memory", "sqlite"] {
        let root = tempfile::tempdir()?;
        let (mut child, base) = spawn_daemon(root.path(), store).await?;
        let pid = child.id().ok_or("no daemon pid")?;
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(1)
            .build()?;
        for (label, path) in [
            ("submit", "/api/v1/tasks"),
            ("submit ?wait, echo", "/api/v1/tasks?wait=10"),
        ] {
            let url = format!("{base}{path}");
            let body = serde_json::json!({ "kind": "echo", "payload": 1 });
            for _ in 0..200 {
                client.post(&url).json(&body).send().await?.bytes().await?;
            }
            let n = 5_000;
            let cpu_before = cpu_time(pid)?;
            let mut took = Vec::with_capacity(n);
            for _ in 0..n {
                let start = Instant::now();
                let response = client.post(&url).json(&body).send().await?;
                let status = response.status();
                response.bytes().await?;
                took.push(start.elapsed());
                if !status.is_success() {
                    return Err(format!("{label}: HTTP {status}").into());
                }
            }
            let cpu = cpu_time(pid)?.saturating_sub(cpu_before);
            took.sort();
            let at = |q: f64| took[((took.len() as f64 * q) as usize).min(took.len() - 1)];
            println!(
                "{store:<7} {label:<19} p50 {:>7.3} ms  p99 {:>7.3} ms  daemon CPU {:>5.0} µs/task",
                at(0.50).as_secs_f64() * 1e3,
                at(0.99).as_secs_f64() * 1e3,
                cpu.as_secs_f64() * 1e6 / n as f64,
            );
        }
        child.kill().await?;
    }
    Ok(())
}

async fn restart() -> Result<()> {
    println!("== 4. restart with 100k queued tasks");
    let root = tempfile::tempdir()?;
    let mut config = support::config(root.path(), 2);
    config.store.backend = StoreBackend::Sqlite;
    std::fs::create_dir_all(&config.plugins)?;
    std::fs::create_dir_all(&config.data)?;
    support::install(&config.plugins, "echo", "echo")?;
    {
        let options = SqliteOptions {
            synchronous: Synchronous::Normal,
            max_size_mb: 0,
        };
        let store = SqliteStore::open(&config.data.join("tasks.db"), &options)?;
        let mut inserts = tokio::task::JoinSet::new();
        for i in 0..100_000usize {
            let store = store.clone();
            inserts.spawn(async move { store.insert(queued(i)).await.is_ok() });
        }
        while inserts.join_next().await.is_some() {}
    }
    let start = Instant::now();
    let daemon = Daemon::start(config).await?;
    daemon.ready().await;
    let took = start.elapsed();
    let queued: usize = daemon
        .scheduler()
        .pool_gauges()
        .await
        .iter()
        .map(|g| g.queued.iter().sum::<usize>() + g.running)
        .sum();
    println!(
        "daemon start incl. loading and re-queueing: {took:?} ({queued} tasks back in the queue when it returned)"
    );
    Ok(())
}

/// Starts the `wasmhive` binary with its defaults (synchronous=FULL) on
/// `store` (sqlite or memory) with echo installed; returns it and its base
/// URL.
async fn spawn_daemon(
    root: &std::path::Path,
    store: &str,
) -> Result<(tokio::process::Child, String)> {
    let config = support::config(root, 8);
    std::fs::create_dir_all(&config.plugins)?;
    support::install(&config.plugins, "echo", "echo")?;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmhive"))
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--plugins")
        .arg(&config.plugins)
        .arg("--data")
        .arg(&config.data)
        .args(["--store", store])
        .env("WASMHIVE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let line = lines.next_line().await?.ok_or("daemon exited")?;
    let base = line
        .strip_prefix("wasmhive listening on ")
        .ok_or("bad first line")?
        .to_string();
    // Wait for the plugins (the second line says the daemon is ready).
    lines.next_line().await?;
    Ok((child, base))
}

/// The middle value.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(0.0)
}

/// User plus system CPU time a process has used (Linux `/proc/PID/stat`).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').ok_or("bad /proc stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11).ok_or("no utime")?.parse::<u64>()?
        + fields.get(12).ok_or("no stime")?.parse::<u64>()?;
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    Ok(Duration::from_millis(ticks * 10))
}

fn queued(i: usize) -> TaskRecord {
    TaskRecord {
        category: Some("batch".into()),
        max_retries: 3,
        timeout_s: 300,
        ..TaskRecord::new(
            "echo",
            serde_json::json!({ "i": i }),
            Priority::ALL[i % 5],
            SystemTime::now(),
        )
    }
}
