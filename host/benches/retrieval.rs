//! Retrieval quality on a real documentation set, run with
//! `cargo xtask bench --bench retrieval` (release):
//!
//! Debian's `python3.11-doc` (Sphinx HTML, unpacked by `cargo xtask bench`
//! under `target/bench-data`) is served on 127.0.0.1, crawled and ingested
//! by one `scrape` task through the daemon, and each question of
//! `benches/retrieval/python-3.11.jsonl` (phrased as a user would ask,
//! with the pages that answer it) is asked as a `rag` task. Printed:
//! crawl and ingest rates, hit@1, hit@5 and MRR@10 over answer pages,
//! and the query latency (a whole `rag` task) at p50/p99 — beside a BM25
//! baseline over the very passages the collection holds (their stored
//! text with its context line, stemmed: the host's own BM25 index, alone),
//! ranked the same way (a page by its best passage), in the same run.
//!
//! Each embedder is a pass of its own (a fresh daemon): by default the
//! hashed `local` one and the host's `all-minilm-l6-v2-static`; `--
//! --embedder NAME` (repeatable) chooses, e.g. `all-minilm-l6-v2` (the
//! encoder itself: minutes of ingest on 2 cores). `-- --set KEY=VALUE`
//! adds to rag's `[config]` (`lexical_weight`, `vector_weight`).
//! `WASMHIVE_EVAL_DOCS` points at another copy of the HTML tree;
//! `-- --verbose` prints each question's ranks.
//! Figures are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use axum::Router;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::Result;
use wasmhive::Daemon;
use wasmhive::capabilities::vectors::lexical::Lexical;
use wasmhive::task::Priority;

fn main() -> Result<()> {
    support::run(async_main)
}

const BRAND: &str = "pydocs";

/// One question and the pages (paths below the site root) that answer it.
#[derive(serde::Deserialize)]
struct Question {
    q: String,
    pages: Vec<String>,
}

fn docs_root() -> Result<PathBuf> {
    let dir = match std::env::var_os("WASMHIVE_EVAL_DOCS") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../target/bench-data/python3.11-doc/usr/share/doc/python3.11/html"),
    };
    if dir.join("index.html").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "{}: no documentation set; `cargo xtask bench` unpacks Debian's python3.11-doc there",
            dir.display()
        )
        .into())
    }
}

