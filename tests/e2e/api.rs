//! The REST contract: a round trip and the 4xx table.

use crate::support::Daemon;
use anyhow::Result;
use serde_json::json;

#[tokio::test(flavor = "multi_thread")]
async fn echo_round_trip() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&["echo"]).await?;
    let payload = json!({ "text": "hello", "n": [1, 2, 3] });
    let task = daemon.run("echo", payload.clone()).await?;
    assert_eq!(task["status"], "succeeded", "{task}");
    assert_eq!(task["result"], payload);
    assert_eq!(
        task["plugin"],
        json!({ "name": "echo", "version": "1.0.0" })
    );
    assert_eq!(task["attempts"], 1);
    assert_eq!(task["priority"], "NORMAL");

    let id = task["task_id"].as_str().unwrap_or_default();
    let (status, fetched) = daemon.get(&format!("/api/v1/tasks/{id}")).await?;
    assert_eq!(status, 200);
    assert_eq!(fetched["result"], payload);

    // Without ?wait the reply is 202 with the queued task.
    let (status, queued) = daemon
        .request(
            reqwest::Method::POST,
            "/api/v1/tasks",
            Some(json!({ "kind": "echo", "payload": {}, "priority": "high" })),
        )
        .await?;
    assert_eq!(status, 202, "{queued}");
    assert!(queued["task_id"].is_string());
    assert_eq!(queued["priority"], "HIGH");
    let (status, listed) = daemon.get("/api/v1/tasks?kind=echo&limit=10").await?;
    assert_eq!(status, 200);
    assert_eq!(listed["count"], 2, "{listed}");

    let (status, health) = daemon.get("/api/hp/health").await?;
    assert_eq!(status, 200);
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["plugins_loaded"], 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_a_4xx_json_error() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&["echo"]).await?;
    // A fresh connection per request: after refusing a body the server may
    // close the connection, which a pooled client would otherwise reuse.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    let url = |p: &str| format!("{}{p}", daemon.url);
    let post = |body: String| {
        client
            .post(url("/api/v1/tasks"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    let cases: Vec<(&str, reqwest::Response, u16, &str)> = vec![
        (
            "unknown kind",
            post(json!({"kind": "nope"}).to_string()).await?,
            422,
            "unknown_kind",
        ),
        (
            "malformed JSON",
            post("{\"kind\": ".into()).await?,
            400,
            "invalid_json",
        ),
        (
            "missing kind",
            post("{}".into()).await?,
            422,
            "invalid_request",
        ),
        (
            "unknown field",
            post(json!({"kind": "echo", "priorty": "LOW"}).to_string()).await?,
            422,
            "invalid_request",
        ),
        (
            "bad priority",
            post(json!({"kind": "echo", "priority": "URGENT"}).to_string()).await?,
            400,
            "invalid_priority",
        ),
        (
            "oversized body",
            // Just over the 10 MiB limit: the whole body is sent before the
            // server can object, so the answer is never lost to a reset.
            post(format!(
                "{{\"kind\":\"echo\",\"payload\":\"{}\"}}",
                "x".repeat(10 << 20)
            ))
            .await?,
            413,
            "body_too_large",
        ),
        (
            "not JSON content type",
            client
                .post(url("/api/v1/tasks"))
                .body("kind=echo")
                .send()
                .await?,
            415,
            "unsupported_media_type",
        ),
        (
            "bad wait",
            client
                .post(url("/api/v1/tasks?wait=soon"))
                .json(&json!({"kind": "echo"}))
                .send()
                .await?,
            400,
            "invalid_query",
        ),
        (
            "bad id",
            client.get(url("/api/v1/tasks/not-a-uuid")).send().await?,
            400,
            "invalid_task_id",
        ),
        (
            "unknown id",
            client
                .get(url("/api/v1/tasks/01a22bf8-3b7d-7703-9cfd-b97064e1df34"))
                .send()
                .await?,
            404,
            "task_not_found",
        ),
        (
            "bad status filter",
            client.get(url("/api/v1/tasks?status=done")).send().await?,
            400,
            "invalid_status",
        ),
        (
            "unknown route",
            client.get(url("/api/v2/nothing")).send().await?,
            404,
            "not_found",
        ),
        (
            "wrong method",
            client.delete(url("/api/v1/plugins")).send().await?,
            405,
            "method_not_allowed",
        ),
    ];
    for (what, response, status, code) in cases {
        assert_eq!(response.status().as_u16(), status, "{what}");
        let body: serde_json::Value = response.json().await?;
        assert_eq!(body["error"]["code"], code, "{what}: {body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{what}: {body}"
        );
    }
    // A wait longer than any limit is the longest wait, not a crash.
    let huge = client
        .post(url("/api/v1/tasks?wait=1e20"))
        .json(&json!({"kind": "echo", "payload": "huge wait"}))
        .send()
        .await?;
    assert_eq!(huge.status().as_u16(), 200);
    let body: serde_json::Value = huge.json().await?;
    assert_eq!(body["result"], "huge wait");
    // The daemon is still serving.
    assert_eq!(daemon.run("echo", json!(1)).await?["status"], "succeeded");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idempotency_key_returns_the_same_task() -> Result<()> {
    let (daemon, _dirs) = Daemon::with_fixtures(&["echo"]).await?;
    let body = json!({ "kind": "echo", "payload": {"n": 1}, "idempotency_key": "order-42" });
    let first = daemon.run_with(body.clone()).await?;
    let second = daemon.run_with(body).await?;
    assert_eq!(first["task_id"], second["task_id"]);
    let (_, listed) = daemon.get("/api/v1/tasks?kind=echo").await?;
    assert_eq!(listed["count"], 1, "{listed}");
    Ok(())
}
