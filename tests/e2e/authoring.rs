//! Plugin authors' tools, run as an author would: `wasmhive new` in both
//! languages, building the result, `wasmhive test` with budgets, recorded
//! HTTP and `--against`; and the Python example serving in a daemon.

use crate::servers::Site;
use crate::support::{Daemon, Dirs, fixture, handler};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs the `wasmhive` binary with `args` (without blocking the test's
/// runtime, which may be serving the site the plugin fetches).
async fn wasmhive(args: &[&str], dir: &Path) -> Result<Output> {
    Ok(tokio::process::Command::new(env!("CARGO_BIN_EXE_wasmhive"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .await?)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `wasmhive test --format json`, parsed; fails if the command could not run.
async fn test_json(args: &[&str], dir: &Path) -> Result<(bool, Value)> {
    let mut all = vec!["test"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = wasmhive(&all, dir).await?;
    let report: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("not a JSON report: {}", text(&out)))?;
    Ok((out.status.success(), report))
}

fn write_case(dir: &Path, file: &str, case: &Value) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join(file), serde_json::to_vec_pretty(case)?)?;
    Ok(())
}

#[tokio::test]
async fn a_new_rust_plugin_builds_and_passes_its_tests() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let out = wasmhive(&["new", "word-count"], parent.path()).await?;
    ensure!(out.status.success(), "{}", text(&out));
    let dir = parent.path().join("word-count");
    // One target directory for every run of this test, so only the first
    // build is cold.
    let target = repo().join("target/scaffold");
    let build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .output()?;
    ensure!(build.status.success(), "build failed: {}", text(&build));
    let wasm = target.join("wasm32-wasip2/release/word_count.wasm");
    let (passed, report) = test_json(
        &[
            wasm.to_str().unwrap_or_default(),
            "--cases",
            "tests/cases",
            "--manifest",
            "word-count.toml",
        ],
        &dir,
    )
    .await?;
    ensure!(passed, "{report:#}");
    assert_eq!(report["cases"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["cases"][0]["run"]["output"]["words"], 7);
    assert!(report["cases"][0]["run"]["fuel"].as_u64() > Some(0));
    Ok(())
}

#[tokio::test]
async fn a_new_python_plugin_builds_and_passes_its_tests() -> Result<()> {
    let parent = tempfile::tempdir()?;
    let out = wasmhive(&["new", "py-count", "--lang", "python"], parent.path()).await?;
    ensure!(out.status.success(), "{}", text(&out));
    let dir = parent.path().join("py-count");
    let build = Command::new("sh")
        .arg("build.sh")
        .current_dir(&dir)
        .output()?;
    ensure!(
        build.status.success(),
        "build failed (componentize-py is installed by `cargo xtask test`): {}",
        text(&build)
    );
    let (passed, report) = test_json(
        &[
            "py-count.wasm",
            "--cases",
            "tests/cases",
            "--manifest",
            "py-count.toml",
        ],
        &dir,
    )
    .await?;
    ensure!(passed, "{report:#}");
    assert_eq!(
        report["cases"][0]["run"]["output"]["top"][0],
        json!(["the", 3])
    );
    Ok(())
}

#[tokio::test]
async fn a_case_over_its_fuel_budget_fails_with_the_figure() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let cases = dir.path().join("cases");
    write_case(
        &cases,
        "heavy.json",
        &json!({ "payload": { "ms": 50 }, "budget": { "fuel": 100000 } }),
    )?;
    write_case(
        &cases,
        "light.json",
        &json!({ "payload": { "ms": 1 }, "budget": { "fuel": 100000000000u64 } }),
    )?;
    let busy = fixture("busy");
    let out = wasmhive(
        &[
            "test",
            busy.to_str().unwrap_or_default(),
            "--cases",
            "cases",
        ],
        dir.path(),
    )
    .await?;
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("FAIL  heavy")
            && report.contains(
                "fuel budget of 100000 exceeded: the attempt was stopped after 100000 units"
            ),
        "{report}"
    );
    assert!(
        report.contains("PASS  light") && report.contains("1 passed, 1 failed"),
        "{report}"
    );
    let junit = wasmhive(
        &[
            "test",
            busy.to_str().unwrap_or_default(),
            "--cases",
            "cases",
            "--format",
            "junit",
        ],
        dir.path(),
    )
    .await?;
    let xml = String::from_utf8_lossy(&junit.stdout);
    assert!(xml.contains("tests=\"2\" failures=\"1\""), "{xml}");
    Ok(())
}

