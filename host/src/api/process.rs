//! The standard `process_*` metrics (what Prometheus's client libraries
//! export on Linux, read from `/proc/self`) and `wasmhive_build_info`.

use std::fmt::Write as _;

/// Ticks a second in `/proc/self/stat` (USER_HZ: 100 on every Linux
/// architecture Rust targets).
const TICKS: f64 = 100.0;
const PAGE: u64 = 4096;

/// The exposition of the process metrics the system lets us read, and the
/// build info.
pub fn render() -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    };
    // Fields after the command name (which may hold spaces): state is 3.
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        gauge(
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            format!("{}", (utime + stime) as f64 / TICKS),
        );
    }
    if let Some(vsize) = field(23) {
        gauge(
            "process_virtual_memory_bytes",
            "gauge",
            "Virtual memory size in bytes.",
            vsize.to_string(),
        );
    }
    if let Some(rss) = field(24) {
        gauge(
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (rss * PAGE).to_string(),
        );
    }
    if let (Some(start), Some(boot)) = (field(22), boot_time()) {
        gauge(
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            format!("{}", boot as f64 + start as f64 / TICKS),
        );
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        gauge(
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            fds.count().to_string(),
        );
    }
    if let Some(max) = max_fds() {
        gauge(
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max.to_string(),
        );
    }
    let _ = writeln!(
        out,
        "# HELP wasmhive_build_info The daemon's version and the WIT contract it implements.\n\
         # TYPE wasmhive_build_info gauge\n\
         wasmhive_build_info{{version=\"{}\",wit=\"{}@{}\"}} 1",
        env!("CARGO_PKG_VERSION"),
        crate::bindings::WIT_PACKAGE,
        crate::bindings::WIT_VERSION
    );
    out
}

/// Seconds since the epoch at boot (`btime` in `/proc/stat`).
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ")?.trim().parse().ok())
}

/// The soft limit on open files (`/proc/self/limits`).
fn max_fds() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_process_metrics_are_read_and_the_build_is_named() {
        let text = super::render();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_start_time_seconds ",
            "wasmhive_build_info{version=",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
