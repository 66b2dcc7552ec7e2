//! Sandbox benchmarks, run with `cargo xtask bench` (release profile):
//!
//! 1. cost per task: fresh Store + instantiate + `handle` (echo) + drop,
//!    against a native call of the same body in the same run, with the
//!    store set-up measured on its own to show what dominates;
//! 2. in-process throughput with echo on all cores, through the runtime
//!    alone and through the scheduler;
//! 3. hot-swap latency (rename -> first task on the new version) and daemon
//!    start time with a cold and a warm compile cache.
//!
//! The figures are printed, never asserted: targets are checked by reading
//! them, not by a timed test.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::{Result, install};
use wasmhive::Daemon;
use wasmhive::capabilities::Caller;
use wasmhive::capabilities::tasks::NoTaskHost;
use wasmhive::runtime::sandbox::{AttemptSetup, CancelToken, HostState};
use wasmhive::task::Priority;

/// The guest's body, natively: hand the payload back and parse it as the
/// host parses a result.
#[inline(never)]
fn native_echo(payload: &str) -> serde_json::Value {
    serde_json::from_str(black_box(payload)).unwrap_or_default()
}

fn per_op(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_secs_f64() * 1e6 / n as f64
}

fn main() -> Result<()> {
    support::run(async_main)
}

async fn async_main() -> Result<()> {
    let root = tempfile::tempdir()?;
    let daemon = support::start(root.path(), &["echo"], 64).await?;
    let registry = daemon.scheduler().registry().clone();
    let runtime = registry.runtime().clone();
    let echo = registry.resolve("echo").ok_or("echo did not load")?;

    println!("== 1. cost per task (one at a time)");
    let n = 20_000u64;
    for i in 0..1_000 {
        runtime.run(&echo, support::echo_attempt(i)).await?;
    }
    let start = Instant::now();
    for i in 0..n {
        black_box(runtime.run(&echo, support::echo_attempt(i)).await?);
    }
    let sandbox_us = per_op(start.elapsed(), n);

    let start = Instant::now();
    for _ in 0..n {
        let setup = AttemptSetup {
            caller: Caller {
                plugin: "echo".into(),
                version: "1.0.0".into(),
                manifest_file: "echo.toml".into(),
                task_id: "bench".into(),
            },
            config: Arc::default(),
            grants: Default::default(),
            services: Default::default(),
            memory_cap_bytes: 64 << 20,
            deadline: Instant::now() + Duration::from_secs(10),
            cancel: CancelToken::default(),
            tasks: Arc::new(NoTaskHost),
        };
        black_box(HostState::new_store(runtime.engine(), setup, None));
    }
    let store_us = per_op(start.elapsed(), n);

    let native_n = 1_000_000u64;
    let start = Instant::now();
    for _ in 0..native_n {
        black_box(native_echo("{\"n\":1}"));
    }
    let native_us = per_op(start.elapsed(), native_n);
    println!("sandboxed echo (store + instantiate + handle + drop): {sandbox_us:.2} µs/task");
    println!("  of which store set-up (WASI ctx, limits, deadline):  {store_us:.2} µs");
    println!(
        "  so instantiate + call + teardown:                    {:.2} µs",
        sandbox_us - store_us
    );
    println!(
        "native echo body:                                     {:.3} µs/task",
        native_us
    );
    println!(
        "ratio sandbox / native:                               {:.0}x",
        sandbox_us / native_us
    );

    println!(
        "== 2. throughput with echo on {} cores",
        std::thread::available_parallelism()?.get()
    );
    let concurrency = 64;
    let raw_rate = support::raw_throughput(&daemon, concurrency, Duration::from_secs(3)).await?;
    println!("runtime only: {raw_rate:.0} tasks/s ({concurrency} concurrent callers)");

    let scheduler = daemon.scheduler().clone();
    let tasks = 100_000u64;
    let start = Instant::now();
    let mut ids = Vec::with_capacity(tasks as usize);
    for i in 0..tasks {
        let submitted = scheduler
            .submit(support::task(
                "echo",
                serde_json::json!({ "i": i }),
                Priority::Normal,
            ))
            .await?;
        ids.push(submitted.task.task_id);
    }
    for id in ids {
        scheduler.wait(id, Duration::from_secs(60)).await;
    }
    let sched_rate = tasks as f64 / start.elapsed().as_secs_f64();
    println!(
        "through the scheduler (submit -> succeeded, in memory): {sched_rate:.0} tasks/s ({:.0}% of runtime only)",
        100.0 * sched_rate / raw_rate
    );

    println!("== 3. hot swap and restart");
    let plugins = daemon.config().plugins.clone();
    let mut swaps = Vec::new();
    for round in 0..10 {
        let (to, want) = if round % 2 == 0 {
            ("echo-v2", "2.0.0")
        } else {
            ("echo", "1.0.0")
        };
        let renamed = Instant::now();
        install(&plugins, to, "echo")?;
        loop {
            let current = registry.resolve("echo").ok_or("echo vanished")?;
            if current.info.version == want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        swaps.push(renamed.elapsed());
    }
    swaps.sort();
    println!(
        "rename -> new version serving: median {:?}, max {:?} (10 swaps; debounce {} ms)",
        swaps[swaps.len() / 2],
        swaps[swaps.len() - 1],
        daemon.config().runtime.reload_debounce_ms
    );
    drop(daemon);

    let root = tempfile::tempdir()?;
    let config = support::config(root.path(), 2);
    std::fs::create_dir_all(&config.plugins)?;
    let names = [
        "echo",
        "busy",
        "spin",
        "membomb",
        "panic",
        "stackoverflow",
        "bigoutput",
        "flaky",
        "fatal",
    ];
    for name in names {
        install(&config.plugins, name, name)?;
    }
    let start = Instant::now();
    let daemon = Daemon::start(config.clone()).await?;
    daemon.ready().await;
    drop(daemon);
    let cold = start.elapsed();
    // Let the cache writer finish before the warm start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let start = Instant::now();
    let daemon = Daemon::start(config).await?;
    daemon.ready().await;
    drop(daemon);
    let warm = start.elapsed();
    println!(
        "daemon start with {} plugins: cold cache {cold:?}, warm cache {warm:?} ({:.1}x faster)",
        names.len(),
        cold.as_secs_f64() / warm.as_secs_f64()
    );
    Ok(())
}
