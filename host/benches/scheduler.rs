//! Scheduler benchmarks, run with `cargo xtask bench` (release profile):
//!
//! 1. throughput with echo through the whole path — submit, queue, worker,
//!    sandbox, outcome — in-process (REST excluded), then over REST on
//!    loopback, each as a ratio to the raw runtime (`Runtime::run` in a loop)
//!    measured in the same run: the scheduler's own overhead;
//! 2. CRITICAL latency (submit -> finished) p50/p99 while BULK saturates the
//!    same pool, against the same pool idle.
//!
//! Figures are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use std::time::{Duration, Instant};
use support::{Result, task};
use wasmhive::scheduler::Scheduler;
use wasmhive::task::Priority;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    support::run(async_main)
}

async fn async_main() -> Result<()> {
    let root = tempfile::tempdir()?;
    let daemon = support::start(root.path(), &["echo", "busy"], 64).await?;
    let scheduler = daemon.scheduler().clone();

    println!("== 1. throughput with echo");
    let window = Duration::from_secs(3);
    let raw_rate = support::raw_throughput(&daemon, 64, window).await?;
    println!("raw runtime (64 callers):                 {raw_rate:>8.0} tasks/s");

    let n = 100_000;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        ids.push(
            scheduler
                .submit(task(
                    "echo",
                    serde_json::json!({ "i": i }),
                    Priority::Normal,
                ))
                .await?
                .task
                .task_id,
        );
    }
    for id in &ids {
        scheduler.wait(*id, Duration::from_secs(120)).await;
    }
    let sched_rate = n as f64 / start.elapsed().as_secs_f64();
    println!(
        "scheduler, in-process (submit -> done):  {sched_rate:>8.0} tasks/s  ({:.0}% of raw)",
        100.0 * sched_rate / raw_rate
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let router = daemon.router();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()?;
    let url = format!("http://{addr}/api/v1/tasks?wait=30");
    let start = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..64 {
        let (client, url) = (client.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let mut done = 0u64;
            while start.elapsed() < window {
                let response = client
                    .post(&url)
                    .json(&serde_json::json!({ "kind": "echo", "payload": { "n": 1 } }))
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status() == 200) {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut rest = 0;
    for c in clients {
        rest += c.await?;
    }
    let rest_rate = rest as f64 / start.elapsed().as_secs_f64();
    println!(
        "over REST, ?wait (64 keep-alive clients): {rest_rate:>8.0} tasks/s  ({:.0}% of raw; client in the same process)",
        100.0 * rest_rate / raw_rate
    );
    drop(daemon);

    println!("== 2. CRITICAL latency, 4-worker pool, busy tasks of 5 ms");
    let root = tempfile::tempdir()?;
    let daemon = support::start(root.path(), &["echo", "busy"], 4).await?;
    let scheduler = daemon.scheduler().clone();
    let idle = critical_latencies(&scheduler, 200).await?;
    let flood = {
        let s = scheduler.clone();
        tokio::spawn(async move {
            // Keep ~200 BULK tasks queued for the whole measurement.
            let mut queued = std::collections::VecDeque::new();
            for _ in 0..2_000 {
                while queued.len() >= 200 {
                    if let Some(id) = queued.pop_front() {
                        s.wait(id, Duration::from_secs(60)).await;
                    }
                }
                if let Ok(sub) = s
                    .submit(task("busy", serde_json::json!({ "ms": 5 }), Priority::Bulk))
                    .await
                {
                    queued.push_back(sub.task.task_id);
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let saturated = critical_latencies(&scheduler, 200).await?;
    flood.abort();
    let (i50, i99) = (percentile(&idle, 0.5), percentile(&idle, 0.99));
    let (s50, s99) = (percentile(&saturated, 0.5), percentile(&saturated, 0.99));
    println!("idle pool:        p50 {i50:>10.2?}  p99 {i99:>10.2?}");
    println!("BULK saturating:  p50 {s50:>10.2?}  p99 {s99:>10.2?}");
    println!(
        "ratio saturated / idle: p50 {:.2}x, p99 {:.2}x (target p99 <= 2x)",
        s50.as_secs_f64() / i50.as_secs_f64(),
        s99.as_secs_f64() / i99.as_secs_f64()
    );
    Ok(())
}

/// Submits `n` CRITICAL busy(5 ms) tasks one after another and returns
/// each one's submit -> finished time, sorted.
async fn critical_latencies(scheduler: &Scheduler, n: usize) -> Result<Vec<Duration>> {
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let start = Instant::now();
        let id = scheduler
            .submit(task(
                "busy",
                serde_json::json!({ "ms": 5 }),
                Priority::Critical,
            ))
            .await?
            .task
            .task_id;
        scheduler.wait(id, Duration::from_secs(60)).await;
        latencies.push(start.elapsed());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    latencies.sort();
    Ok(latencies)
}
