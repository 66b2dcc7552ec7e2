//! The dashboard and the event stream: served by the daemon, behind auth,
//! live in a real browser (headless Chromium driven by playwright-core).

use crate::support::{Daemon, Dirs};
use anyhow::{Context, Result, ensure};
use std::path::Path;
use std::time::Duration;

const TOKEN: &str = "dashboard-test-token";

async fn start() -> Result<(Daemon, Dirs)> {
    let dirs = Dirs::with_config(&format!("auth_token = \"{TOKEN}\"\n"))?;
    dirs.install("progress", "progress")?;
    dirs.install("panic", "panic")?;
    let daemon = Daemon::start(&dirs).await?;
    Ok((daemon, dirs))
}

#[tokio::test]
async fn the_event_stream_sends_stats_and_task_changes_behind_auth() -> Result<()> {
    let (daemon, _dirs) = start().await?;
    let client = reqwest::Client::new();
    let page = client.get(format!("{}/", daemon.url)).send().await?;
    assert_eq!(page.status(), 200, "the page itself is public");
    assert!(page.text().await?.contains("<title>wasmhive</title>"));
    let refused = client
        .get(format!("{}/api/v1/events", daemon.url))
        .send()
        .await?;
    assert_eq!(refused.status(), 401);

    let mut stream = client
        .get(format!("{}/api/v1/events?access_token={TOKEN}", daemon.url))
        .send()
        .await?;
    assert_eq!(stream.status(), 200);
    let submitted = client
        .post(format!("{}/api/v1/tasks", daemon.url))
        .bearer_auth(TOKEN)
        .json(&serde_json::json!({ "kind": "progress", "payload": { "steps": 2, "step_ms": 50 } }))
        .send()
        .await?;
    let id = submitted.json::<serde_json::Value>().await?["task_id"]
        .as_str()
        .context("no task id")?
        .to_string();
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !seen.contains("\"status\":\"succeeded\"") {
        let chunk = tokio::time::timeout_at(deadline, stream.chunk())
            .await
            .context("no succeeded event within 20 s")??
            .context("the stream ended")?;
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains("event: stats"), "{seen}");
    let ours: Vec<&str> = seen
        .lines()
        .filter(|l| l.starts_with("data:") && l.contains(&id))
        .collect();
    // queued -> running -> progress 50 -> progress 100 -> succeeded, in order.
    let statuses: Vec<&str> = ours
        .iter()
        .filter_map(|l| l.split("\"status\":\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(statuses.first(), Some(&"queued"), "{ours:#?}");
    assert_eq!(statuses.last(), Some(&"succeeded"), "{ours:#?}");
    assert!(
        ours.iter().any(|l| l.contains("\"percent\":50")),
        "{ours:#?}"
    );
    Ok(())
}

#[tokio::test]
async fn the_dashboard_shows_work_live_in_a_browser() -> Result<()> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let script = repo.join("tests/browser/dashboard.mjs");
    ensure!(
        repo.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "playwright-core is not installed: run `cargo xtask test` (it runs npm ci in tests/browser)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    ensure!(
        Path::new(&chromium).exists(),
        "no Chromium at {chromium}: run `cargo xtask test` (it installs Debian's chromium) or set CHROMIUM"
    );
    let artifacts = repo.join("target/browser");
    std::fs::create_dir_all(&artifacts)?;
    let screenshot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let (daemon, _dirs) = start().await?;
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new("node")
            .arg(&script)
            .env("WASMHIVE_URL", &daemon.url)
            .env("WASMHIVE_TOKEN", TOKEN)
            .env("SCREENSHOT", &screenshot)
            .env("CHROMIUM", &chromium)
            .output(),
    )
    .await
    .context("the browser script did not finish within 120 s")??;
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{log}");
    ensure!(out.status.success(), "the browser test failed:\n{log}");
    assert!(
        log.contains("succeeded") && log.contains("is open"),
        "{log}"
    );
    let size = std::fs::metadata(&screenshot)?.len();
    assert!(size > 10_000, "screenshot of {size} bytes");
    Ok(())
}
