//! Bundled handler benchmarks, run with `cargo xtask bench` (release):
//!
//! 1. scraping a local website (pages/s), one crawl and six at once;
//! 2. embedding inside the sandbox (the `embed` guest) against the same
//!    embedder compiled natively in this process: the ratio is the
//!    sandbox's cost;
//! 3. vector query latency, p50/p99, at 10k and 100k vectors of 384
//!    dimensions: the host's search alone, and a whole `rag` task.
//!
//! Figures are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use axum::Router;
use axum::extract::Path as UrlPath;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use std::time::{Duration, Instant};
use support::Result;
use wasmhive::Daemon;
use wasmhive::capabilities::vectors::NewPoint;
use wasmhive::scheduler::NewTask;
use wasmhive::task::Priority;

fn main() -> Result<()> {
    support::run(async_main)
}

/// Pages of the benchmark site; each index page links to 50 of them.
const SITE_PAGES: usize = 300;

const WORDS: &[&str] = &[
    "bicycle", "delivery", "warranty", "frame", "wheel", "order", "refund", "courier", "europe",
    "studio", "design", "steel", "carbon", "brake", "chain", "saddle", "lisbon", "workshop",
    "service", "repair", "tyre", "light", "battery", "motor", "cargo", "city", "commute",
];

/// Deterministic text of about `n` words for page or item `seed`.
fn text(seed: usize, n: usize) -> String {
    let mut state = seed as u64 * 0x9e37_79b9 + 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            WORDS[(state % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

async fn start_site() -> Result<String> {
    let router = Router::new()
        .route(
            "/robots.txt",
            get(|| async { "User-agent: *\nDisallow: /private/\n" }),
        )
        .route(
            "/index/{n}",
            get(|UrlPath(n): UrlPath<usize>| async move {
                let links: String = (n * 50..(n + 1) * 50)
                    .map(|p| format!("<li><a href=\"/page/{}\">page {p}</a></li>", p % SITE_PAGES))
                    .collect();
                html(format!("<h1>Index {n}</h1><ul>{links}</ul>"))
            }),
        )
        .route(
            "/page/{n}",
            get(|UrlPath(n): UrlPath<usize>| async move {
                html(format!(
                    "<h1>Page {n}</h1><p>{}</p><p>{}</p><a href=\"/page/{}\">next</a>",
                    text(n, 150),
                    text(n + 7, 150),
                    (n + 1) % SITE_PAGES
                ))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

fn html(body: String) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        format!(
            "<!doctype html><html><head><title>Bench</title></head><body><nav>menu</nav><main>{body}</main></body></html>"
        ),
    )
}

fn task(kind: &str, payload: serde_json::Value) -> NewTask {
    support::task(kind, payload, Priority::Normal)
}

/// Runs a task to its end; returns the finished record's result.
async fn run(daemon: &Daemon, kind: &str, payload: serde_json::Value) -> Result<serde_json::Value> {
    let scheduler = daemon.scheduler();
    let submitted = scheduler.submit(task(kind, payload)).await?;
    let done = scheduler
        .wait(submitted.task.task_id, Duration::from_secs(600))
        .await
        .ok_or("task vanished")?;
    if done.status != wasmhive::task::TaskStatus::Succeeded {
        return Err(format!("{kind} did not succeed: {:?}", done.error).into());
    }
    Ok(done.result.unwrap_or_default())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn async_main() -> Result<()> {
    let site = start_site().await?;
    let root = tempfile::tempdir()?;
    let mut config = support::config(root.path(), 2);
    config.vectors.max_mb = 2048;
    std::fs::create_dir_all(&config.plugins)?;
    let port = site.rsplit(':').next().unwrap_or("0");
    support::install_handler(
        &config.plugins,
        "scrape",
        &format!("category = \"scraping\"\n[capabilities]\nhttp = [\"127.0.0.1:{port}\"]\n"),
    )?;
    support::install_handler(
        &config.plugins,
        "embed",
        "category = \"embedding\"\n[limits]\nmemory_mb = 256\n[capabilities]\nvectors = [\"*\"]\n",
    )?;
    support::install_handler(
        &config.plugins,
        "rag",
        "category = \"rag\"\n[capabilities]\nvectors = [\"*\"]\n",
    )?;
    let daemon = Daemon::start(config).await?;
    daemon.ready().await;

    println!("== 1. scraping a local site (extraction only, no ingest)");
    let start = Instant::now();
    let result = run(
        &daemon,
        "scrape",
        serde_json::json!({ "url": format!("{site}/index/0"), "depth": 1, "max_pages": 51 }),
    )
    .await?;
    let pages = result["pages"].as_array().map_or(0, Vec::len);
    let took = start.elapsed();
    println!(
        "one crawl:       {pages} pages in {took:?} = {:.0} pages/s",
        pages as f64 / took.as_secs_f64()
    );
    let start = Instant::now();
    let mut crawls = tokio::task::JoinSet::new();
    for n in 0..6 {
        let scheduler = daemon.scheduler().clone();
        let site = site.clone();
        crawls.spawn(async move {
            let id = scheduler
                .submit(task(
                    "scrape",
                    serde_json::json!({ "url": format!("{site}/index/{n}"), "depth": 1, "max_pages": 51 }),
                ))
                .await
                .map(|s| s.task.task_id);
            match id {
                Ok(id) => scheduler
                    .wait(id, Duration::from_secs(600))
                    .await
                    .and_then(|t| t.result)
                    .and_then(|r| r["pages"].as_array().map(Vec::len))
                    .unwrap_or(0),
                Err(_) => 0,
            }
        });
    }
    let mut pages = 0;
    while let Some(n) = crawls.join_next().await {
        pages += n?;
    }
    let took = start.elapsed();
    println!(
        "six at once:     {pages} pages in {took:?} = {:.0} pages/s (6 scraping workers, 2 cores)",
        pages as f64 / took.as_secs_f64()
    );

    println!("== 2. embedding: sandbox vs native, same embedder");
    let texts: Vec<String> = (0..2000).map(|i| text(i, 100)).collect();
    // Native first, in this process.
    let start = Instant::now();
    let mut dims = 0;
    for t in &texts {
        dims += wasmhive_embedder::embed(t).map_or(0, |v| v.len());
    }
    let native = texts.len() as f64 / start.elapsed().as_secs_f64();
    assert!(dims > 0);
    // In the sandbox: batches of 200 texts per task, one at a time, timed
    // by the host around each task.
    let start = Instant::now();
    for batch in texts.chunks(200) {
        run(&daemon, "embed", serde_json::json!({ "texts": batch })).await?;
    }
    let sandbox = texts.len() as f64 / start.elapsed().as_secs_f64();
    // The same texts as documents stored in a collection: the result is a
    // few numbers instead of 384 floats per text in JSON.
    let start = Instant::now();
    for (b, batch) in texts.chunks(200).enumerate() {
        let documents: Vec<serde_json::Value> = batch
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({ "id": format!("d{b}-{i}"), "text": t }))
            .collect();
        run(
            &daemon,
            "embed",
            serde_json::json!({ "documents": documents, "collection": "embedbench", "chunk_words": 200 }),
        )
        .await?;
    }
    let stored = texts.len() as f64 / start.elapsed().as_secs_f64();
    println!("native:                    {native:>8.0} texts/s (100 words each)");
    println!(
        "sandbox, vectors as JSON:  {sandbox:>8.0} texts/s  (native / sandbox = {:.2}x, incl. task and JSON of 384 floats per text)",
        native / sandbox
    );
    println!(
        "sandbox, stored as points: {stored:>8.0} texts/s  (native / sandbox = {:.2}x, incl. task and upsert)",
        native / stored
    );

    println!("== 3. vector query latency, 384 dimensions");
    let vectors = daemon
        .scheduler()
        .registry()
        .runtime()
        .services()
        .vectors
        .clone()
        .ok_or("no vector store")?;
    for size in [10_000usize, 100_000] {
        let collection = format!("bench{size}");
        let fill = Instant::now();
        let mut points = Vec::new();
        for i in 0..size {
            let vector = wasmhive_embedder::embed(&text(i, 60)).unwrap_or_default();
            points.push(NewPoint {
                id: format!("p{i}"),
                vector,
                metadata: format!(
                    "{{\"url\":\"http://bench/{i}\",\"title\":\"page {i}\",\"text\":\"{}\"}}",
                    text(i, 60)
                ),
                text: Some(text(i, 60)),
            });
            if points.len() == 10_000 {
                vectors.upsert(&collection, std::mem::take(&mut points))?;
            }
        }
        if !points.is_empty() {
            vectors.upsert(&collection, points)?;
        }
        let filled = fill.elapsed();
        let mut raw = Vec::new();
        for q in 0..200 {
            let query = wasmhive_embedder::embed(&text(q + 1_000_000, 8)).unwrap_or_default();
            let t = Instant::now();
            let hits = vectors.query(&collection, &query, 10)?;
            raw.push(t.elapsed());
            assert_eq!(hits.len(), 10);
        }
        raw.sort();
        let mut whole = Vec::new();
        for q in 0..50 {
            let t = Instant::now();
            run(
                &daemon,
                "rag",
                serde_json::json!({ "query": text(q + 2_000_000, 8), "collection": collection }),
            )
            .await?;
            whole.push(t.elapsed());
        }
        whole.sort();
        println!(
            "{size:>7} vectors (filled in {filled:.1?}): search p50 {:?} p99 {:?}; whole rag task p50 {:?} p99 {:?}",
            percentile(&raw, 0.5),
            percentile(&raw, 0.99),
            percentile(&whole, 0.5),
            percentile(&whole, 0.99),
        );
    }
    println!("vector memory in use: {} MiB", vectors.used_bytes() >> 20);
    Ok(())
}
