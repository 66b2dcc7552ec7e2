//! The command-line client against a daemon with auth on: submit with a
//! progress bar, status, tasks, plugins, breakers.

use crate::support::{Daemon, Dirs};
use anyhow::Result;
use serde_json::Value;
use std::process::Output;

const TOKEN: &str = "client-test-token";

async fn wasmhive(daemon: &Daemon, args: &[&str], token: Option<&str>) -> Result<Output> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmhive"));
    cmd.args(args)
        .env("WASMHIVE_URL", &daemon.url)
        .env_remove("WASMHIVE_AUTH_TOKEN");
    if let Some(t) = token {
        cmd.env("WASMHIVE_AUTH_TOKEN", t);
    }
    Ok(cmd.output().await?)
}

#[tokio::test]
async fn the_client_submits_follows_and_lists() -> Result<()> {
    let dirs = Dirs::with_config(&format!("auth_token = \"{TOKEN}\"\n"))?;
    dirs.install("progress", "progress")?;
    let daemon = Daemon::start(&dirs).await?;

    let out = wasmhive(
        &daemon,
        &[
            "submit",
            "progress",
            "--payload",
            r#"{"steps":4,"step_ms":150}"#,
            "--priority",
            "high",
            "--wait",
        ],
        Some(TOKEN),
    )
    .await?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let task: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(task["status"], "succeeded");
    assert_eq!(task["priority"], "HIGH");
    // Not a terminal: one line per change of the bar.
    assert!(
        stderr.contains("[######------------------]  25% running  step 1 of 4"),
        "{stderr}"
    );
    assert!(
        stderr.contains("[########################] 100% succeeded"),
        "{stderr}"
    );
    let id = task["task_id"].as_str().unwrap_or_default();

    let status = wasmhive(&daemon, &["status", id], Some(TOKEN)).await?;
    let again: Value = serde_json::from_slice(&status.stdout)?;
    assert_eq!(again["result"]["steps"], 4);

    let tasks = wasmhive(&daemon, &["tasks", "--kind", "progress"], Some(TOKEN)).await?;
    let listing = String::from_utf8_lossy(&tasks.stdout);
    assert!(
        listing.starts_with("TASK") && listing.contains(id) && listing.contains("succeeded"),
        "{listing}"
    );
    let plugins = wasmhive(&daemon, &["plugins"], Some(TOKEN)).await?;
    assert!(String::from_utf8_lossy(&plugins.stdout).contains("progress.wasm  progress  1.0.0"));
    let breakers = wasmhive(&daemon, &["breakers", "--json"], Some(TOKEN)).await?;
    let breakers: Value = serde_json::from_slice(&breakers.stdout)?;
    assert!(
        breakers["circuit_breakers"]
            .as_array()
            .is_some_and(|b| b.len() >= 4)
    );

    // A failing submission exits non-zero with the daemon's reason.
    let unknown = wasmhive(&daemon, &["submit", "nope"], Some(TOKEN)).await?;
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no loaded plugin handles kind `nope`")
    );
    let no_token = wasmhive(&daemon, &["tasks"], None).await?;
    assert!(!no_token.status.success());
    assert!(String::from_utf8_lossy(&no_token.stderr).contains("WASMHIVE_AUTH_TOKEN"));
    Ok(())
}

#[tokio::test]
async fn cancel_stops_a_task_and_errors_are_one_line_without_a_backtrace() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("progress", "progress")?;
    let daemon = Daemon::start(&dirs).await?;
    let id = daemon
        .submit(
            "progress",
            serde_json::json!({ "steps": 100, "step_ms": 200 }),
        )
        .await?;
    let out = wasmhive(&daemon, &["cancel", &id], None).await?;
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.starts_with(&id), "{said}");
    let task = daemon.wait(&id).await?;
    assert_eq!(task["status"], "cancelled", "{task}");

    // No daemon there: what to do, on one line, even with RUST_BACKTRACE.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmhive"))
        .args(["status", &id, "--url", "http://127.0.0.1:9"])
        .env("RUST_BACKTRACE", "1")
        .output()
        .await?;
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        said.contains("wasmhive serve") && said.contains("WASMHIVE_URL"),
        "{said}"
    );
    assert!(
        !said.contains("backtrace") && said.lines().count() == 1,
        "{said}"
    );
    Ok(())
}
