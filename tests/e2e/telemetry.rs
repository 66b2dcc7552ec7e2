//! Traces: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the daemon exports a span
//! per task attempt over OTLP/HTTP to a tiny receiver started by the test.

use crate::support::{Daemon, Dirs};
use anyhow::{Context, Result};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::post;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Export requests received: content type and raw protobuf body.
type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

async fn receiver() -> Result<(String, Received)> {
    let received: Received = Arc::default();
    let router = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(r): State<Received>, headers: HeaderMap, body: Bytes| async move {
                    let kind = headers
                        .get("content-type")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    if let Ok(mut r) = r.lock() {
                        r.push((kind, body.to_vec()));
                    }
                    // An empty ExportTraceServiceResponse.
                    (
                        [("content-type", "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((format!("http://{addr}"), received))
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn task_attempts_are_exported_as_spans_over_otlp() -> Result<()> {
    let (endpoint, received) = receiver().await?;
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start_with_env(
        &dirs,
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
            ("OTEL_SERVICE_NAME", "wasmhive-test"),
        ],
    )
    .await?;
    let task = daemon.run("echo", json!({ "traced": true })).await?;
    let id = task["task_id"].as_str().context("no task id")?.to_string();

    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = received.lock().map(|r| r.clone()).unwrap_or_default();
        if let Some((kind, body)) = got.iter().find(|(_, b)| contains(b, &id)) {
            assert_eq!(kind, "application/x-protobuf");
            for expected in [
                "attempt",
                "task.kind",
                "echo",
                "plugin.version",
                "1.0.0",
                "outcome",
                "succeeded",
                "wasmhive-test",
            ] {
                assert!(contains(body, expected), "span without {expected}");
            }
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "no span for task {id} reached the receiver in 20 s ({} export requests)",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `wasmhive serve` on a free port over `plugins` and `dirs`' data, with
/// the environment's colour and filter settings removed.
fn serve(dirs: &Dirs, plugins: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_wasmhive"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .arg("--plugins")
        .arg(plugins)
        .arg("--data")
        .arg(dirs.data())
        .env_remove("NO_COLOR")
        .env_remove("RUST_LOG");
    cmd
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_plugins_directory_is_an_error_with_strict() -> Result<()> {
    let dirs = Dirs::new()?;
    let missing = dirs.plugins().join("typo");
    let out = serve(&dirs, &missing).arg("--strict").output()?;
    anyhow::ensure!(!out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    anyhow::ensure!(
        said.contains("does not exist") && said.contains("typo"),
        "{said}"
    );
    anyhow::ensure!(!missing.exists(), "nothing is created with --strict");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_have_no_colour_off_a_terminal_and_a_bad_log_filter_stops_the_start() -> Result<()> {
    let dirs = Dirs::new()?;
    let serve = || serve(&dirs, &dirs.plugins());
    let bad = serve().env("WASMHIVE_LOG", "wasmhive=loud").output()?;
    anyhow::ensure!(bad.status.code() == Some(2), "{bad:?}");
    let said = String::from_utf8_lossy(&bad.stderr);
    anyhow::ensure!(said.contains("WASMHIVE_LOG=`wasmhive=loud`"), "{said}");

    // Stderr to a file (not a terminal), NO_COLOR unset: plain text.
    let log = dirs.data().with_extension("stderr");
    let mut daemon = serve()
        .env("WASMHIVE_LOG", "wasmhive=debug")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("plugins") || Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let _ = daemon.kill();
    let _ = daemon.wait();
    anyhow::ensure!(!text.is_empty(), "the daemon logged nothing");
    anyhow::ensure!(!text.contains('\u{1b}'), "ANSI escapes in a file: {text}");
    Ok(())
}

/// `promtool`: `WASMHIVE_PROMTOOL`, else Debian's.
fn promtool() -> std::path::PathBuf {
    std::env::var_os("WASMHIVE_PROMTOOL").map_or_else(|| "/usr/bin/promtool".into(), Into::into)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_metrics_pass_promtool_and_name_the_process_and_build() -> Result<()> {
    let tool = promtool();
    anyhow::ensure!(
        tool.exists(),
        "{} is missing: `cargo xtask test` installs it (apt-get install prometheus), or set WASMHIVE_PROMTOOL",
        tool.display()
    );
    let (daemon, _dirs) = Daemon::with_fixtures(&["echo"]).await?;
    let done = daemon.run("echo", json!({ "n": 1 })).await?;
    anyhow::ensure!(done["status"] == "succeeded", "{done}");
    let text = daemon
        .client
        .get(format!("{}/metrics", daemon.url))
        .send()
        .await?
        .text()
        .await?;
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "wasmhive_build_info{",
    ] {
        anyhow::ensure!(text.contains(name), "{name} missing from /metrics");
    }
    let mut check = tokio::process::Command::new(&tool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = check.stdin.take().context("promtool's stdin")?;
        stdin.write_all(text.as_bytes()).await?;
    }
    let out = check.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}
