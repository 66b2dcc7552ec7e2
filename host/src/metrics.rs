//! Counters and histograms per pool and per plugin version, rendered as
//! Prometheus text (`GET /metrics`) and JSON (`GET /api/hp/stats`).
//!
//! The scheduler records events here ([`Metrics::attempt_finished`] and
//! friends); gauges that describe *now* (queue depths, running workers,
//! breaker states) are read from their owners at render time and passed in,
//! so they can never drift from the truth.

use crate::sync::lock;
use crate::task::{FailureKind, label_value};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram bucket bounds in seconds: 1 ms .. 5 min.
const BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 60.0, 300.0,
];

#[derive(Debug, Clone, Default, Serialize)]
pub struct Histogram {
    /// Cumulative counts per bound in [`BUCKETS`].
    pub buckets: Vec<u64>,
    pub sum_s: f64,
    pub count: u64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKETS.len()];
        }
        for (bound, count) in BUCKETS.iter().zip(self.buckets.iter_mut()) {
            if s <= *bound {
                *count += 1;
            }
        }
        self.sum_s += s;
        self.count += 1;
    }
}

/// Event counts of one pool.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolCounters {
    pub submitted: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub retried: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    /// Times a task was parked on an open breaker.
    pub parked: u64,
    /// Failed attempts by failure kind.
    pub failures: BTreeMap<&'static str, u64>,
    pub queue_wait: Histogram,
    pub run_time: Histogram,
    /// Worker-seconds spent running attempts (utilisation = rate / size).
    pub busy_seconds: f64,
}

/// Event counts of one plugin version.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginCounters {
    pub succeeded: u64,
    pub failed: u64,
    pub failures: BTreeMap<&'static str, u64>,
    pub run_time: Histogram,
}

#[derive(Debug, Default)]
struct Inner {
    pools: BTreeMap<String, PoolCounters>,
    plugins: BTreeMap<(String, String), PluginCounters>,
}

/// The daemon's metrics. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

/// What a pool looks like right now (passed in at render time).
#[derive(Debug, Clone, Serialize)]
pub struct PoolGauges {
    pub name: String,
    pub size: usize,
    pub running: usize,
    /// Queued tasks per priority, CRITICAL first.
    pub queued: [usize; 5],
    pub parked: usize,
    pub retry_wait: usize,
}

/// A breaker's state for the gauges: 0 closed, 1 half-open, 2 open.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerGauge {
    pub name: String,
    pub state: u8,
    pub times_opened: u64,
}

impl Metrics {
    fn with(&self, f: impl FnOnce(&mut Inner)) {
        f(&mut lock(&self.inner));
    }

    pub fn submitted(&self, pool: &str) {
        self.with(|m| m.pools.entry(pool.to_string()).or_default().submitted += 1);
    }

    pub fn parked(&self, pool: &str) {
        self.with(|m| m.pools.entry(pool.to_string()).or_default().parked += 1);
    }

    pub fn started(&self, pool: &str, queue_wait: Duration) {
        self.with(|m| {
            m.pools
                .entry(pool.to_string())
                .or_default()
                .queue_wait
                .observe(queue_wait)
        });
    }

    /// One attempt ended. `retried` says whether another attempt follows.
    pub fn attempt_finished(
        &self,
        pool: &str,
        plugin: (&str, &str),
        run_time: Duration,
        failure: Option<FailureKind>,
        retried: bool,
    ) {
        self.with(|m| {
            let p = m.pools.entry(pool.to_string()).or_default();
            p.run_time.observe(run_time);
            p.busy_seconds += run_time.as_secs_f64();
            let v = m
                .plugins
                .entry((plugin.0.to_string(), plugin.1.to_string()))
                .or_default();
            v.run_time.observe(run_time);
            match failure {
                None => {
                    p.succeeded += 1;
                    v.succeeded += 1;
                }
                Some(kind) => {
                    *p.failures.entry(kind.as_str()).or_default() += 1;
                    *v.failures.entry(kind.as_str()).or_default() += 1;
                    if kind == FailureKind::Timeout {
                        p.timed_out += 1;
                    }
                    if retried {
                        p.retried += 1;
                    } else if kind == FailureKind::Cancelled {
                        p.cancelled += 1;
                    } else {
                        p.failed += 1;
                        v.failed += 1;
                    }
                }
            }
        });
    }

