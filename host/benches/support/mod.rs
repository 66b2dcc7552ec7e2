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

/// Starts an in-process daemon on `root` with `fixtures` installed.
pub async fn start(root: &Path, fixtures: &[&str], batch_workers: usize) -> Result<Daemon> {
    let config = config(root, batch_workers);
    std::fs::create_dir_all(&config.plugins)?;
    for name in fixtures {
        install(&config.plugins, name, name)?;
    }
    Ok(Daemon::start(config).await?)
}