#[tokio::test]
async fn recorded_http_replays_without_the_network() -> Result<()> {
    let site = Site::start().await?;
    let dir = tempfile::tempdir()?;
    let manifest = dir.path().join("scrape.toml");
    std::fs::write(
        &manifest,
        format!(
            "category = \"scraping\"\n[capabilities]\nhttp = [\"127.0.0.1:{}\"]\n",
            site.addr.port()
        ),
    )?;
    let cases = dir.path().join("cases");
    write_case(
        &cases,
        "about.json",
        &json!({
            "payload": { "url": site.url("/about.html") },
            "expect": { "result_contains": { "pages": [{ "title": "About Acme" }] } }
        }),
    )?;
    let scrape = handler("scrape");
    let args = |record: bool| {
        let mut a = vec![
            scrape.to_str().unwrap_or_default().to_string(),
            "--cases".into(),
            "cases".into(),
            "--manifest".into(),
            "scrape.toml".into(),
        ];
        if record {
            a.push("--record".into());
        }
        a
    };
    let recorded = args(true);
    let recorded: Vec<&str> = recorded.iter().map(String::as_str).collect();
    let (passed, report) = test_json(&recorded, dir.path()).await?;
    ensure!(passed, "recording run: {report:#}");
    let recording: Value =
        serde_json::from_str(&std::fs::read_to_string(cases.join("about.http.json"))?)?;
    let urls: Vec<&str> = recording
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["url"].as_str())
        .collect();
    assert_eq!(urls, [site.url("/robots.txt"), site.url("/about.html")]);

    let fetched = site.hits.of("/about.html");
    let replayed = args(false);
    let replayed: Vec<&str> = replayed.iter().map(String::as_str).collect();
    let (passed, report) = test_json(&replayed, dir.path()).await?;
    ensure!(passed, "replay run: {report:#}");
    assert_eq!(
        site.hits.of("/about.html"),
        fetched,
        "the replay reached the site"
    );

    // A request with no recording is refused, saying how to record one.
    write_case(
        &cases,
        "unrecorded.json",
        &json!({ "payload": { "url": site.url("/returns.html") }, "expect": { "error": "fatal", "error_contains": "--record" } }),
    )?;
    let (passed, report) = test_json(&replayed, dir.path()).await?;
    ensure!(passed, "{report:#}");
    assert_eq!(site.hits.of("/returns.html"), 0);
    Ok(())
}

#[tokio::test]
async fn against_shows_what_changed_between_versions() -> Result<()> {
    let dir = tempfile::tempdir()?;
    write_case(
        &dir.path().join("cases"),
        "hello.json",
        &json!({ "payload": { "hello": "world" } }),
    )?;
    let (new, old) = (fixture("echo-v2"), fixture("echo"));
    let out = wasmhive(
        &[
            "test",
            new.to_str().unwrap_or_default(),
            "--cases",
            "cases",
            "--against",
            old.to_str().unwrap_or_default(),
        ],
        dir.path(),
    )
    .await?;
    let report = text(&out);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("against: echo 1.0.0"), "{report}");
    assert!(
        report.contains("~ output $.version: null -> \"2.0.0\""),
        "{report}"
    );
    assert!(report.contains("~ fuel: "), "{report}");
    Ok(())
}

#[tokio::test]
async fn the_python_example_serves_tasks_in_a_running_daemon() -> Result<()> {
    let built = repo().join("target/plugins/examples");
    ensure!(
        built.join("summarize.wasm").exists(),
        "the Python example is not built: run `cargo xtask test`"
    );
    let dirs = Dirs::new()?;
    let daemon = Daemon::start(&dirs).await?;
    std::fs::copy(
        built.join("summarize.toml"),
        dirs.plugins().join("summarize.toml"),
    )?;
    std::fs::copy(
        built.join("summarize.wasm"),
        dirs.plugins().join(".summarize.tmp"),
    )?;
    std::fs::rename(
        dirs.plugins().join(".summarize.tmp"),
        dirs.plugins().join("summarize.wasm"),
    )?;
    daemon
        .wait_for_plugin_within(
            "summarize.wasm",
            "load",
            std::time::Duration::from_secs(120),
            |p| p.is_some_and(|p| p["version"] == "1.0.0"),
        )
        .await?;
    let task = daemon
        .run(
            "summarize",
            json!({ "text": "Plugins in Python. They run in the sandbox. Like the rest.", "sentences": 2 }),
        )
        .await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(
        task["result"]["summary"],
        json!(["Plugins in Python.", "They run in the sandbox."])
    );
    assert_eq!(task["progress"]["percent"], 100);
    let bad = daemon.run("summarize", json!({ "text": 1 })).await?;
    assert_eq!(bad["error"]["kind"], "fatal", "{bad}");
    Ok(())
}
