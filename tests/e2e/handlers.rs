//! The bundled handlers doing real work through the host capabilities:
//! scraping a local website into a collection and answering questions from
//! it, the allowlist, the `openai` breaker with RAG falling back, batch
//! fan-out, and maintenance cleanup.

use crate::servers::{FailingOpenAi, FakeEmbeddings, Site};
use crate::support::{Daemon, Dirs, error_kind, error_message};
use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use std::time::Duration;

fn embed_manifest() -> &'static str {
    "category = \"embedding\"\n[capabilities]\nvectors = [\"*\"]\n"
}

fn rag_manifest(extra_http: &str, config: &str) -> String {
    format!(
        "category = \"rag\"\n[capabilities]\nvectors = [\"*\"]\nhttp = [{extra_http}]\n\
         tolerates = [\"openai\"]\n[config]\n{config}"
    )
}

fn scrape_manifest(site: &Site) -> String {
    format!(
        "category = \"scraping\"\n[capabilities]\nhttp = [\"127.0.0.1:{}\"]\nsubmit = [\"embed\"]\n",
        site.addr.port()
    )
}

/// Posts to a seed route and waits for the task to finish.
async fn seed(daemon: &Daemon, route: &str, body: Value) -> Result<Value> {
    let (status, task) = daemon
        .request(reqwest::Method::POST, route, Some(body))
        .await?;
    ensure!(
        status == 200 || status == 202,
        "{route} answered {status}: {task}"
    );
    let id = task["task_id"].as_str().context("no task_id")?;
    daemon.wait(id).await
}

