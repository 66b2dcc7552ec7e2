//! Vector store memory and search, run with `cargo xtask bench --bench
//! vectors` (release profile):
//!
//! - fills an in-memory store until `[vectors] max_mb` refuses, for small
//!   and embedding-sized vectors, and prints what the store accounted beside
//!   the growth of this process's resident memory, so the bound the
//!   operator sets is the memory the daemon takes;
//! - search at 10k, 100k and 1M points of real 384-dimension sentence
//!   embeddings (the static all-MiniLM-L6-v2 of synthetic documentation
//!   sentences, `cargo xtask models`): insert rate, query p50/p99 (top 10)
//!   with the default index (exact below `[vectors] approximate_from`, the
//!   inverted file from there), and its recall@10 against an exact scan of
//!   the same points. `-- --search-only` skips the fills.
//!
//! Figures are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use std::time::{Duration, Instant};
use support::Result;
use wasmhive::capabilities::vectors::index::Collection;
use wasmhive::capabilities::vectors::{NewPoint, VectorConfig, VectorError, VectorStore};

/// Resident memory of this process, bytes (`/proc/self/statm`).
fn resident() -> Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .ok_or("statm has no resident field")?
        .parse()?;
    Ok(pages * 4096)
}

/// Fills a store bounded at `max_mb` with `dim`-dimension points in
/// batches of 1000 until it is full; prints points, accounted and resident.
fn fill(dim: usize, max_mb: u64) -> Result<()> {
    let before = resident()?;
    let store = VectorStore::in_memory(VectorConfig {
        max_mb,
        max_dim: 4096,
        ..VectorConfig::default()
    });
    let start = Instant::now();
    let mut n = 0u64;
    'fill: loop {
        let batch: Vec<NewPoint> = (0..1000)
            .map(|i| {
                let id = n + i;
                NewPoint {
                    id: format!("doc-{id}#p{}", id % 7),
                    vector: (0..dim)
                        .map(|j| ((id * 31 + j as u64 * 17) % 97 + 1) as f32)
                        .collect(),
                    metadata: format!("{{\"url\":\"http://docs/{id}\"}}"),
                    text: None,
                }
            })
            .collect();
        match store.upsert("bench", batch) {
            Ok(k) => n += u64::from(k),
            Err(VectorError::Full(_)) => break 'fill,
            Err(e) => return Err(e.to_string().into()),
        }
    }
    let took = start.elapsed();
    let grew = resident()?.saturating_sub(before);
    let used = store.used_bytes() as u64;
    println!(
        "vectors, {dim} dims, max_mb {max_mb}: {n} points in {:.1} s; accounted {} MiB, resident grew {} MiB ({:.2}x the accounted)",
        took.as_secs_f64(),
        used >> 20,
        grew >> 20,
        grew as f64 / used.max(1) as f64
    );
    drop(store);
    Ok(())
}

/// Each fill runs in a process of its own (this binary, with `--fill DIM
/// MAX_MB`), so one run's freed memory does not hide the next one's growth.
fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--fill") {
        let dim = args.get(at + 1).ok_or("--fill DIM MAX_MB")?.parse()?;
        let max_mb = args.get(at + 2).ok_or("--fill DIM MAX_MB")?.parse()?;
        return fill(dim, max_mb);
    }
    if args.iter().any(|a| a == "--search-only") {
        return search();
    }
    let me = std::env::current_exe()?;
    // Small vectors are where per-point overhead shows most.
    for (dim, max_mb) in [(3, 512), (384, 512)] {
        let status = std::process::Command::new(&me)
            .args(["--fill", &dim.to_string(), &max_mb.to_string()])
            .status()?;
        if !status.success() {
            return Err(format!("the {dim}-dimension fill failed: {status}").into());
        }
    }
    search()
}

