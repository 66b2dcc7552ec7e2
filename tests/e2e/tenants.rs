//! Plugins are tenants: each test drops a hostile guest beside `echo` and
//! checks that the attack is refused or contained, that echo tasks keep
//! succeeding alongside, and that health answers within 100 ms throughout.
//! One test per attack (the guests are `plugins/fixtures/<name>`).

use crate::support::{Daemon, Dirs, HealthWatch, error_message};
use anyhow::{Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;

/// How fast health must answer while a plugin attacks: far below what a
/// runtime held by an attack would cost (a `describe` spins for its whole
/// 2-3 s budget), far above what a busy 2-core CI machine adds (seen: 0.2 s
/// while a compile ran beside the suite).
const HEALTH_LIMIT: Duration = Duration::from_millis(500);

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
    daemon.kill().await?;
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

/// Every task of `kind`, once none of them is still unfinished.
async fn settled_tasks(daemon: &Daemon, kind: &str) -> Result<Vec<Value>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, body) = daemon
            .get(&format!("/api/v1/tasks?kind={kind}&limit=1000"))
            .await?;
        let tasks = body["tasks"].as_array().cloned().unwrap_or_default();
        let open = tasks.iter().any(|t| {
            !matches!(
                t["status"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        });
        if !open {
            return Ok(tasks);
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "{kind} tasks still running after 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn first_errors(tasks: &[Value]) -> Vec<String> {
    tasks
        .iter()
        .filter_map(|t| t["result"]["first_error"].as_str().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tree_of_child_tasks_is_bounded_in_depth_size_rate_and_payload() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("forkbomb", "forkbomb")?;
    dirs.write(
        "forkbomb.toml",
        b"[limits]\nmax_depth = 3\nmax_descendants = 50\n[capabilities]\nsubmit = [\"forkbomb\"]\n",
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);

    // Each task submits 5 children of its own kind: 5 + 25 + 125 would
    // follow at depth 3, and the tree stops at 50.
    let root = daemon.submit("forkbomb", json!({ "fanout": 5 })).await?;
    echo_traffic(&daemon, 20).await?;
    let tasks = settled_tasks(&daemon, "forkbomb").await?;
    assert_eq!(tasks.len(), 51, "the root and its 50 descendants");
    assert!(tasks.iter().all(|t| t["depth"].as_u64().unwrap_or(0) <= 3));
    let errors = first_errors(&tasks);
    assert!(
        errors.iter().any(|e| e.contains("max_descendants")),
        "{errors:?}"
    );
    let root = daemon.wait(&root).await?;
    assert_eq!(root["descendants"], 50, "{root}");

    // Depth: a lone chain stops at max_depth.
    let dirs2 = Dirs::new()?;
    dirs2.install("forkbomb", "forkbomb")?;
    dirs2.install("echo", "echo")?;
    dirs2.write(
        "forkbomb.toml",
        b"[limits]\nmax_depth = 3\nchildren_per_s = 10\n[capabilities]\nsubmit = [\"forkbomb\"]\n",
    )?;
    let daemon2 = Daemon::start(&dirs2).await?;
    let chain = daemon2.submit("forkbomb", json!({ "fanout": 1 })).await?;
    let tasks = settled_tasks(&daemon2, "forkbomb").await?;
    assert_eq!(tasks.len(), 4, "depths 0..=3");
    assert!(
        first_errors(&tasks).iter().any(|e| e.contains("max_depth")),
        "{tasks:?}"
    );
    daemon2.wait(&chain).await?;

    // Rate: 30 children at once from one task get 10 (one second's worth).
    let burst = daemon2
        .run_with(json!({ "kind": "forkbomb", "payload": { "fanout": 30 }, "max_retries": 0 }))
        .await?;
    let refused = burst["result"]["refused"].as_u64().unwrap_or(0);
    assert!(refused >= 15, "{burst}");
    assert!(
        burst["result"]["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("children_per_s")),
        "{burst}"
    );

    // Size: a child payload over the daemon's 10 MiB is refused.
    let big = daemon2
        .run_with(json!({ "kind": "forkbomb", "payload": { "fanout": 1, "pad_bytes": 11 << 20 }, "max_retries": 0 }))
        .await?;
    assert!(
        big["result"]["first_error"]
            .as_str()
            .is_some_and(|e| e.contains("max_payload_mb")),
        "{big}"
    );
    echo_traffic(&daemon2, 10).await?;
    echo_traffic(&daemon, 10).await?;
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_plugin_says_is_bounded_and_cannot_forge_log_lines() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("flooder", "flooder")?;
    dirs.write("flooder.toml", b"[limits]\nmemory_mb = 300\n")?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);

    // A 100 MB error string is stored and served cut to 4 KiB.
    let task = daemon
        .run_with(
            json!({ "kind": "flooder", "payload": { "error_bytes": 100 << 20 }, "max_retries": 0 }),
        )
        .await?;
    assert_eq!(task["error"]["kind"], "fatal", "{}", task["error"]["kind"]);
    let served = task.to_string();
    // The message is on the task and in its attempt log.
    assert!(
        served.len() < 16 * 1024,
        "the task JSON is {} bytes",
        served.len()
    );
    assert!(
        task["error"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("bytes)")),
        "says it was cut"
    );

    // A progress message is cut; a result over max_result_mb fails.
    let task = daemon
        .run(
            "flooder",
            json!({ "progress_bytes": 1 << 20, "log_lines": 2000, "log_bytes": 10000 }),
        )
        .await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    let progress = task["progress"]["message"].as_str().unwrap_or_default();
    assert!(progress.len() <= 512, "{}", progress.len());
    let task = daemon
        .run_with(
            json!({ "kind": "flooder", "payload": { "result_bytes": 20 << 20 }, "max_retries": 0 }),
        )
        .await?;
    assert_eq!(task["error"]["kind"], "fatal", "{}", task["error"]);

    // A newline in a log message does not start a line of its own.
    daemon.run("flooder", json!({ "log_forged": true })).await?;
    echo_traffic(&daemon, 10).await?;
    health.finish(HEALTH_LIMIT).await?;
    let log = std::fs::read_to_string(dirs.log())?;
    assert!(log.contains("FORGED wasmhive"), "the message is logged");
    assert!(
        !log.lines().any(|l| l.starts_with("FORGED")),
        "a plugin forged a log line"
    );
    let lines_of_flooder = log
        .lines()
        .filter(|l| l.contains("plugin=flooder") && l.contains("aaaa"))
        .count();
    assert!(lines_of_flooder <= 1000, "{lines_of_flooder} lines logged");
    assert!(
        log.lines().all(|l| l.len() < 8 * 1024),
        "log lines are bounded"
    );
    Ok(())
}

/// Runs a `vectorsquat` operation and returns the finished task.
async fn squat(daemon: &Daemon, payload: Value) -> Result<Value> {
    daemon.run("vectorsquat", payload).await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_read_poison_squat_or_fill_anothers_vectors() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.write(
        "vectorsquat.toml",
        b"[capabilities]\nvectors = true\n[limits]\nvector_points = 1000\n",
    )?;
    dirs.install("vectorsquat", "vectorsquat")?;
    // The operator grants embed the shared brand collections by name.
    dirs.install_handler(
        "embed",
        "category = \"embedding\"\n[capabilities]\nvectors = [\"brand-*\"]\n",
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);

    // Squatting brand-x with 3 dimensions lands in the squatter's own
    // namespace: embed's 384-dimension ingest into brand-x still works.
    let squatted = squat(
        &daemon,
        json!({ "op": "upsert", "collection": "brand-x", "dim": 3, "points": 5 }),
    )
    .await?;
    assert_eq!(squatted["status"], "succeeded", "{squatted}");
    let ingest = daemon
        .run(
            "embed",
            json!({ "collection": "brand-x", "documents": [
                { "id": "a", "text": "Frames carry a ten year warranty.", "metadata": { "url": "http://brand/a" } },
                { "id": "b", "text": "Returns are free within thirty days.", "metadata": { "url": "http://brand/b" } }
            ] }),
        )
        .await?;
    assert_eq!(ingest["status"], "succeeded", "{ingest}");

    // Reading brand-x, the squatter sees only its own five points, and
    // a query at 384 dimensions finds nothing of embed's.
    let count = squat(&daemon, json!({ "op": "count", "collection": "brand-x" })).await?;
    assert_eq!(count["result"]["count"], 5, "{count}");
    let read = squat(
        &daemon,
        json!({ "op": "query", "collection": "brand-x", "dim": 384 }),
    )
    .await?;
    assert_ne!(
        read["status"], "succeeded",
        "its brand-x has 3 dimensions: {read}"
    );
    // There is no way to name another namespace.
    for name in ["embed:brand-x", "vectorsquat:brand-x"] {
        let sneak = squat(&daemon, json!({ "op": "count", "collection": name })).await?;
        assert_eq!(sneak["status"], "failed", "{sneak}");
        assert!(error_message(&sneak).contains("collection name"), "{sneak}");
    }

    // Its quota (1000 points) stops it filling the store; a retry of the
    // same points (replacing them) is not charged again.
    let fill = squat(
        &daemon,
        json!({ "op": "upsert", "collection": "fill", "dim": 8, "points": 5000 }),
    )
    .await?;
    assert_eq!(fill["status"], "failed", "{fill}");
    let message = error_message(&fill);
    assert!(
        message.contains("vector_points") && message.contains("vectorsquat.toml"),
        "{message}"
    );
    let fits = squat(
        &daemon,
        json!({ "op": "upsert", "collection": "fits", "dim": 8, "points": 995 }),
    )
    .await?;
    assert_eq!(fits["status"], "succeeded", "{fits}");
    let again = squat(
        &daemon,
        json!({ "op": "upsert", "collection": "fits", "dim": 8, "points": 995 }),
    )
    .await?;
    assert_eq!(again["status"], "succeeded", "{again}");

    // Embed keeps working, and the quota and usage are shown.
    let more = daemon
        .run(
            "embed",
            json!({ "collection": "brand-y", "documents": [
                { "id": "c", "text": "Gift cards never expire.", "metadata": {} }
            ] }),
        )
        .await?;
    assert_eq!(more["status"], "succeeded", "{more}");
    echo_traffic(&daemon, 10).await?;
    let entry = daemon.plugin("vectorsquat.wasm").await?.unwrap_or_default();
    assert_eq!(entry["limits"]["vector_points"], 1000, "{entry}");
    assert_eq!(entry["usage"]["vector_points"], 1000, "{entry}");
    assert!(
        entry["usage"]["vector_bytes"].as_u64().unwrap_or(0) > 1000 * 32,
        "{entry}"
    );
    let metrics = reqwest::get(format!("{}/metrics", daemon.url))
        .await?
        .text()
        .await?;
    for line in [
        "wasmhive_plugin_limit{plugin=\"vectorsquat\",quota=\"vector_points\"} 1000",
        "wasmhive_plugin_usage{plugin=\"vectorsquat\",quota=\"vector_points\"} 1000",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no `{line}` in\n{metrics}"
        );
    }
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_busy_plugin_cannot_take_every_worker_of_a_shared_pool() -> Result<()> {
    // echo's pool has two workers; the hog would hold both.
    let dirs = Dirs::with_config("[pools]\nbatch = 2\nisolated = 1\n")?;
    dirs.install("echo", "echo")?;
    dirs.install("hog", "hog")?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);
    let mut hogs = Vec::new();
    for _ in 0..3 {
        hogs.push(daemon.submit("hog", json!({ "ms": 60_000 })).await?);
    }
    // Every echo task runs beside the hog, on the worker it cannot take.
    echo_traffic(&daemon, 32).await?;
    let entry = daemon.plugin("hog.wasm").await?.unwrap_or_default();
    assert_eq!(entry["usage"]["running"], 1, "{entry}");
    assert_eq!(entry["usage"]["held"], 2, "{entry}");
    let (_, task) = daemon.get(&format!("/api/v1/tasks/{}", hogs[2])).await?;
    assert_eq!(
        task["status"], "queued",
        "held while the hog runs one: {task}"
    );
    for id in &hogs {
        daemon
            .request(
                reqwest::Method::DELETE,
                &format!("/api/v1/tasks/{id}"),
                None,
            )
            .await?;
    }

    // The operator's manifest moves it to a pool of its own.
    dirs.write("hog.toml", b"category = \"isolated\"\n")?;
    daemon
        .wait_for_plugin("hog.wasm", "move to its pool", |p| {
            p.is_some_and(|p| p["category"] == "isolated")
        })
        .await?;
    let hog = daemon.submit("hog", json!({ "ms": 60_000 })).await?;
    echo_traffic(&daemon, 10).await?;
    let (_, workers) = daemon.get("/api/hp/workers").await?;
    assert!(workers.to_string().contains("isolated"), "{workers}");
    daemon
        .request(
            reqwest::Method::DELETE,
            &format!("/api/v1/tasks/{hog}"),
            None,
        )
        .await?;
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}

/// A service beside the daemon on loopback: `/ok` answers, `/to` redirects
/// to the URL in its query.
async fn loopback_service() -> Result<std::net::SocketAddr> {
    use axum::response::{IntoResponse, Redirect};
    let app = axum::Router::new()
        .route(
            "/ok",
            axum::routing::get(|| async { "hello from loopback" }),
        )
        .route(
            "/to",
            axum::routing::get(|q: axum::extract::RawQuery| async move {
                Redirect::temporary(&q.0.unwrap_or_default()).into_response()
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_cannot_reach_the_daemons_api_or_inside_addresses_by_name() -> Result<()> {
    let service = loopback_service().await?;
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("apicaller", "apicaller")?;
    // The README's example grant.
    dirs.write(
        "apicaller.toml",
        b"[capabilities]\nhttp = [\"127.0.0.1:*\"]\n",
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let health = HealthWatch::start(&daemon);
    let secret = daemon.submit("echo", json!({ "secret": 42 })).await?;
    let call = |payload: Value| {
        daemon.run_with(json!({ "kind": "apicaller", "payload": payload, "max_retries": 0 }))
    };

    for payload in [
        json!({ "url": format!("{}/api/v1/tasks/{secret}", daemon.url) }),
        json!({ "method": "POST", "url": format!("{}/api/v1/tasks", daemon.url),
                "body": { "kind": "echo", "payload": {} } }),
        json!({ "url": format!("http://127.0.0.1:{}/to?{}/api/v1/tasks", service.port(), daemon.url) }),
    ] {
        let task = call(payload.clone()).await?;
        assert_eq!(task["status"], "failed", "{payload}: {task}");
        assert!(
            task["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("the daemon's own API")),
            "{payload}: {task}"
        );
    }
    let (_, tasks) = daemon.get("/api/v1/tasks?kind=echo").await?;
    assert_eq!(
        tasks["tasks"].as_array().map(Vec::len),
        Some(1),
        "no task was submitted over REST"
    );

    // The address named by IP is reachable (on another port than the API).
    let by_ip = call(json!({ "url": format!("http://127.0.0.1:{}/ok", service.port()) })).await?;
    assert_eq!(by_ip["status"], "succeeded", "{by_ip}");
    assert_eq!(by_ip["result"]["body"], "hello from loopback", "{by_ip}");

    // A name on the allowlist that resolves to loopback is not (DNS
    // rebinding against a name allowlist).
    dirs.write(
        "apicaller.toml",
        b"[capabilities]\nhttp = [\"localhost:*\"]\n",
    )?;
    daemon
        .wait_for_plugin("apicaller.wasm", "reload", |p| {
            p.is_some_and(|p| p["capabilities"]["http"] == json!(["localhost:*"]))
        })
        .await?;
    let by_name = call(json!({ "url": format!("http://localhost:{}/ok", service.port()) })).await?;
    assert!(
        by_name["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("loopback address")),
        "{by_name}"
    );

    echo_traffic(&daemon, 10).await?;
    health.finish(HEALTH_LIMIT).await?;
    Ok(())
}