#[tokio::test]
async fn scrape_ingests_a_site_and_rag_answers_from_the_right_page() -> Result<()> {
    let site = Site::start().await?;
    let dirs = Dirs::new()?;
    dirs.install_handler("scrape", &scrape_manifest(&site))?;
    dirs.install_handler("embed", embed_manifest())?;
    dirs.install_handler("rag", &rag_manifest("", ""))?;
    let daemon = Daemon::start(&dirs).await?;

    let task = seed(
        &daemon,
        "/api/hp/scrape",
        json!({ "url": site.url("/"), "brand": "Acme", "depth": 1, "max_pages": 10 }),
    )
    .await?;
    ensure!(task["status"] == "succeeded", "scrape failed: {task}");
    let result = &task["result"];
    let pages = result["pages"].as_array().context("no pages")?;
    let urls: Vec<&str> = pages.iter().filter_map(|p| p["url"].as_str()).collect();
    for path in [
        "/",
        "/shipping.html",
        "/returns.html",
        "/about.html",
        "/latin1.html",
    ] {
        ensure!(
            urls.contains(&site.url(path).as_str()),
            "{path} not scraped: {urls:?}"
        );
    }
    // Charset: the ISO-8859-1 page decodes to the same text as UTF-8 would.
    let cafe = pages
        .iter()
        .find(|p| p["url"] == site.url("/latin1.html"))
        .context("no café page")?;
    assert_eq!(cafe["title"], "Café Acme menu");
    assert_eq!(cafe["charset"], "windows-1252");
    assert!(
        cafe["text"]
            .as_str()
            .is_some_and(|t| t.contains("crème brûlée")),
        "{cafe}"
    );
    // Main text only: no navigation, footer or script.
    let shipping = pages
        .iter()
        .find(|p| p["url"] == site.url("/shipping.html"))
        .context("no shipping page")?;
    let text = shipping["text"].as_str().unwrap_or_default();
    assert!(text.contains("three to five working days"), "{text}");
    assert!(!text.contains("footer") && !text.contains("Home"), "{text}");
    assert_eq!(shipping["headings"][0]["text"], "Shipping and delivery");
    // robots.txt: the disallowed page is reported, never requested.
    assert_eq!(site.hits.of("/private/secret.html"), 0);
    assert!(
        result["skipped"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["url"] == site.url("/private/secret.html") && s["reason"] == "robots.txt"),
        "{result}"
    );
    // The redirect off the allowlist is refused with the reason.
    let away = result["errors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|e| e["url"] == site.url("/away"))
        .with_context(|| format!("no error for /away: {result}"))?;
    assert!(
        away["error"]
            .as_str()
            .is_some_and(|e| e.contains("localhost") && e.contains("allowlist")),
        "{away}"
    );
    // Ingest: every page with content in one embed child (20 pages to a
    // child), all stored before the scrape ended.
    let ingest = &result["ingest"];
    assert_eq!(ingest["collection"], "brand-acme");
    assert_eq!(
        ingest["documents"].as_u64(),
        Some(pages.len() as u64),
        "{ingest}"
    );
    assert_eq!(ingest["children"].as_u64(), Some(1), "{ingest}");
    assert_eq!(ingest["succeeded"], ingest["children"], "{ingest}");
    let children = task["children"].as_array().context("no children")?;
    assert_eq!(children.len(), 1);
    let (_, child) = daemon
        .get(&format!(
            "/api/v1/tasks/{}",
            children[0].as_str().unwrap_or("")
        ))
        .await?;
    assert_eq!(child["parent_id"], task["task_id"]);
    assert_eq!(child["kind"], "embed");

    for (question, page) in [
        ("How many days does delivery take?", "/shipping.html"),
        ("Can I get a refund if I return a product?", "/returns.html"),
        ("Where are the headquarters?", "/about.html"),
        ("Which desserts does the café serve?", "/latin1.html"),
    ] {
        let (status, answer) = daemon
            .request(
                reqwest::Method::POST,
                "/api/hp/query",
                Some(json!({ "query": question, "brand": "Acme" })),
            )
            .await?;
        ensure!(status == 200, "query answered {status}: {answer}");
        let result = &answer["result"];
        let cited = result["citations"][0]["url"].as_str().unwrap_or_default();
        assert_eq!(
            cited.split('#').next(),
            Some(site.url(page).as_str()),
            "{question}: {result}"
        );
        assert_eq!(result["mode"], "extractive");
        assert!(
            result["answer"].as_str().is_some_and(|a| !a.is_empty()),
            "{result}"
        );
    }
    Ok(())
}

/// The points collection `name` holds, from the maintenance health report.
async fn points_in(daemon: &Daemon, name: &str) -> Result<u64> {
    let task = daemon
        .run("maintenance", json!({ "action": "health" }))
        .await?;
    let collections = task["result"]["health"]["vectors"]["collections"]
        .as_array()
        .with_context(|| format!("no collections: {task}"))?;
    Ok(collections
        .iter()
        .find(|c| c["name"] == name)
        .and_then(|c| c["points"].as_u64())
        .unwrap_or(0))
}

#[tokio::test]
async fn a_page_that_shrank_loses_its_old_passages_and_answers_cite_its_section() -> Result<()> {
    let site = Site::start().await?;
    let dirs = Dirs::new()?;
    dirs.install_handler("scrape", &scrape_manifest(&site))?;
    dirs.install_handler("embed", embed_manifest())?;
    dirs.install_handler("rag", &rag_manifest("", ""))?;
    dirs.install_handler(
        "maintenance",
        "category = \"maintenance\"\n[capabilities]\nadmin = true\n",
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let scrape = json!({ "url": site.url("/changing.html"), "brand": "Shrink" });
    let first = daemon.run("scrape", scrape.clone()).await?;
    ensure!(first["status"] == "succeeded", "{first}");
    let long = points_in(&daemon, "brand-shrink").await?;
    ensure!(long >= 4, "the long page is several passages: {long}");
    // Asked in other words than the page's, the answer cites the section.
    let (_, answer) = daemon
        .request(
            reqwest::Method::POST,
            "/api/hp/query",
            Some(json!({ "query": "how do I mend a punctured tyre", "brand": "Shrink" })),
        )
        .await?;
    let cited = &answer["result"]["citations"][0];
    assert_eq!(
        cited["url"],
        format!("{}#repairs", site.url("/changing.html")),
        "{answer}"
    );
    assert_eq!(cited["title"], "Workshop › Repairs", "{answer}");

    // The page is now one short section: its old passages go.
    let second = daemon.run("scrape", scrape).await?;
    ensure!(second["status"] == "succeeded", "{second}");
    assert_eq!(points_in(&daemon, "brand-shrink").await?, 1);
    let (_, answer) = daemon
        .request(
            reqwest::Method::POST,
            "/api/hp/query",
            Some(json!({ "query": "punctured tyre", "brand": "Shrink" })),
        )
        .await?;
    let passage = answer["result"]["citations"][0]["passage"]
        .as_str()
        .unwrap_or_default();
    assert!(passage.contains("closed"), "{answer}");
    Ok(())
}

#[tokio::test]
async fn a_host_off_the_allowlist_fails_with_the_reason() -> Result<()> {
    let site = Site::start().await?;
    let dirs = Dirs::new()?;
    dirs.install_handler("scrape", &scrape_manifest(&site))?;
    let daemon = Daemon::start(&dirs).await?;
    let url = format!("http://localhost:{}/", site.addr.port());
    let task = daemon.run("scrape", json!({ "url": url })).await?;
    assert_eq!(task["status"], "failed");
    assert_eq!(error_kind(&task), "fatal");
    let message = error_message(&task);
    assert!(
        message.contains("not in the http allowlist") && message.contains("localhost"),
        "{message}"
    );
    assert_eq!(site.hits.of("/"), 0, "the request must not have left");
    Ok(())
}

#[tokio::test]
async fn bad_input_and_dead_destinations_open_no_plugin_breaker() -> Result<()> {
    let site = Site::start().await?;
    let dirs = Dirs::new()?;
    dirs.install_handler("embed", embed_manifest())?;
    dirs.install_handler("rag", &rag_manifest("", ""))?;
    dirs.install_handler("scrape", &scrape_manifest(&site))?;
    let daemon = Daemon::start(&dirs).await?;
    // Six queries naming a collection that cannot exist: each is the
    // caller's mistake, fatal, not retried.
    for _ in 0..6 {
        let task = daemon
            .run(
                "rag",
                json!({ "query": "warranty?", "collection": "bad name!" }),
            )
            .await?;
        assert_eq!(task["status"], "failed", "{task}");
        assert_eq!(error_kind(&task), "fatal", "{task}");
        assert_eq!(task["attempts"], 1, "{task}");
    }
    // Pages that are not there: the destination's failures, not scrape's.
    let dead = format!("http://127.0.0.1:{}/gone", site.addr.port());
    for _ in 0..6 {
        let task = daemon
            .run_with(json!({ "kind": "scrape", "payload": { "url": &dead }, "max_retries": 0 }))
            .await?;
        assert_eq!(task["status"], "failed", "{task}");
    }
    let (_, breakers) = daemon.get("/api/hp/circuit-breakers").await?;
    let open: Vec<&Value> = breakers["circuit_breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|b| b["state"] != "closed")
        .collect();
    assert!(open.is_empty(), "{open:?}");
    // The good work still runs at once.
    let stored = daemon
        .run("embed", json!({ "collection": "docs", "documents": [
            { "id": "a", "text": "The warranty covers the frame for ten years.", "metadata": { "url": "http://docs/a" } }
        ] }))
        .await?;
    assert_eq!(stored["status"], "succeeded", "{stored}");
    let answer = daemon
        .run(
            "rag",
            json!({ "query": "How long is the warranty?", "collection": "docs" }),
        )
        .await?;
    assert_eq!(answer["status"], "succeeded", "{answer}");
    let page = daemon
        .run("scrape", json!({ "url": site.url("/") }))
        .await?;
    assert_eq!(page["status"], "succeeded", "{page}");
    Ok(())
}

#[tokio::test]
async fn a_response_over_the_cap_is_refused_and_the_daemon_keeps_serving() -> Result<()> {
    let site = Site::start().await?;
    let dirs = Dirs::with_config("[http]\nmax_response_mb = 1\n")?;
    dirs.install_handler("scrape", &scrape_manifest(&site))?;
    let daemon = Daemon::start(&dirs).await?;
    let task = daemon
        .run("scrape", json!({ "url": site.url("/big.html") }))
        .await?;
    assert_eq!(error_kind(&task), "fatal", "{task}");
    assert!(error_message(&task).contains("too large"), "{task}");
    let fine = daemon
        .run("scrape", json!({ "url": site.url("/about.html") }))
        .await?;
    assert_eq!(fine["status"], "succeeded", "{fine}");
    Ok(())
}

#[tokio::test]
async fn render_goes_through_the_configured_endpoint_or_says_it_is_missing() -> Result<()> {
    let site = Site::start().await?;
    let dirs = Dirs::new()?;
    dirs.install_handler("scrape", &scrape_manifest(&site))?;
    let daemon = Daemon::start(&dirs).await?;
    let page = site.url("/shipping.html");
    let task = daemon
        .run("scrape", json!({ "url": page, "render": true }))
        .await?;
    assert_eq!(error_kind(&task), "fatal");
    assert!(error_message(&task).contains("render_url"), "{task}");

    let manifest = format!(
        "{}[config]\nrender_url = \"{}\"\n",
        scrape_manifest(&site),
        site.url("/render")
    );
    dirs.write("scrape.toml", manifest.as_bytes())?;
    daemon
        .wait_for_plugin("scrape.wasm", "reload with render_url", |p| {
            p.is_some_and(|p| p["loaded_at"] != json!(null))
        })
        .await?;
    let mut rendered = Value::Null;
    for _ in 0..100 {
        rendered = daemon
            .run("scrape", json!({ "url": page, "render": true }))
            .await?;
        if rendered["status"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ensure!(rendered["status"] == "succeeded", "{rendered}");
    let text = rendered["result"]["pages"][0]["text"]
        .as_str()
        .unwrap_or_default();
    assert!(text.contains("Rendered by the browser service"), "{text}");
    assert_eq!(site.hits.of("/render"), 1);
    Ok(())
}

#[tokio::test]
async fn rag_answers_extractively_while_the_openai_breaker_is_open() -> Result<()> {
    let openai = FailingOpenAi::start().await?;
    let port = openai.addr.port();
    let dirs = Dirs::with_config(&format!(
        "[breakers.openai]\nhosts = [\"127.0.0.1:{port}\"]\nfailures = 5\nopen_s = 600\n"
    ))?;
    dirs.install_handler("embed", embed_manifest())?;
    dirs.install_handler(
        "rag",
        &rag_manifest(
            &format!("\"127.0.0.1:{port}\""),
            &format!("chat_url = \"http://127.0.0.1:{port}/v1\"\n"),
        ),
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let stored = daemon
        .run(
            "embed",
            json!({ "collection": "docs", "documents": [
                { "id": "a", "text": "The warranty covers the frame for ten years.", "metadata": { "url": "http://docs/a", "title": "Warranty" } },
                { "id": "b", "text": "Gift cards never expire.", "metadata": { "url": "http://docs/b", "title": "Gift cards" } }
            ] }),
        )
        .await?;
    ensure!(stored["status"] == "succeeded", "{stored}");

    for i in 1..=7 {
        let (status, task) = daemon
            .request(
                reqwest::Method::POST,
                "/api/hp/query",
                Some(json!({ "query": "How long is the frame warranty?", "collection": "docs" })),
            )
            .await?;
        ensure!(status == 200, "query {i} answered {status}: {task}");
        let result = &task["result"];
        assert_eq!(result["mode"], "extractive", "query {i}: {result}");
        assert_eq!(result["citations"][0]["url"], "http://docs/a");
        assert_eq!(
            result["answer"],
            "The warranty covers the frame for ten years."
        );
        let fallback = result["fallback"].as_str().unwrap_or_default();
        if i <= 5 {
            assert!(fallback.contains("500"), "query {i}: {fallback}");
        } else {
            assert!(
                fallback.contains("circuit breaker is open"),
                "query {i}: {fallback}"
            );
        }
    }
    // Five calls reached the endpoint; then the breaker kept them home.
    assert_eq!(openai.hits.of("/v1/chat/completions"), 5);
    let (_, breakers) = daemon.get("/api/hp/circuit-breakers").await?;
    let openai_breaker = breakers["circuit_breakers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|b| b["name"] == "openai")
        .with_context(|| format!("no openai breaker: {breakers}"))?;
    assert_eq!(openai_breaker["state"], "open", "{openai_breaker}");
    // Per-destination counters: 5 sent (all 5xx), 2 refused by the breaker.
    let (_, stats) = daemon.get("/api/hp/stats").await?;
    let http = &stats["http"][format!("http://127.0.0.1:{port}")];
    assert_eq!(
        (
            &http["requests"],
            &http["denied"],
            &http["responses"]["5xx"]
        ),
        (&json!(5), &json!(2), &json!(5)),
        "{stats}"
    );
    Ok(())
}

#[tokio::test]
async fn embed_and_rag_can_use_an_openai_compatible_embeddings_endpoint() -> Result<()> {
    let endpoint = FakeEmbeddings::start().await?;
    let port = endpoint.addr.port();
    let config = format!(
        "embedder = \"openai\"\nopenai_url = \"http://127.0.0.1:{port}/v1\"\nopenai_model = \"fake-4\"\n"
    );
    let dirs = Dirs::new()?;
    dirs.install_handler(
        "embed",
        &format!(
            "category = \"embedding\"\n[capabilities]\nvectors = [\"*\"]\nhttp = [\"127.0.0.1:{port}\"]\n[config]\n{config}"
        ),
    )?;
    dirs.install_handler(
        "rag",
        &rag_manifest(&format!("\"127.0.0.1:{port}\""), &config),
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let stored = daemon
        .run(
            "embed",
            json!({ "collection": "remote", "documents": [
                { "id": "s", "text": "We ship worldwide.", "metadata": { "url": "http://docs/shipping", "title": "Shipping" } },
                { "id": "r", "text": "Returns are free.", "metadata": { "url": "http://docs/returns", "title": "Returns" } }
            ] }),
        )
        .await?;
    ensure!(stored["status"] == "succeeded", "{stored}");
    assert_eq!(stored["result"]["model"], "fake-4");
    let (status, answer) = daemon
        .request(
            reqwest::Method::POST,
            "/api/hp/query",
            Some(json!({ "query": "Can I return it?", "collection": "remote" })),
        )
        .await?;
    ensure!(status == 200, "{answer}");
    assert_eq!(
        answer["result"]["citations"][0]["url"], "http://docs/returns",
        "{answer}"
    );
    // One call for the two passages, one for the query.
    assert_eq!(endpoint.hits.of("/v1/embeddings"), 2);
    Ok(())
}

#[tokio::test]
async fn a_batch_of_fifty_reports_fifty_outcomes() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install_handler("embed", embed_manifest())?;
    dirs.install_handler(
        "batch",
        "category = \"batch\"\n[limits]\nmax_children = 100\n[capabilities]\nsubmit = [\"embed\"]\n",
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let items: Vec<Value> = (0..50)
        .map(|i| json!({ "texts": [format!("item number {i} of the batch")] }))
        .collect();
    let task = seed(
        &daemon,
        "/api/hp/batch",
        json!({ "kind": "embed", "items": items }),
    )
    .await?;
    ensure!(task["status"] == "succeeded", "{task}");
    let result = &task["result"];
    assert_eq!(result["total"], 50);
    assert_eq!(result["succeeded"], 50);
    let outcomes = result["outcomes"].as_array().context("no outcomes")?;
    assert_eq!(outcomes.len(), 50);
    for (i, o) in outcomes.iter().enumerate() {
        assert_eq!(o["index"], i);
        assert_eq!(o["result"]["dim"], 384, "{o}");
    }
    assert_eq!(task["children"].as_array().map(Vec::len), Some(50));
    Ok(())
}

#[tokio::test]
async fn maintenance_cleanup_prunes_old_finished_tasks_and_nothing_else() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install("echo", "echo")?;
    dirs.install("busy", "busy")?;
    dirs.install_handler(
        "maintenance",
        "category = \"maintenance\"\n[capabilities]\nadmin = true\n",
    )?;
    let daemon = Daemon::start(&dirs).await?;
    let mut old = Vec::new();
    for i in 0..5 {
        let task = daemon.run("echo", json!({ "old": i })).await?;
        old.push(task["task_id"].as_str().unwrap_or_default().to_string());
    }
    let old_busy = daemon.run("busy", json!({ "ms": 5 })).await?;
    let running = daemon.submit("busy", json!({ "ms": 6000 })).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let recent = daemon.run("echo", json!({ "recent": true })).await?;
    let recent = recent["task_id"].as_str().unwrap_or_default().to_string();

    let cleanup = daemon
        .run(
            "maintenance",
            json!({ "action": "cleanup", "older_than_s": 2 }),
        )
        .await?;
    ensure!(cleanup["status"] == "succeeded", "{cleanup}");
    // The five old echoes and the old busy one are gone.
    assert_eq!(cleanup["result"]["pruned"], 6, "{cleanup}");
    old.push(old_busy["task_id"].as_str().unwrap_or_default().to_string());
    for id in &old {
        let (status, _) = daemon.get(&format!("/api/v1/tasks/{id}")).await?;
        assert_eq!(status, 404, "{id} should be pruned");
    }
    // The recent one, the running one and the cleanup itself stay.
    for id in [&recent, &running] {
        let (status, task) = daemon.get(&format!("/api/v1/tasks/{id}")).await?;
        assert_eq!(status, 200, "{id} should stay: {task}");
    }
    let health = daemon
        .run("maintenance", json!({ "action": "health" }))
        .await?;
    assert_eq!(health["result"]["health"]["status"], "healthy", "{health}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_document_sent_again_unchanged_is_not_embedded_again() -> Result<()> {
    let dirs = Dirs::new()?;
    dirs.install_handler("embed", embed_manifest())?;
    dirs.install_handler("rag", &rag_manifest("", ""))?;
    let daemon = Daemon::start(&dirs).await?;
    let docs = |returns: &str| {
        json!({ "collection": "brand-acme", "documents": [
            { "id": "https://acme.test/shipping", "text": "Orders ship within two days.",
              "metadata": { "url": "https://acme.test/shipping", "title": "Shipping" } },
            { "id": "https://acme.test/returns", "text": returns,
              "metadata": { "url": "https://acme.test/returns", "title": "Returns" } }
        ] })
    };
    let first = daemon
        .run("embed", docs("Returns are free within thirty days."))
        .await?;
    assert_eq!(first["status"], "succeeded", "{first}");
    assert_eq!(
        (&first["result"]["unchanged"], &first["result"]["chunks"]),
        (&json!(0), &json!(2)),
        "{first}"
    );
    // The same pages again (another crawl of the brand): nothing embedded.
    let again = daemon
        .run("embed", docs("Returns are free within thirty days."))
        .await?;
    assert_eq!(
        (&again["result"]["unchanged"], &again["result"]["chunks"]),
        (&json!(2), &json!(0)),
        "{again}"
    );
    // One page changed: only it is embedded again, and answers follow it.
    let changed = daemon
        .run("embed", docs("Returns are free within sixty days."))
        .await?;
    assert_eq!(
        (
            &changed["result"]["unchanged"],
            &changed["result"]["chunks"]
        ),
        (&json!(1), &json!(1)),
        "{changed}"
    );
    let answer = daemon
        .run(
            "rag",
            json!({ "query": "How many days do I have for returns?", "brand": "acme", "k": 1 }),
        )
        .await?;
    let passage = answer["result"]["citations"][0]["passage"]
        .as_str()
        .unwrap_or_default();
    ensure!(passage.contains("sixty"), "{answer}");
    // Other chunking is another digest: everything is embedded again.
    let mut rechunked = docs("Returns are free within sixty days.");
    rechunked["chunk_words"] = json!(50);
    let rechunked = daemon.run("embed", rechunked).await?;
    assert_eq!(rechunked["result"]["unchanged"], 0, "{rechunked}");
    Ok(())
}
