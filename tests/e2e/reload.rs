//! The hot-reloaded plugins directory: swaps under load, bad files, removal,
//! and restarts from the compile cache.

use crate::support::{Daemon, Dirs, error_kind};
use anyhow::{Result, ensure};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_under_load_loses_nothing() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("busy", "busy")?;
    let daemon = Daemon::start(&dirs).await?;

    let mut busy = Vec::new();
    for i in 0..200 {
        busy.push(daemon.submit("busy", json!({ "ms": 5 + i % 10 })).await?);
    }
    // Echo tasks in flight across the swap.
    let mut echoes = Vec::new();
    for i in 0..20 {
        echoes.push(daemon.submit("echo", json!({ "before": i })).await?);
    }

    let renamed = Instant::now();
    dirs.install("echo-v2", "echo")?;
    let mut versions = Vec::new();
    let first_v2 = loop {
        let task = daemon
            .run("echo", json!({ "probe": versions.len() }))
            .await?;
        ensure!(
            task["status"] == "succeeded",
            "echo failed during the swap: {task}"
        );
        let version = task["plugin"]["version"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        versions.push(version.clone());
        if version == "2.0.0" {
            assert_eq!(task["result"]["version"], "2.0.0");
            assert_eq!(task["result"]["payload"]["probe"], versions.len() - 1);
            break renamed.elapsed();
        }
        ensure!(
            renamed.elapsed() < Duration::from_secs(10),
            "still on v1 after 10 s"
        );
    };
    println!("hot swap: first task on 2.0.0 {first_v2:?} after the rename");
    // Once a task has seen v2, no later task sees v1.
    for _ in 0..10 {
        let task = daemon.run("echo", json!({})).await?;
        assert_eq!(task["plugin"]["version"], "2.0.0", "{task}");
    }

    for id in busy.iter().chain(&echoes) {
        let task = daemon.wait(id).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
    }
    let entry = daemon.plugin("echo.wasm").await?.unwrap_or_default();
    assert_eq!(entry["version"], "2.0.0");
    assert_eq!(entry["previous_version"], "1.0.0");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_files_are_reported_while_the_old_version_serves() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;

    // Garbage written over a serving plugin, in place.
    dirs.write("echo.wasm", b"this is not webassembly")?;
    let entry = daemon
        .wait_for_plugin("echo.wasm", "report the garbage", |p| {
            p.is_some_and(|p| p["last_error"].is_object())
        })
        .await?
        .unwrap_or_default();
    assert_eq!(entry["status"], "loaded");
    assert_eq!(entry["version"], "1.0.0");
    let message = entry["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not a WebAssembly file"), "{message}");
    assert_eq!(
        daemon.run("echo", json!("v1")).await?["plugin"]["version"],
        "1.0.0"
    );

    // A component of the wrong world, renamed over it.
    dirs.install("wrongworld", "echo")?;
    let entry = daemon
        .wait_for_plugin("echo.wasm", "report the wrong world", |p| {
            p.is_some_and(|p| {
                p["last_error"]["message"].as_str().is_some_and(|m| {
                    m.contains("does not implement the wasmhive:plugin/handler world")
                })
            })
        })
        .await?
        .unwrap_or_default();
    assert_eq!(entry["version"], "1.0.0");
    assert_eq!(
        daemon.run("echo", json!("still v1")).await?["result"],
        "still v1"
    );

    // New files that never load are listed as failed, with the reason.
    dirs.write("garbage.wasm", b"\x00asm garbage")?;
    dirs.install("wrongworld", "wrongworld")?;
    let garbage = daemon
        .wait_for_plugin("garbage.wasm", "report garbage.wasm", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert_eq!(garbage["status"], "failed");
    assert!(garbage["last_error"]["message"].is_string(), "{garbage}");
    let wrong = daemon
        .wait_for_plugin("wrongworld.wasm", "report wrongworld.wasm", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert_eq!(wrong["status"], "failed");
    dirs.install("wrongversion", "wrongversion")?;
    dirs.install("describetrap", "describetrap")?;
    for (file, reason) in [
        (
            "wrongversion.wasm",
            "was built against wasmhive:plugin@0.2.0",
        ),
        ("describetrap.wasm", "describetrap cannot describe itself"),
    ] {
        let entry = daemon
            .wait_for_plugin(file, "report the failure", |p| p.is_some())
            .await?
            .unwrap_or_default();
        assert_eq!(entry["status"], "failed", "{entry}");
        let message = entry["last_error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{file}: {message}");
    }

    // Fixing the file brings the new version in.
    dirs.install("echo-v2", "echo")?;
    daemon
        .wait_for_plugin("echo.wasm", "load echo 2.0.0", |p| {
            p.is_some_and(|p| p["version"] == "2.0.0" && p["last_error"].is_null())
        })
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_plugin_for_the_same_kind_is_refused_until_the_operator_grants_it() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    dirs.install("echo-v2", "echo-copy")?;
    let entry = daemon
        .wait_for_plugin("echo-copy.wasm", "refuse the newcomer", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert_eq!(entry["status"], "failed", "{entry}");
    let message = entry["last_error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("kind `echo`") && message.contains("echo.wasm"),
        "{message}"
    );
    assert_eq!(
        daemon.run("echo", json!(1)).await?["plugin"]["version"],
        "1.0.0"
    );

    // The holder going away does not hand its kind to whoever waits.
    std::fs::remove_file(dirs.plugins().join("echo.wasm"))?;
    daemon
        .wait_for_plugin("echo.wasm", "unregister", |p| p.is_none())
        .await?;
    let copy = daemon.plugin("echo-copy.wasm").await?.unwrap_or_default();
    assert_eq!(copy["status"], "failed", "{copy}");

    // The operator's grant moves it.
    dirs.write("echo-copy.toml", b"kinds = [\"echo\"]\n")?;
    daemon
        .wait_for_plugin("echo-copy.wasm", "serve once granted", |p| {
            p.is_some_and(|p| p["status"] == "loaded")
        })
        .await?;
    assert_eq!(
        daemon.run("echo", json!(1)).await?["plugin"]["version"],
        "2.0.0"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn removing_a_plugin_unregisters_its_kind() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("fatal", "fatal")?;
    let daemon = Daemon::start(&dirs).await?;
    std::fs::remove_file(dirs.plugins().join("echo.wasm"))?;
    daemon
        .wait_for_plugin("echo.wasm", "unregister", |p| p.is_none())
        .await?;
    let (status, body) = daemon.try_submit("echo", json!({})).await?;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "unknown_kind");
    assert_eq!(error_kind(&daemon.run("fatal", json!({})).await?), "fatal");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_loads_plugins_from_the_compile_cache() -> Result<()> {
    let dirs = Dirs::new()?;
    for name in ["echo", "busy", "panic"] {
        dirs.install(name, name)?;
    }
    let first = Daemon::start(&dirs).await?;
    let (_, plugins) = first.get("/api/v1/plugins").await?;
    assert_eq!(plugins["compile_cache"]["misses"], 3, "{plugins}");
    // The cache writes happen off the request path; wait for the files.
    let cache = dirs.data().join("cache");
    let deadline = Instant::now() + Duration::from_secs(10);
    while count_files(&cache) < 3 {
        ensure!(
            Instant::now() < deadline,
            "compile cache not written within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await?;

    let second = Daemon::start(&dirs).await?;
    let (_, plugins) = second.get("/api/v1/plugins").await?;
    assert_eq!(plugins["compile_cache"]["hits"], 3, "{plugins}");
    for p in plugins["plugins"].as_array().into_iter().flatten() {
        assert_eq!(p["from_compile_cache"], true, "{p}");
    }
    assert_eq!(
        second.run("echo", json!("cached")).await?["result"],
        "cached"
    );
    Ok(())
}

fn count_files(dir: &std::path::Path) -> usize {
    walk(dir).filter(|p| p.is_file()).count()
}

fn walk(dir: &std::path::Path) -> Box<dyn Iterator<Item = std::path::PathBuf>> {
    let entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    Box::new(entries.into_iter().flat_map(|p| {
        if p.is_dir() {
            walk(&p)
        } else {
            Box::new(std::iter::once(p)) as Box<dyn Iterator<Item = _>>
        }
    }))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_category_without_a_pool_is_refused_with_the_pools_there_are() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.write("echo.toml", b"category = \"gpu\"\n")?;
    let daemon = Daemon::start(&dirs).await?;
    let entry = daemon.plugin("echo.wasm").await?.unwrap_or_default();
    assert_eq!(entry["status"], "failed", "{entry}");
    let message = entry["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("`gpu` has no worker pool"), "{message}");
    assert!(
        message.contains("batch, embedding, maintenance, rag, scraping"),
        "{message}"
    );
    Ok(())
}
