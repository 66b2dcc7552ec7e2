//! What the benchmarks share: the fixture guests and an in-process daemon.

// Each benchmark binary includes this module and uses a part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use wasmhive::{Config, Daemon};

pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The built fixture guest `name`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins/fixtures")
        .join(format!("{name}.wasm"))
}

/// Fails with the command to run when the guests are not built.
pub fn require_fixtures() -> Result<()> {
    if fixture("echo").exists() {
        Ok(())
    } else {
        Err("fixtures missing: run `cargo xtask build-plugins`".into())
    }
}

/// Copies a fixture into a plugins directory, write-then-rename.
pub fn install(dir: &Path, fixture_name: &str, as_name: &str) -> Result<()> {
    let tmp = dir.join(format!(".{as_name}.tmp"));
    std::fs::copy(fixture(fixture_name), &tmp)?;
    std::fs::rename(&tmp, dir.join(format!("{as_name}.wasm")))?;
    Ok(())
}

/// A daemon config rooted in `root` (plugins/ and data/ below it) whose
/// `batch` pool, where the fixtures run, has `batch_workers` workers. The
/// store is in memory, so runtime and scheduler figures do not include the
/// disk; the store benchmark sets its own.
pub fn config(root: &Path, batch_workers: usize) -> Config {
    let mut config = Config {
        plugins: root.join("plugins"),
        data: root.join("data"),
        ..Config::default()
    };
    config.store.backend = wasmhive::config::StoreBackend::Memory;
    config.pools.insert("batch".into(), batch_workers);
    config.runtime.max_instances = 512;
    config
}

/// The models `cargo xtask models` fetched (or `WASMHIVE_MODELS`).
pub fn models_dir() -> PathBuf {
    std::env::var_os("WASMHIVE_MODELS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models"),
        PathBuf::from,
    )
}

/// Installs the built bundled handler `name` with `manifest`.
pub fn install_handler(dir: &Path, name: &str, manifest: &str) -> Result<()> {
    let built = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/plugins")
        .join(format!("{name}.wasm"));
    std::fs::write(dir.join(format!("{name}.toml")), manifest)?;
    std::fs::copy(built, dir.join(format!("{name}.wasm")))?;
    Ok(())
}

/// Starts an in-process daemon on `root` with `fixtures` installed.
pub async fn start(root: &Path, fixtures: &[&str], batch_workers: usize) -> Result<Daemon> {
    let config = config(root, batch_workers);
    std::fs::create_dir_all(&config.plugins)?;
    for name in fixtures {
        install(&config.plugins, name, name)?;
    }
    let daemon = Daemon::start(config).await?;
    daemon.ready().await;
    Ok(daemon)
}

/// One attempt of an echo task, for calling the runtime directly.
pub fn echo_attempt(n: u64) -> wasmhive::runtime::Attempt {
    wasmhive::runtime::Attempt {
        task_id: format!("bench-{n}"),
        kind: "echo".into(),
        payload: "{\"n\":1}".into(),
        priority: wasmhive::task::Priority::Normal,
        attempt: 1,
        budget: std::time::Duration::from_secs(10),
        cancel: wasmhive::runtime::sandbox::CancelToken::default(),
        tasks: std::sync::Arc::new(wasmhive::capabilities::tasks::NoTaskHost),
        fuel: None,
    }
}

/// A task to submit to the scheduler.
pub fn task(
    kind: &str,
    payload: serde_json::Value,
    priority: wasmhive::task::Priority,
) -> wasmhive::scheduler::NewTask {
    wasmhive::scheduler::NewTask::new(kind, payload, priority)
}

/// Echo tasks per second through `Runtime::run` alone, from `callers`
/// concurrent loops for `window`.
pub async fn raw_throughput(
    daemon: &Daemon,
    callers: u64,
    window: std::time::Duration,
) -> Result<f64> {
    let registry = daemon.scheduler().registry().clone();
    let runtime = registry.runtime().clone();
    let echo = registry.resolve("echo").ok_or("echo did not load")?;
    let start = std::time::Instant::now();
    let mut loops = Vec::new();
    for c in 0..callers {
        let (runtime, echo) = (runtime.clone(), echo.clone());
        loops.push(tokio::spawn(async move {
            let mut done = 0u64;
            while start.elapsed() < window {
                if runtime.run(&echo, echo_attempt(c)).await.is_ok() {
                    done += 1;
                }
            }
            done
        }));
    }
    let mut total = 0;
    for l in loops {
        total += l.await?;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

/// Runs a benchmark's async body on a multi-threaded runtime, once the
/// guests are built.
pub fn run<F: std::future::Future<Output = Result<()>>>(body: impl FnOnce() -> F) -> Result<()> {
    require_fixtures()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(body())
}

/// Whether the section `name` runs: every section when the command line
/// names none (`cargo bench --bench store -- sequential` runs only the
/// sections whose name contains `sequential`).
pub fn selected(name: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str()))
}
