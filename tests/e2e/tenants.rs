//! Plugins are tenants: each test drops a hostile guest beside `echo` and
//! checks that the attack is refused or contained, that echo tasks keep
//! succeeding alongside, and that health answers within 100 ms throughout.
//! One test per attack (the guests are `plugins/fixtures/<name>`).

use crate::support::{Daemon, Dirs, HealthWatch};
use anyhow::{Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;

/// How fast health must answer while a plugin attacks.
const HEALTH_LIMIT: Duration = Duration::from_millis(100);

/// Runs `n` echo tasks and checks each came back from echo itself.
async fn echo_traffic(daemon: &Daemon, n: usize) -> Result<()> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push((i, daemon.submit("echo", json!({ "i": i })).await?));
    }
    for (i, id) in ids {
        let task = daemon.wait(&id).await?;
        ensure!(task["status"] == "succeeded", "echo task failed: {task}");
        ensure!(
            task["result"] == json!({ "i": i }),
            "not echo's answer: {task}"
        );
        ensure!(
            task["plugin"]["name"] == "echo",
            "served by another: {task}"
        );
    }
    Ok(())
}

async fn breaker(daemon: &Daemon, name: &str) -> Result<Option<Value>> {
    let (_, body) = daemon.get("/api/hp/circuit-breakers").await?;
    Ok(body["circuit_breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == name)
        .cloned())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_cannot_take_the_kinds_of_another() -> Result<()> {
    let dirs = Dirs::new()?;
    // Sorts first and declares echo and scrape besides its own kind.
    dirs.install("kindthief", "aaa-thief")?;
    dirs.install("echo", "echo")?;
    dirs.install("allkinds", "scrape")?;
    let mut daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);

    let thief = daemon.plugin("aaa-thief.wasm").await?.unwrap_or_default();
    assert_eq!(thief["kinds"], json!(["kindthief"]), "{thief}");
    let refused: Vec<&str> = thief["refused_kinds"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["kind"].as_str())
        .collect();
    assert_eq!(refused, ["echo", "scrape"], "{thief}");
    echo_traffic(&daemon, 20).await?;
    let scrape = daemon.run("scrape", json!({ "url": "x" })).await?;
    assert_eq!(scrape["plugin"]["name"], "scrape", "{scrape}");

    // Replaced by remove + copy: the waiting file does not get `echo`.
    std::fs::remove_file(dirs.plugins().join("echo.wasm"))?;
    daemon
        .wait_for_plugin("echo.wasm", "unregister", |p| p.is_none())
        .await?;
    let (status, body) = daemon.try_submit("echo", json!({})).await?;
    assert_eq!(status, 422, "nobody serves echo while it is away: {body}");
    dirs.install("echo", "echo")?;
    daemon
        .wait_for_plugin("echo.wasm", "come back", |p| {
            p.is_some_and(|p| p["status"] == "loaded")
        })
        .await?;
    echo_traffic(&daemon, 20).await?;

    // A thief dropped in later is refused too, and a restart (the claims
    // are persisted) keeps everything where it was.
    dirs.install("kindthief", "zzz-thief")?;
    let late = daemon
        .wait_for_plugin("zzz-thief.wasm", "load", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert!(
        late["kinds"].as_array().is_some_and(|k| k.is_empty()),
        "{late}"
    );
    health.finish(HEALTH_LIMIT).await?;
    drop(daemon);
    daemon = Daemon::start(&dirs).await?;
    echo_traffic(&daemon, 10).await?;
    let thief = daemon.plugin("aaa-thief.wasm").await?.unwrap_or_default();
    assert_eq!(thief["kinds"], json!(["kindthief"]), "{thief}");
    let stolen = daemon.run("kindthief", json!({ "k": 1 })).await?;
    assert_eq!(stolen["result"]["kind"], "kindthief", "{stolen}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_that_says_it_is_another_gets_its_own_identity() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("impostor", "impostor")?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);

    let impostor = daemon.plugin("impostor.wasm").await?.unwrap_or_default();
    assert_eq!(impostor["name"], "impostor", "{impostor}");
    assert_eq!(impostor["declared_name"], "echo", "{impostor}");

    // Its failures (5 open a plugin's breaker) open its own, not echo's.
    for _ in 0..5 {
        let task = daemon
            .run_with(json!({ "kind": "impostor", "payload": {}, "max_retries": 0 }))
            .await?;
        assert_eq!(task["plugin"]["name"], "impostor", "{task}");
        assert_eq!(task["error"]["kind"], "trap", "{task}");
    }
    let own = breaker(&daemon, "plugin:impostor@1.0.0").await?;
    assert!(
        own.as_ref().is_some_and(|b| b["state"] == "open"),
        "{own:?}"
    );
    let echo = breaker(&daemon, "plugin:echo@1.0.0").await?;
    assert!(
        echo.as_ref().is_none_or(|b| b["state"] == "closed"),
        "{echo:?}"
    );
    echo_traffic(&daemon, 30).await?;

    // Metrics are keyed by the file, not the claim.
    let metrics = reqwest::get(format!("{}/metrics", daemon.url))
        .await?
        .text()
        .await?;
    assert!(metrics.contains("plugin=\"impostor\""), "{metrics}");
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_file_name_that_is_not_a_name_is_refused() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("flaky", "fla\"ky")?;
    let daemon = Daemon::start(&dirs).await?;
    let entry = daemon
        .wait_for_plugin("fla\"ky.wasm", "refuse", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert_eq!(entry["status"], "failed", "{entry}");
    assert!(
        entry["last_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not a usable plugin file name")),
        "{entry}"
    );
    echo_traffic(&daemon, 5).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_self_description_too_big_to_show_is_refused() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    // 10,001 kinds, a 50 MiB description and a name with a quote.
    dirs.install("infobomb", "infobomb")?;
    dirs.write("infobomb.toml", b"[limits]\nmemory_mb = 200\n")?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);
    let entry = daemon
        .wait_for_plugin("infobomb.wasm", "refuse", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert_eq!(entry["status"], "failed", "{entry}");
    let message = entry["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("not a name"), "{message}");
    assert!(message.len() < 1024, "the refusal quotes a bounded excerpt");
    let (_, plugins) = daemon.get("/api/v1/plugins").await?;
    assert!(plugins.to_string().len() < 64 * 1024, "status stays small");
    echo_traffic(&daemon, 10).await?;
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn spinning_describes_delay_neither_the_port_nor_other_files() -> Result<()> {
    let dirs = Dirs::with_config("[runtime]\ndescribe_timeout_ms = 3000\nmax_plugin_mb = 1\n")?;
    dirs.install("echo", "echo")?;
    for name in ["slow-a", "slow-b", "slow-c"] {
        dirs.install("slowdescribe", name)?;
    }
    let mut daemon = Daemon::start_listening(&dirs, &[]).await?;
    let health = HealthWatch::start(&daemon);
    // The daemon listens and answers while the spinning files are loading.
    let (status, body) = daemon.get("/api/hp/health").await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["plugins_scanned"], false, "{body}");
    daemon.ready(Duration::from_secs(60)).await?;
    for name in ["slow-a", "slow-b", "slow-c"] {
        let entry = daemon
            .plugin(&format!("{name}.wasm"))
            .await?
            .unwrap_or_default();
        assert_eq!(entry["status"], "failed", "{entry}");
        let message = entry["last_error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("describe() failed"), "{message}");
    }
    echo_traffic(&daemon, 10).await?;

    // A hot swap of echo beside a new spinning file: each slot loads on
    // its own, and the spinning one is stopped by describe's budget.
    dirs.install("slowdescribe", "slow-d")?;
    dirs.install("echo-v2", "echo")?;
    daemon
        .wait_for_plugin("echo.wasm", "swap to 2.0.0", |p| {
            p.is_some_and(|p| p["version"] == "2.0.0")
        })
        .await?;
    let slow = daemon
        .wait_for_plugin("slow-d.wasm", "refuse", |p| p.is_some())
        .await?
        .unwrap_or_default();
    assert_eq!(slow["status"], "failed", "{slow}");

    // A file over the size budget is refused before it is compiled.
    let mut big = vec![0u8, b'a', b's', b'm', 0x0d, 0, 1, 0];
    big.resize(2 << 20, 0);
    dirs.write("big.wasm", &big)?;
    let entry = daemon
        .wait_for_plugin("big.wasm", "refuse", |p| p.is_some())
        .await?
        .unwrap_or_default();
    let message = entry["last_error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("runtime.max_plugin_mb"), "{message}");
    let run = daemon.run("echo", json!("v2")).await?;
    assert_eq!(run["plugin"]["version"], "2.0.0", "{run}");
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}