    /// A task that ended without an attempt (cancelled while queued, no
    /// handler).
    pub fn ended_unrun(&self, pool: &str, kind: FailureKind) {
        self.with(|m| {
            let p = m.pools.entry(pool.to_string()).or_default();
            if kind == FailureKind::Cancelled {
                p.cancelled += 1;
            } else {
                p.failed += 1;
                *p.failures.entry(kind.as_str()).or_default() += 1;
            }
        });
    }

    pub fn pools(&self) -> BTreeMap<String, PoolCounters> {
        lock(&self.inner).pools.clone()
    }

    pub fn plugins(&self) -> BTreeMap<(String, String), PluginCounters> {
        lock(&self.inner).plugins.clone()
    }

    /// The Prometheus text exposition of everything.
    pub fn render_prometheus(&self, gauges: &[PoolGauges], breakers: &[BreakerGauge]) -> String {
        let pools = self.pools();
        let plugins = self.plugins();
        let mut out = String::new();
        let family = |name: &str, kind: &str, help: &str, out: &mut String| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        };

        let pool_gauges: [PoolGaugeFamily; 5] = [
            ("wasmhive_pool_workers", "Workers in the pool.", |g| {
                g.size as f64
            }),
            ("wasmhive_pool_running", "Attempts running now.", |g| {
                g.running as f64
            }),
            (
                "wasmhive_pool_utilisation",
                "Running / workers, now.",
                |g| {
                    if g.size == 0 {
                        0.0
                    } else {
                        g.running as f64 / g.size as f64
                    }
                },
            ),
            ("wasmhive_parked", "Tasks parked on an open breaker.", |g| {
                g.parked as f64
            }),
            ("wasmhive_retry_wait", "Tasks waiting to retry.", |g| {
                g.retry_wait as f64
            }),
        ];
        for (name, help, read) in pool_gauges {
            family(name, "gauge", help, &mut out);
            for g in gauges {
                let _ = writeln!(out, "{name}{{pool=\"{}\"}} {}", g.name, read(g));
            }
        }
        family(
            "wasmhive_queued",
            "gauge",
            "Queued tasks by priority.",
            &mut out,
        );
        for g in gauges {
            for (p, n) in crate::task::Priority::ALL.iter().zip(g.queued) {
                let _ = writeln!(
                    out,
                    "wasmhive_queued{{pool=\"{}\",priority=\"{}\"}} {n}",
                    g.name,
                    p.as_str()
                );
            }
        }

        let counters: [CounterFamily; 7] = [
            ("wasmhive_tasks_submitted_total", "Tasks submitted.", |c| {
                c.submitted
            }),
            (
                "wasmhive_tasks_succeeded_total",
                "Tasks that succeeded.",
                |c| c.succeeded,
            ),
            (
                "wasmhive_tasks_failed_total",
                "Tasks that failed for good.",
                |c| c.failed,
            ),
            (
                "wasmhive_tasks_retried_total",
                "Failed attempts followed by a retry.",
                |c| c.retried,
            ),
            (
                "wasmhive_tasks_timed_out_total",
                "Attempts stopped at their deadline.",
                |c| c.timed_out,
            ),
            ("wasmhive_tasks_cancelled_total", "Tasks cancelled.", |c| {
                c.cancelled
            }),
            (
                "wasmhive_tasks_parked_total",
                "Times a task was parked on an open breaker.",
                |c| c.parked,
            ),
        ];
        for (name, help, get) in counters {
            family(name, "counter", help, &mut out);
            for (pool, c) in &pools {
                let _ = writeln!(out, "{name}{{pool=\"{pool}\"}} {}", get(c));
            }
        }
        family(
            "wasmhive_attempt_failures_total",
            "counter",
            "Failed attempts by kind.",
            &mut out,
        );
        for (pool, c) in &pools {
            for (kind, n) in &c.failures {
                let _ = writeln!(
                    out,
                    "wasmhive_attempt_failures_total{{pool=\"{pool}\",kind=\"{kind}\"}} {n}"
                );
            }
        }
        family(
            "wasmhive_pool_busy_seconds_total",
            "counter",
            "Worker-seconds spent running attempts.",
            &mut out,
        );
        for (pool, c) in &pools {
            let _ = writeln!(
                out,
                "wasmhive_pool_busy_seconds_total{{pool=\"{pool}\"}} {}",
                c.busy_seconds
            );
        }
        family(
            "wasmhive_queue_wait_seconds",
            "histogram",
            "Time from queued to started.",
            &mut out,
        );
        for (pool, c) in &pools {
            histogram(
                &mut out,
                "wasmhive_queue_wait_seconds",
                &format!("pool=\"{pool}\""),
                &c.queue_wait,
            );
        }
        family(
            "wasmhive_run_seconds",
            "histogram",
            "Attempt run time.",
            &mut out,
        );
        for (pool, c) in &pools {
            histogram(
                &mut out,
                "wasmhive_run_seconds",
                &format!("pool=\"{pool}\""),
                &c.run_time,
            );
        }

