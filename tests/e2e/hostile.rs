//! Hostile and failing guests: each fails only its own task, with the right
//! failure kind, while echo tasks keep succeeding alongside.

use crate::support::{Daemon, Dirs, error_kind, error_message};
use anyhow::Result;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn each_hostile_guest_fails_alone_with_its_failure_kind() -> Result<()> {
    let dirs = Dirs::new()?;
    for name in [
        "echo",
        "spin",
        "membomb",
        "panic",
        "stackoverflow",
        "bigoutput",
        "fatal",
        "flaky",
    ] {
        dirs.install(name, name)?;
    }
    // Room for bigoutput to build its 64 MiB result: the host must refuse
    // the result itself, not the allocation.
    dirs.write("bigoutput.toml", b"[limits]\nmemory_mb = 200\n")?;
    let daemon = Daemon::start(&dirs).await?;

    // Echo traffic runs through the whole test.
    let mut echoes = Vec::new();
    for i in 0..50 {
        echoes.push(daemon.submit("echo", json!({ "i": i })).await?);
    }

    let spin = daemon.submit_with_timeout("spin", 1).await?;
    let membomb = daemon.submit("membomb", json!({})).await?;
    let panic = daemon.submit("panic", json!({})).await?;
    let stackoverflow = daemon.submit("stackoverflow", json!({})).await?;
    let bigoutput = daemon.submit("bigoutput", json!({})).await?;
    let fatal = daemon.submit("fatal", json!({})).await?;
    let flaky = daemon.submit("flaky", json!({ "fail": 2 })).await?;
    let flaky_ok = daemon.submit("flaky", json!({ "fail": 0 })).await?;

    for i in 50..100 {
        echoes.push(daemon.submit("echo", json!({ "i": i })).await?);
    }

    let task = daemon.wait(&spin).await?;
    assert_eq!(error_kind(&task), "timeout", "{task}");
    assert_eq!(
        task["attempts"], 1,
        "max_retries 0: a timeout is not retried"
    );
    assert!(error_message(&task).contains("1000 ms"), "{task}");

    let task = daemon.wait(&membomb).await?;
    assert_eq!(error_kind(&task), "out_of_memory", "{task}");
    assert!(error_message(&task).contains("cap is 64.0 MiB"), "{task}");

    let task = daemon.wait(&panic).await?;
    assert_eq!(error_kind(&task), "trap", "{task}");
    assert!(
        error_message(&task).contains("fixture panic while handling task"),
        "{task}"
    );

    let task = daemon.wait(&stackoverflow).await?;
    assert_eq!(error_kind(&task), "trap", "{task}");
    assert!(error_message(&task).contains("stack overflow"), "{task}");

    let task = daemon.wait(&bigoutput).await?;
    assert_eq!(error_kind(&task), "fatal", "{task}");
    assert!(
        error_message(&task).contains("over the 16 MiB limit"),
        "{task}"
    );

    let task = daemon.wait(&fatal).await?;
    assert_eq!(error_kind(&task), "fatal", "{task}");
    assert_eq!(task["status"], "failed");
    assert_eq!(task["attempts"], 1, "fatal is never retried");

    // Retryable failures are retried (quickly, in this test's config).
    let task = daemon.wait(&flaky).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"]["succeeded_on_attempt"], 3);
    assert_eq!(task["attempts"], 3);
    assert_eq!(
        task["attempt_log"][0]["error"]["kind"], "retryable",
        "{task}"
    );
    let task = daemon.wait(&flaky_ok).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"]["succeeded_on_attempt"], 1);

    for (i, id) in echoes.iter().enumerate() {
        let task = daemon.wait(id).await?;
        assert_eq!(task["status"], "succeeded", "{task}");
        assert_eq!(task["result"], json!({ "i": i }));
    }
    // Everyone is still loaded and serving.
    assert_eq!(
        daemon.run("membomb", json!({})).await?["error"]["kind"],
        "out_of_memory"
    );
    assert_eq!(
        daemon.run("echo", json!("still here")).await?["result"],
        "still here"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fuel_budget_stops_a_guest_deterministically() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("busy", "busy")?;
    dirs.write("busy.toml", b"[limits]\nfuel = 5000000\n")?;
    let daemon = Daemon::start(&dirs).await?;
    let task = daemon.run("busy", json!({ "ms": 60000 })).await?;
    assert_eq!(error_kind(&task), "fuel", "{task}");
    assert!(error_message(&task).contains("fuel budget"), "{task}");
    // A short task fits in the same budget.
    let task = daemon.run("busy", json!({ "ms": 0 })).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_sets_the_memory_cap_and_reloads_with_it() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("membomb", "membomb")?;
    let daemon = Daemon::start(&dirs).await?;
    let task = daemon.run("membomb", json!({})).await?;
    assert!(error_message(&task).contains("cap is 64.0 MiB"), "{task}");

    dirs.write("membomb.toml", b"[limits]\nmemory_mb = 16\n")?;
    daemon
        .wait_for_plugin("membomb.wasm", "reload with the manifest", |p| {
            p.is_some_and(|p| p["limits"]["memory_mb"] == 16)
        })
        .await?;
    let task = daemon.run("membomb", json!({})).await?;
    assert_eq!(error_kind(&task), "out_of_memory", "{task}");
    assert!(error_message(&task).contains("cap is 16.0 MiB"), "{task}");

    // A manifest with a typo is refused with the reason; the version with
    // the 16 MiB cap keeps serving.
    dirs.write("membomb.toml", b"[limits]\nmemory_mbs = 8\n")?;
    let entry = daemon
        .wait_for_plugin("membomb.wasm", "report the bad manifest", |p| {
            p.is_some_and(|p| p["last_error"].is_object())
        })
        .await?;
    let message = entry
        .as_ref()
        .and_then(|p| p["last_error"]["message"].as_str())
        .unwrap_or_default()
        .to_string();
    assert!(
        message.contains("membomb.toml") && message.contains("memory_mbs"),
        "{message}"
    );
    let task = daemon.run("membomb", json!({})).await?;
    assert!(error_message(&task).contains("cap is 16.0 MiB"), "{task}");
    Ok(())
}

impl Daemon {
    async fn submit_with_timeout(&self, kind: &str, timeout_s: u64) -> Result<String> {
        let (status, task) = self
            .request(
                reqwest::Method::POST,
                "/api/v1/tasks",
                Some(json!({ "kind": kind, "payload": {}, "timeout_s": timeout_s, "max_retries": 0 })),
            )
            .await?;
        anyhow::ensure!(status == 202, "submission refused ({status}): {task}");
        Ok(task["task_id"].as_str().unwrap_or_default().to_string())
    }
}