/// Words the synthetic sentences are drawn from.
const WORDS: &[&str] = &[
    "socket",
    "thread",
    "file",
    "event",
    "loop",
    "module",
    "import",
    "class",
    "function",
    "return",
    "value",
    "error",
    "exception",
    "string",
    "bytes",
    "encoding",
    "list",
    "dictionary",
    "key",
    "iterator",
    "generator",
    "async",
    "await",
    "process",
    "signal",
    "timeout",
    "buffer",
    "stream",
    "path",
    "directory",
    "network",
    "request",
    "response",
    "header",
    "cookie",
    "session",
    "parser",
    "token",
    "grammar",
    "compile",
    "memory",
    "garbage",
    "collector",
    "reference",
    "cycle",
    "weak",
    "lock",
    "queue",
    "pool",
    "worker",
    "future",
    "callback",
    "decorator",
    "property",
    "method",
    "attribute",
    "inheritance",
    "metaclass",
    "descriptor",
    "slot",
    "format",
    "date",
    "time",
    "zone",
    "random",
    "seed",
    "hash",
    "digest",
    "archive",
    "compress",
    "zip",
    "tar",
    "csv",
    "json",
    "xml",
    "database",
    "cursor",
    "transaction",
    "commit",
    "test",
    "mock",
    "assert",
    "debug",
    "profile",
    "log",
    "handler",
    "level",
    "config",
    "argument",
    "option",
    "command",
    "shell",
    "environment",
];

/// The `i`th synthetic sentence: 12 words, deterministic.
fn sentence(i: usize) -> String {
    let mut x = i as u64 * 0x9e37_79b9_7f4a_7c15 + 1;
    (0..12)
        .map(|_| {
            x ^= x >> 13;
            x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
            WORDS[(x % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Embeddings of sentences `from..to` by the static model, on every core.
fn embed(model: &wasmhive_models::Model, from: usize, to: usize) -> Vec<Vec<f32>> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per = (to - from).div_ceil(cores);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..cores)
            .map(|c| {
                s.spawn(move || {
                    let (a, b) = (from + c * per, (from + (c + 1) * per).min(to));
                    let texts: Vec<String> = (a..b).map(sentence).collect();
                    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                    model
                        .embed(&refs)
                        .into_iter()
                        .map(Option::unwrap_or_default)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().unwrap_or_default())
            .collect()
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted
        .get(((sorted.len() as f64 - 1.0) * p).round() as usize)
        .copied()
        .unwrap_or_default()
}

/// Insert rate, query latency and recall@10 at 10k, 100k and 1M points.
fn search() -> Result<()> {
    let model =
        wasmhive_models::Model::load(&support::models_dir().join("all-minilm-l6-v2-static"))
            .map_err(|e| format!("{e} (`cargo xtask models` fetches the models)"))?;
    let dim = model.dim();
    let queries: Vec<Vec<f32>> = embed(&model, 50_000_000, 50_000_200);
    let mut collection = Collection::new(dim);
    let mut exact = Collection::new(dim).approximate(0, 1);
    let mut done = 0;
    for size in [10_000, 100_000, 1_000_000] {
        let vectors = embed(&model, done, size);
        let start = Instant::now();
        for (i, v) in vectors.iter().enumerate() {
            let n = done + i;
            collection.upsert(format!("doc-{n}#p{}", n % 7), v, format!("{{\"n\":{n}}}"));
        }
        let took = start.elapsed();
        for (i, v) in vectors.iter().enumerate() {
            let n = done + i;
            exact.upsert(format!("doc-{n}#p{}", n % 7), v, String::new());
        }
        done = size;
        let probes: &[usize] = if collection.index_lists().is_some() {
            &[16, 24, 48, 96]
        } else {
            &[0]
        };
        for &p in probes {
            collection.set_probes(p);
            let mut latencies = Vec::new();
            let mut exact_latencies = Vec::new();
            let (mut found, mut wanted) = (0, 0);
            for q in &queries {
                let asked = Instant::now();
                let got = collection.query(q, 10);
                latencies.push(asked.elapsed());
                let scanned = Instant::now();
                let truth = exact.query(q, 10);
                exact_latencies.push(scanned.elapsed());
                wanted += truth.len();
                found += truth
                    .iter()
                    .filter(|t| got.iter().any(|g| g.0 == t.0))
                    .count();
            }
            latencies.sort();
            exact_latencies.sort();
            println!(
                "search, {size} points x {dim}: {} ({:.0} inserts/s incl. indexing); top 10 p50 {:.2?}, p99 {:.2?}; recall@10 {:.3} (an exact scan: p50 {:.2?})",
                collection
                    .index_lists()
                    .map_or("exact scan".to_string(), |l| format!(
                        "inverted file, {l} lists, {p} probed"
                    )),
                vectors.len() as f64 / took.as_secs_f64(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99),
                found as f64 / wanted.max(1) as f64,
                percentile(&exact_latencies, 0.5),
            );
        }
        collection.set_probes(wasmhive::capabilities::vectors::index::PROBES);
    }
    Ok(())
}
