//! Several daemons on one PostgreSQL, run with `cargo xtask bench --bench
//! cluster` (release profile): end-to-end durable throughput with echo
//! (submit -> succeeded) and submit -> start latency, with 1, 2 and 3
//! daemons sharing a throwaway PostgreSQL server on this machine, against
//! one daemon on SQLite (`synchronous=FULL`) in the same run. The daemons
//! run in this process (one tokio runtime, as many cores as the machine
//! has); tasks are submitted round-robin from concurrent submitters, and
//! each waits for its tasks on the daemon it submitted them to, wherever
//! they ran.
//!
//! PostgreSQL runs with its defaults (fsync on, synchronous_commit on): a
//! `202` is a committed row, as with SQLite FULL.
//!
//! Then, on the same daemons, the submit -> start latency of one task at a
//! time on an idle queue (each waited for before the next is submitted).
//!
//! Figures are printed, never asserted. With `WASMHIVE_BENCH_PROFILE=1`
//! each PostgreSQL run also prints the statements that took the server's
//! time (`pg_stat_statements`).

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use std::time::{Duration, Instant};
use support::Result;
use wasmhive::Daemon;
use wasmhive::config::StoreBackend;
use wasmhive::store::postgres::local::LocalServer;
use wasmhive::task::Priority;

fn main() -> Result<()> {
    support::run(async_main)
}

/// Tasks per run, as the cluster test submits.
const TASKS: usize = 10_000;

/// Concurrent submitters across all daemons.
const SUBMITTERS: usize = 256;

/// Workers of each daemon's `batch` pool.
const WORKERS: usize = 32;

struct Figures {
    per_s: f64,
    start_p50: Duration,
    start_mean: Duration,
    /// Submit -> start of one task at a time on an idle queue.
    idle_p50: Duration,
    idle_mean: Duration,
}

/// Tasks submitted one at a time for the idle latency.
const IDLE_TASKS: usize = 200;

async fn async_main() -> Result<()> {
    println!("== end to end, echo, durable (submit -> succeeded), {TASKS} tasks");
    let sqlite = run(None, 1).await?;
    report("sqlite, 1 daemon", &sqlite, None);
    let profile = std::env::var_os("WASMHIVE_BENCH_PROFILE").is_some();
    for daemons in 1..=3 {
        let server = if profile {
            LocalServer::start(&["shared_preload_libraries=pg_stat_statements"])?
        } else {
            LocalServer::start(&[])?
        };
        let figures = run(Some(&server.url()), daemons).await?;
        if profile {
            print_statements(&server.url()).await?;
        }
        let label = format!(
            "postgres, {daemons} daemon{}",
            if daemons == 1 { "" } else { "s" }
        );
        report(&label, &figures, Some(&sqlite));
    }
    Ok(())
}

/// The statements that took the most of the server's time.
async fn print_statements(url: &str) -> Result<()> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(connection);
    client
        .batch_execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .await?;
    let rows = client
        .query(
            "SELECT calls, total_exec_time, rows, left(regexp_replace(query, '\\s+', ' ', 'g'), 110)
             FROM pg_stat_statements ORDER BY total_exec_time DESC LIMIT 12",
            &[],
        )
        .await?;
    for row in rows {
        let (calls, total, n, query): (i64, f64, i64, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        println!("  {total:>9.0} ms {calls:>8} calls {n:>8} rows  {query}");
    }
    Ok(())
}

fn report(label: &str, f: &Figures, sqlite: Option<&Figures>) {
    let ratio = sqlite.map_or(String::new(), |s| {
        format!("  ({:.0}% of sqlite)", 100.0 * f.per_s / s.per_s)
    });
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{label:<22} {:>7.0} tasks/s  submit->start p50 {:>7.2} ms, mean {:>7.2} ms; \
         idle p50 {:>5.2} ms, mean {:>5.2} ms{ratio}",
        f.per_s,
        ms(f.start_p50),
        ms(f.start_mean),
        ms(f.idle_p50),
        ms(f.idle_mean),
    );
}

/// Starts `daemons` daemons on PostgreSQL at `url` (or one on SQLite),
/// runs [`TASKS`] echo tasks through them and stops them.
async fn run(url: Option<&str>, daemons: usize) -> Result<Figures> {
    let root = tempfile::tempdir()?;
    let mut nodes = Vec::new();
    for n in 0..daemons {
        let dir = root.path().join(format!("node-{n}"));
        let mut config = support::config(&dir, WORKERS);
        match url {
            Some(url) => {
                config.store.backend = StoreBackend::Postgres;
                config.store.url = Some(url.to_string());
            }
            None => config.store.backend = StoreBackend::Sqlite,
        }
        std::fs::create_dir_all(&config.plugins)?;
        support::install(&config.plugins, "echo", "echo")?;
        let daemon = Daemon::start(config).await?;
        daemon.ready().await;
        nodes.push(daemon);
    }
    let schedulers: Vec<_> = nodes.iter().map(|d| d.scheduler().clone()).collect();
    let start = Instant::now();
    let mut submitters = Vec::new();
    for s in 0..SUBMITTERS {
        let scheduler = schedulers[s % schedulers.len()].clone();
        submitters.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in (s..TASKS).step_by(SUBMITTERS) {
                let task = support::task("echo", serde_json::json!({ "i": i }), Priority::Normal);
                if let Ok(sub) = scheduler.submit(task).await {
                    ids.push(sub.task.task_id);
                }
            }
            let mut starts = Vec::new();
            for id in &ids {
                if let Some(t) = scheduler.wait(*id, Duration::from_secs(300)).await
                    && let Some(started) = t.started_at
                {
                    starts.push(started.duration_since(t.created_at).unwrap_or_default());
                }
            }
            starts
        }));
    }
    let mut starts = Vec::new();
    for s in submitters {
        starts.extend(s.await?);
    }
    let took = start.elapsed();
    // Latency on an idle queue: one task at a time, round-robin, each
    // waited for before the next.
    let mut idle = Vec::new();
    for i in 0..IDLE_TASKS {
        let scheduler = &schedulers[i % schedulers.len()];
        let task = support::task("echo", serde_json::json!({ "i": i }), Priority::Normal);
        if let Ok(sub) = scheduler.submit(task).await
            && let Some(t) = scheduler
                .wait(sub.task.task_id, Duration::from_secs(30))
                .await
            && let Some(started) = t.started_at
        {
            idle.push(started.duration_since(t.created_at).unwrap_or_default());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for daemon in &nodes {
        daemon.shutdown().await;
    }
    let (start_p50, start_mean) = p50_mean(&mut starts);
    let (idle_p50, idle_mean) = p50_mean(&mut idle);
    Ok(Figures {
        per_s: starts.len() as f64 / took.as_secs_f64(),
        start_p50,
        start_mean,
        idle_p50,
        idle_mean,
    })
}

fn p50_mean(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    let n = samples.len().max(1);
    (
        samples.get(samples.len() / 2).copied().unwrap_or_default(),
        samples.iter().sum::<Duration>() / n as u32,
    )
}
