//! The `models` capability's models, natively, run with
//! `cargo xtask bench --bench models` (release): for the encoder
//! (all-MiniLM-L6-v2) and its static version, the load time, the resident
//! memory the load added, and embeddings per second of documentation-sized
//! passages (120 words, about 160 tokens) and of questions (about 10 words),
//! one call of 32 texts at a time as the capability slices them. Figures
//! are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

mod support;

use std::time::Instant;
use support::Result;
use wasmhive_models::Model;

/// Words the synthetic passages are drawn from (documentation vocabulary).
const WORDS: &[&str] = &[
    "the",
    "function",
    "returns",
    "a",
    "new",
    "list",
    "of",
    "objects",
    "when",
    "called",
    "with",
    "an",
    "iterable",
    "argument",
    "module",
    "provides",
    "access",
    "to",
    "file",
    "system",
    "paths",
    "socket",
    "connection",
    "is",
    "closed",
    "after",
    "timeout",
    "raises",
    "exception",
    "if",
    "value",
    "cannot",
    "be",
    "converted",
    "thread",
    "pool",
    "executes",
    "calls",
    "asynchronously",
    "dictionary",
    "keys",
    "are",
    "unique",
    "and",
    "hashable",
    "string",
    "methods",
    "format",
    "encoding",
    "bytes",
    "decode",
    "default",
    "parameter",
    "keyword",
    "class",
    "attribute",
];

fn texts(n: usize, words: usize, seed: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            (0..words)
                .map(|w| WORDS[(i * 131 + w * 17 + seed + w * w) % WORDS.len()])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn resident_mb() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |pages| pages * 4096.0 / f64::from(1 << 20))
}

fn rate(model: &Model, texts: &[String]) -> f64 {
    let start = Instant::now();
    for slice in texts.chunks(32) {
        let refs: Vec<&str> = slice.iter().map(String::as_str).collect();
        std::hint::black_box(model.embed(&refs));
    }
    texts.len() as f64 / start.elapsed().as_secs_f64()
}

fn main() -> Result<()> {
    let dir = support::models_dir();
    println!(
        "== models in {} ({} cores)",
        dir.display(),
        std::thread::available_parallelism().map_or(1, usize::from)
    );
    for name in ["all-minilm-l6-v2-static", "all-minilm-l6-v2"] {
        let before = resident_mb();
        let start = Instant::now();
        let model = Model::load(&dir.join(name))
            .map_err(|e| format!("{e} (`cargo xtask models` fetches the models)"))?;
        let load = start.elapsed();
        let memory = resident_mb() - before;
        let (passages, questions) = if model.kind_name() == "static" {
            (texts(20_000, 120, 1), texts(20_000, 10, 2))
        } else {
            (texts(256, 120, 1), texts(1024, 10, 2))
        };
        let tokens = passages.first().map_or(0, |p| model.tokens(p));
        println!(
            "{name:<26} {:<7} dim {}  load {load:.2?}  +{memory:.0} MiB resident  \
             passages ({tokens} tokens) {:.0}/s  questions {:.0}/s",
            model.kind_name(),
            model.dim(),
            rate(&model, &passages),
            rate(&model, &questions),
        );
    }
    Ok(())
}