        family(
            "wasmhive_plugin_attempts_total",
            "counter",
            "Attempts by plugin version and outcome.",
            &mut out,
        );
        for ((name, version), c) in &plugins {
            let labels = format!(
                "plugin=\"{}\",version=\"{}\"",
                label_value(name),
                label_value(version)
            );
            let _ = writeln!(
                out,
                "wasmhive_plugin_attempts_total{{{labels},outcome=\"succeeded\"}} {}",
                c.succeeded
            );
            for (kind, n) in &c.failures {
                let _ = writeln!(
                    out,
                    "wasmhive_plugin_attempts_total{{{labels},outcome=\"{kind}\"}} {n}"
                );
            }
        }
        family(
            "wasmhive_plugin_run_seconds",
            "histogram",
            "Attempt run time by plugin version.",
            &mut out,
        );
        for ((name, version), c) in &plugins {
            let labels = format!(
                "plugin=\"{}\",version=\"{}\"",
                label_value(name),
                label_value(version)
            );
            histogram(
                &mut out,
                "wasmhive_plugin_run_seconds",
                &labels,
                &c.run_time,
            );
        }

        family(
            "wasmhive_breaker_state",
            "gauge",
            "0 closed, 1 half-open, 2 open.",
            &mut out,
        );
        for b in breakers {
            let _ = writeln!(
                out,
                "wasmhive_breaker_state{{breaker=\"{}\"}} {}",
                label_value(&b.name),
                b.state
            );
        }
        family(
            "wasmhive_breaker_opened_total",
            "counter",
            "Times the breaker opened.",
            &mut out,
        );
        for b in breakers {
            let _ = writeln!(
                out,
                "wasmhive_breaker_opened_total{{breaker=\"{}\"}} {}",
                label_value(&b.name),
                b.times_opened
            );
        }
        out
    }
}

/// A pool gauge family: name, help text, how to read it.
type PoolGaugeFamily = (&'static str, &'static str, fn(&PoolGauges) -> f64);

/// A pool counter family: name, help text, how to read it.
type CounterFamily = (&'static str, &'static str, fn(&PoolCounters) -> u64);

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    for (i, bound) in BUCKETS.iter().enumerate() {
        let n = h.buckets.get(i).copied().unwrap_or(0);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_s);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.submitted("batch");
        m.started("batch", Duration::from_millis(3));
        m.attempt_finished(
            "batch",
            ("echo", "1.0.0"),
            Duration::from_millis(2),
            None,
            false,
        );
        m.attempt_finished(
            "batch",
            ("echo", "1.0.0"),
            Duration::from_secs(2),
            Some(FailureKind::Timeout),
            true,
        );
        let gauges = [PoolGauges {
            name: "batch".into(),
            size: 2,
            running: 1,
            queued: [1, 0, 3, 0, 0],
            parked: 0,
            retry_wait: 1,
        }];
        let text = m.render_prometheus(
            &gauges,
            &[BreakerGauge {
                name: "openai".into(),
                state: 2,
                times_opened: 1,
            }],
        );
        for line in [
            "wasmhive_tasks_succeeded_total{pool=\"batch\"} 1",
            "wasmhive_tasks_retried_total{pool=\"batch\"} 1",
            "wasmhive_tasks_timed_out_total{pool=\"batch\"} 1",
            "wasmhive_queued{pool=\"batch\",priority=\"NORMAL\"} 3",
            "wasmhive_run_seconds_bucket{pool=\"batch\",le=\"0.0025\"} 1",
            "wasmhive_run_seconds_count{pool=\"batch\"} 2",
            "wasmhive_pool_utilisation{pool=\"batch\"} 0.5",
            "wasmhive_breaker_state{breaker=\"openai\"} 2",
            "wasmhive_plugin_attempts_total{plugin=\"echo\",version=\"1.0.0\",outcome=\"timeout\"} 1",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
    }
}
