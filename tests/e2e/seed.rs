//! The original system's `/api/hp/*` routes, its curl examples verbatim,
//! the status and metrics endpoints, and bearer-token auth.

use crate::support::{Daemon, Dirs};
use anyhow::Result;
use serde_json::{Value, json};

async fn post_raw(daemon: &Daemon, path: &str, body: &str) -> Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", daemon.url))
        .header("Content-Type", "application/json")
        .body(body.to_string())
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.json().await?))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_original_curl_examples_work_verbatim() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&["allkinds"]).await?;

    // curl -X POST localhost:8080/api/hp/scrape -H 'Content-Type: application/json' \
    //      -d '{"url":"https://test.com","brand":"halilit","priority":"NORMAL"}'
    let (status, task) = post_raw(
        &daemon,
        "/api/hp/scrape",
        r#"{"url":"https://test.com","brand":"halilit","priority":"NORMAL"}"#,
    )
    .await?;
    assert_eq!(status, 202, "{task}");
    assert_eq!(task["kind"], "scrape");
    assert_eq!(task["priority"], "NORMAL");
    let id = task["task_id"].as_str().unwrap_or_default().to_string();
    let done = daemon.wait(&id).await?;
    assert_eq!(
        done["result"],
        json!({ "kind": "scrape", "priority": "NORMAL",
                "payload": { "url": "https://test.com", "brand": "halilit" } })
    );
    let (status, same) = daemon.get(&format!("/api/hp/tasks/{id}")).await?;
    assert_eq!(status, 200);
    assert_eq!(same["task_id"], done["task_id"]);

    // A query waits for its answer and is CRITICAL unless told otherwise.
    let (status, answer) = post_raw(
        &daemon,
        "/api/hp/query",
        r#"{"query":"which amp?","brand":"halilit","k":3}"#,
    )
    .await?;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["status"], "succeeded");
    assert_eq!(answer["result"]["kind"], "rag");
    assert_eq!(answer["result"]["priority"], "CRITICAL");
    assert_eq!(answer["result"]["payload"]["k"], 3);

    for (path, kind, priority) in [
        ("/api/hp/embed", "embed", "NORMAL"),
        ("/api/hp/batch", "batch", "BULK"),
        ("/api/hp/maintenance", "maintenance", "LOW"),
    ] {
        let (status, task) = post_raw(&daemon, path, r#"{"texts":["a"]}"#).await?;
        assert_eq!(status, 202, "{path}: {task}");
        assert_eq!(
            (task["kind"].as_str(), task["priority"].as_str()),
            (Some(kind), Some(priority))
        );
    }

    let (status, batch) = post_raw(
        &daemon,
        "/api/hp/scrape/batch",
        r#"{"urls":["https://a.test/","https://b.test/"],"brand":"halilit","priority":"LOW"}"#,
    )
    .await?;
    assert_eq!(status, 202, "{batch}");
    assert_eq!(batch["count"], 2);
    for (i, id) in batch["task_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let task = daemon.wait(id.as_str().unwrap_or_default()).await?;
        assert_eq!(task["priority"], "LOW");
        assert_eq!(
            task["payload"]["url"],
            ["https://a.test/", "https://b.test/"][i]
        );
        assert_eq!(task["payload"]["brand"], "halilit");
    }

    for (body, code) in [
        (r#"["not","an","object"]"#, "invalid_request"),
        (
            r#"{"url":"https://x","priority":"SOON"}"#,
            "invalid_priority",
        ),
        (
            r#"{"url":"https://x","timeout_s":"ten"}"#,
            "invalid_request",
        ),
    ] {
        let (status, error) = post_raw(&daemon, "/api/hp/scrape", body).await?;
        assert_eq!(
            (status, error["error"]["code"].as_str()),
            (400, Some(code)),
            "{body}"
        );
    }
    let (status, _) = post_raw(&daemon, "/api/hp/scrape/batch", r#"{"urls":[]}"#).await?;
    assert_eq!(status, 400);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn status_routes_and_metrics_describe_pools_queues_and_breakers() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&["echo", "fatal"]).await?;
    daemon.run("echo", json!(1)).await?;
    daemon.run("fatal", json!(1)).await?;

    let (_, stats) = daemon.get("/api/hp/stats").await?;
    assert_eq!(stats["totals"]["succeeded"], 1, "{stats}");
    assert_eq!(stats["totals"]["failed"], 1, "{stats}");
    let pools: Vec<&str> = stats["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["pool"].as_str())
        .collect();
    assert_eq!(
        pools,
        ["batch", "embedding", "maintenance", "rag", "scraping"]
    );

    let (_, workers) = daemon.get("/api/hp/workers").await?;
    let scraping = workers["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["pool"] == "scraping")
        .cloned()
        .unwrap_or_default();
    assert_eq!(scraping["size"], 6);
    assert_eq!(scraping["idle"], 6);

    let (_, queues) = daemon.get("/api/hp/queues").await?;
    assert!(
        queues["queues"][0]["queued"]["CRITICAL"].is_number(),
        "{queues}"
    );

    let (_, breakers) = daemon.get("/api/hp/circuit-breakers").await?;
    let names: Vec<&str> = breakers["circuit_breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| b["name"].as_str())
        .collect();
    for name in ["openai", "vectors", "browser", "plugin:echo@1.0.0"] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    let text = reqwest::get(format!("{}/metrics", daemon.url))
        .await?
        .text()
        .await?;
    for line in [
        "wasmhive_tasks_succeeded_total{pool=\"batch\"} 1",
        "wasmhive_tasks_failed_total{pool=\"batch\"} 1",
        "wasmhive_attempt_failures_total{pool=\"batch\",kind=\"fatal\"} 1",
        "wasmhive_pool_workers{pool=\"rag\"} 10",
        "wasmhive_breaker_state{breaker=\"openai\"} 0",
        "# TYPE wasmhive_run_seconds histogram",
    ] {
        assert!(text.contains(line), "missing `{line}` in /metrics");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openapi_document_covers_every_route() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&[]).await?;
    let (status, doc) = daemon.get("/openapi.json").await?;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{doc}"
    );
    for (path, method) in [
        ("/api/v1/tasks", "post"),
        ("/api/v1/tasks", "get"),
        ("/api/v1/tasks/batch", "post"),
        ("/api/v1/tasks/{id}", "get"),
        ("/api/v1/tasks/{id}", "delete"),
        ("/api/v1/plugins", "get"),
        ("/metrics", "get"),
        ("/api/hp/health", "get"),
        ("/api/hp/stats", "get"),
        ("/api/hp/workers", "get"),
        ("/api/hp/queues", "get"),
        ("/api/hp/circuit-breakers", "get"),
        ("/api/hp/scrape", "post"),
        ("/api/hp/scrape/batch", "post"),
        ("/api/hp/query", "post"),
        ("/api/hp/embed", "post"),
        ("/api/hp/batch", "post"),
        ("/api/hp/maintenance", "post"),
        ("/api/hp/tasks/{task_id}", "get"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is not documented"
        );
    }
    for schema in [
        "TaskRecord",
        "SubmitRequest",
        "ErrorBody",
        "Priority",
        "FailureKind",
    ] {
        assert!(
            doc["components"]["schemas"][schema].is_object(),
            "{schema} missing"
        );
    }
    let priorities = &doc["components"]["schemas"]["Priority"]["enum"];
    assert_eq!(
        priorities,
        &json!(["CRITICAL", "HIGH", "NORMAL", "LOW", "BULK"])
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_token_guards_every_route_but_health() -> Result<()> {
    let dirs = Dirs::with_config("auth_token = \"s3cret\"\n")?;
    dirs.install("echo", "echo")?;
    let daemon = Daemon::start(&dirs).await?;
    let client = reqwest::Client::new();
    let url = |p: &str| format!("{}{p}", daemon.url);

    assert_eq!(
        client.get(url("/api/hp/health")).send().await?.status(),
        200
    );
    for path in [
        "/api/v1/plugins",
        "/api/v1/tasks",
        "/metrics",
        "/api/hp/stats",
    ] {
        let response = client.get(url(path)).send().await?;
        assert_eq!(response.status(), 401, "{path}");
        let body: Value = response.json().await?;
        assert_eq!(body["error"]["code"], "unauthorized");
        let wrong = client.get(url(path)).bearer_auth("guess").send().await?;
        assert_eq!(wrong.status(), 401, "{path}");
        let right = client.get(url(path)).bearer_auth("s3cret").send().await?;
        assert_eq!(right.status(), 200, "{path}");
    }
    let response = client
        .post(url("/api/v1/tasks?wait=10"))
        .bearer_auth("s3cret")
        .json(&json!({ "kind": "echo", "payload": "authorised" }))
        .send()
        .await?;
    assert_eq!(response.status(), 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_is_validated_whole_before_anything_is_queued() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&["echo"]).await?;
    let (status, body) = daemon
        .request(
            reqwest::Method::POST,
            "/api/v1/tasks/batch",
            Some(json!({ "tasks": [
                { "kind": "echo", "payload": 1 },
                { "kind": "nope", "payload": 2 },
            ] })),
        )
        .await?;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .starts_with("tasks[1]:")
    );
    let (_, listed) = daemon.get("/api/v1/tasks").await?;
    assert_eq!(listed["count"], 0, "nothing was queued");

    let (status, body) = daemon
        .request(
            reqwest::Method::POST,
            "/api/v1/tasks/batch",
            Some(json!({ "tasks": [
                { "kind": "echo", "payload": 1, "priority": "HIGH" },
                { "kind": "echo", "payload": 2 },
            ] })),
        )
        .await?;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["count"], 2);
    for (i, t) in body["tasks"].as_array().into_iter().flatten().enumerate() {
        let task = daemon
            .wait(t["task_id"].as_str().unwrap_or_default())
            .await?;
        assert_eq!(task["result"], json!(i + 1));
    }
    Ok(())
}
