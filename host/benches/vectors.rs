//! Vector store memory, run with `cargo xtask bench` (release profile):
//! fills an in-memory store until `[vectors] max_mb` refuses, for small
//! and embedding-sized vectors, and prints what the store accounted beside
//! the growth of this process's resident memory, so the bound the operator
//! sets is the memory the daemon takes. Figures are printed, never asserted.

#![allow(clippy::print_stdout)] // a benchmark reports on stdout

use std::time::Instant;
use wasmhive::capabilities::vectors::{NewPoint, VectorConfig, VectorError, VectorStore};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

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
    Ok(())
}