/// Serves `root` as a static site (no robots.txt: everything is allowed).
async fn serve(root: PathBuf) -> Result<String> {
    let root = Arc::new(root);
    let router = Router::new().fallback(move |uri: Uri| {
        let root = root.clone();
        async move { file(&root, uri.path()).await }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(format!("http://{addr}"))
}

async fn file(root: &Path, path: &str) -> Response {
    let relative = path.trim_start_matches('/');
    if relative
        .split('/')
        .any(|part| part == ".." || part.contains('\\'))
    {
        return StatusCode::BAD_REQUEST.into_response();
    }
    let mut full = root.join(relative);
    if relative.is_empty() || relative.ends_with('/') {
        full = full.join("index.html");
    }
    let Ok(body) = tokio::fs::read(&full).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let kind = match full.extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("css") => "text/css",
        Some("js") => "text/javascript",
        Some("txt") => "text/plain; charset=utf-8",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}

/// Runs a task to its end; returns the finished record's result.
async fn run(daemon: &Daemon, kind: &str, payload: serde_json::Value) -> Result<serde_json::Value> {
    let scheduler = daemon.scheduler();
    let mut task = support::task(kind, payload, Priority::Normal);
    // The manifests' ceiling: an ingest with the encoder takes minutes.
    task.timeout_s = Some(1800);
    let submitted = scheduler.submit(task).await?;
    let done = scheduler
        .wait(submitted.task.task_id, Duration::from_secs(1800))
        .await
        .ok_or("task vanished")?;
    if done.status != wasmhive::task::TaskStatus::Succeeded {
        return Err(format!("{kind} did not succeed: {:?}", done.error).into());
    }
    Ok(done.result.unwrap_or_default())
}

/// The page of a cited URL: its path below the site, without the anchor.
fn page_of(site: &str, url: &str) -> String {
    let url = url.split('#').next().unwrap_or(url);
    let path = url
        .strip_prefix(site)
        .unwrap_or(url)
        .trim_start_matches('/');
    if path.is_empty() {
        "index.html".to_string()
    } else {
        path.to_string()
    }
}

/// Where the first page of `relevant` is in `ranked` (1-based).
fn rank(ranked: &[String], relevant: &[String]) -> Option<usize> {
    ranked
        .iter()
        .position(|p| relevant.contains(p))
        .map(|i| i + 1)
}

#[derive(Default)]
struct Scores {
    hit1: usize,
    hit5: usize,
    rr: f64,
    n: usize,
}

impl Scores {
    fn add(&mut self, rank: Option<usize>) {
        self.n += 1;
        if let Some(r) = rank {
            self.hit1 += usize::from(r == 1);
            self.hit5 += usize::from(r <= 5);
            if r <= 10 {
                self.rr += 1.0 / r as f64;
            }
        }
    }

    fn line(&self, name: &str, latency: &str) -> String {
        let n = self.n.max(1) as f64;
        format!(
            "{name:<28} hit@1 {:.2}   hit@5 {:.2}   MRR@10 {:.2}   {latency}",
            self.hit1 as f64 / n,
            self.hit5 as f64 / n,
            self.rr / n
        )
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// The embedders compared by default: the hashed words inside the sandbox,
/// and the host's static all-MiniLM-L6-v2 (`cargo xtask models`).
const EMBEDDERS: [&str; 2] = ["local", "all-minilm-l6-v2-static"];

async fn async_main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let verbose = args.iter().any(|a| a == "--verbose");
    // `--embedder NAME` (repeatable) picks the embedders to compare.
    let chosen: Vec<String> = args
        .windows(2)
        .filter(|w| w[0] == "--embedder")
        .map(|w| w[1].clone())
        .collect();
    // `--set KEY=VALUE` (repeatable) adds to rag's [config], e.g.
    // `--set lexical_weight=1`.
    let settings: String = args
        .windows(2)
        .filter(|w| w[0] == "--set")
        .filter_map(|w| w[1].split_once('='))
        .map(|(k, v)| format!("{k} = \"{v}\"\n"))
        .collect();
    let embedders: Vec<String> = if chosen.is_empty() {
        EMBEDDERS.iter().map(|e| e.to_string()).collect()
    } else {
        chosen
    };
    let docs = docs_root()?;
    let questions: Vec<Question> = include_str!("retrieval/python-3.11.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<std::result::Result<_, _>>()?;
    let site = serve(docs.clone()).await?;
    println!(
        "== corpus: Debian python3.11-doc, {} HTML files, {} questions",
        walk(&docs)?,
        questions.len()
    );
    for (i, embedder) in embedders.iter().enumerate() {
        println!("== embedder: {embedder}");
        pass(&site, embedder, &settings, &questions, i == 0, verbose).await?;
    }
    Ok(())
}

/// The manifests of scrape, embed and rag, with `embedder` configured.
fn install(plugins: &Path, port: &str, embedder: &str, settings: &str) -> Result<()> {
    let grant = if embedder == "local" {
        String::new()
    } else {
        format!("models = [\"{embedder}\"]\n")
    };
    let config = format!("[config]\nembedder = \"{embedder}\"\n");
    support::install_handler(
        plugins,
        "scrape",
        &format!(
            "category = \"scraping\"\n[limits]\ntimeout_s = 1800\nmemory_mb = 512\nmax_children = 100\n\
             [capabilities]\nhttp = [\"127.0.0.1:{port}\"]\nsubmit = [\"embed\"]\n"
        ),
    )?;
    support::install_handler(
        plugins,
        "embed",
        &format!(
            "category = \"embedding\"\n[limits]\ntimeout_s = 1800\nmemory_mb = 512\n\
             [capabilities]\nvectors = [\"*\"]\n{grant}{config}"
        ),
    )?;
    support::install_handler(
        plugins,
        "rag",
        &format!(
            "category = \"rag\"\n[limits]\nmemory_mb = 256\n[capabilities]\nvectors = [\"*\"]\n{grant}{config}{settings}"
        ),
    )?;
    Ok(())
}

/// Crawls, ingests and asks every question with one embedder; the crawl
/// alone and the BM25 baseline too when `first`.
async fn pass(
    site: &str,
    embedder: &str,
    settings: &str,
    questions: &[Question],
    first: bool,
    verbose: bool,
) -> Result<()> {
    let root = tempfile::tempdir()?;
    let mut config = support::config(root.path(), 2);
    config.vectors.max_mb = 2048;
    config.models = Some(support::models_dir());
    std::fs::create_dir_all(&config.plugins)?;
    let port = site.rsplit(':').next().unwrap_or("0");
    install(&config.plugins, port, embedder, settings)?;
    let daemon = Daemon::start(config).await?;
    daemon.ready().await;

    if first {
        // The crawl alone first (extraction, no ingest): what the fetching
        // and parsing cost, apart from the embedding and storing.
        let start = Instant::now();
        let fetched = run(
            &daemon,
            "scrape",
            serde_json::json!({ "url": format!("{site}/index.html"), "depth": 6, "max_pages": 1000 }),
        )
        .await?;
        let took = start.elapsed();
        let pages = fetched["pages"].as_array().map_or(0, Vec::len);
        println!(
            "crawl only:      {pages} pages in {took:.1?} = {:.0} pages/s",
            pages as f64 / took.as_secs_f64()
        );
    }
    let start = Instant::now();
    let crawled = run(
        &daemon,
        "scrape",
        serde_json::json!({
            "url": format!("{site}/index.html"),
            "brand": BRAND,
            "depth": 6,
            "max_pages": 1000,
        }),
    )
    .await?;
    let took = start.elapsed();
    let pages = crawled["pages"].as_array().map_or(0, Vec::len);
    let ingest = &crawled["ingest"];
    println!(
        "crawl + ingest:  {pages} pages, {} passages in {took:.1?} = {:.0} pages/s end to end ({} children, {} failed, {} pending)",
        ingest["chunks"],
        pages as f64 / took.as_secs_f64(),
        ingest["children"],
        ingest["failed"],
        ingest["pending"],
    );

    let vectors = daemon
        .scheduler()
        .registry()
        .runtime()
        .services()
        .vectors
        .clone()
        .ok_or("no vector store")?;
    let collection = format!("brand-{BRAND}");
    let points = vectors.points(&collection)?;
    if points.is_empty() {
        return Err(format!("nothing was stored in `{collection}`").into());
    }
    let mut pages_of: HashMap<String, String> = HashMap::new();
    let mut bm25 = Lexical::default();
    for (id, metadata) in &points {
        let meta: serde_json::Value = serde_json::from_str(metadata).unwrap_or_default();
        let url = meta["url"].as_str().unwrap_or(id);
        pages_of.insert(id.clone(), page_of(site, url));
        let text = meta["text"].as_str().unwrap_or_default();
        match meta["context"].as_str() {
            Some(context) => bm25.insert(id, &format!("{context}\n{text}")),
            None => bm25.insert(id, text),
        }
    }

    let mut system = Scores::default();
    let mut baseline = Scores::default();
    let mut latencies = Vec::new();
    let mut baseline_latencies = Vec::new();
    for question in questions {
        let asked = Instant::now();
        let answer = run(
            &daemon,
            "rag",
            serde_json::json!({ "query": question.q, "brand": BRAND, "k": 10 }),
        )
        .await?;
        latencies.push(asked.elapsed());
        let ranked: Vec<String> = answer["citations"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|c| c["url"].as_str())
                    .map(|u| page_of(site, u))
                    .collect()
            })
            .unwrap_or_default();
        let found = rank(&ranked, &question.pages);
        system.add(found);

        let searched = Instant::now();
        let mut best: HashMap<&str, f32> = HashMap::new();
        for (id, score) in bm25.search(&question.q, points.len()) {
            let Some(page) = pages_of.get(id).map(String::as_str) else {
                continue;
            };
            let slot = best.entry(page).or_insert(f32::MIN);
            *slot = slot.max(score);
        }
        let mut by_page: Vec<(&str, f32)> = best.into_iter().collect();
        by_page.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        let lexical: Vec<String> = by_page
            .iter()
            .take(10)
            .map(|(p, _)| p.to_string())
            .collect();
        baseline_latencies.push(searched.elapsed());
        let lexical_rank = rank(&lexical, &question.pages);
        baseline.add(lexical_rank);
        if verbose {
            println!(
                "{:>4} {:>4}  {}  -> {}",
                found.map_or("-".into(), |r| r.to_string()),
                lexical_rank.map_or("-".into(), |r| r.to_string()),
                question.q,
                ranked.first().map_or("", String::as_str)
            );
        }
    }
    latencies.sort();
    baseline_latencies.sort();
    println!(
        "== {} questions, answer pages ranked by each",
        questions.len()
    );
    println!(
        "{}",
        system.line(
            &format!("rag, {embedder} (whole task)"),
            &format!(
                "p50 {:.1?}  p99 {:.1?}",
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            )
        )
    );
    if first {
        println!(
            "{}",
            baseline.line(
                "BM25 alone, same passages",
                &format!(
                    "p50 {:.1?}  p99 {:.1?} (in process)",
                    percentile(&baseline_latencies, 0.5),
                    percentile(&baseline_latencies, 0.99)
                )
            )
        );
    }
    println!("passages: {}", points.len());
    daemon.shutdown().await;
    Ok(())
}

/// How many HTML files the documentation set has.
fn walk(dir: &Path) -> Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            n += walk(&path)?;
        } else if path.extension().is_some_and(|e| e == "html") {
            n += 1;
        }
    }
    Ok(n)
}
