//! What each plugin holds against its quotas: `usage` in
//! `GET /api/v1/plugins`, and `wasmhive_plugin_limit` /
//! `wasmhive_plugin_usage` in `/metrics` (one series per plugin and quota,
//! so an operator can alert on usage / limit).

use super::AppState;
use crate::runtime::registry::{LimitsStatus, PluginStatus};
use crate::task::label_value;
use serde::Serialize;
use std::fmt::Write;

/// A plugin's use of what its quotas bound, now.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PluginUsage {
    /// Attempts running now (bounded by `max_concurrency`).
    pub running: usize,
    /// Tasks held back because the plugin is at its concurrency limit.
    pub held: usize,
    /// Tasks parked on open breakers (bounded by `max_parked`).
    pub parked: usize,
    /// Points and bytes in its own vector collections.
    pub vector_points: u64,
    pub vector_bytes: u64,
}

/// Usage of every plugin, in the order of `statuses`.
pub fn usage(state: &AppState, statuses: &[PluginStatus]) -> Vec<Option<PluginUsage>> {
    let load = state.scheduler.plugin_load();
    let vectors = state
        .scheduler
        .registry()
        .runtime()
        .services()
        .vectors
        .clone();
    statuses
        .iter()
        .map(|s| {
            let name = s.name.as_deref()?;
            let (running, held) = load.get(name).copied().unwrap_or_default();
            let held_vectors = vectors.as_ref().map(|v| v.usage(name)).unwrap_or_default();
            Some(PluginUsage {
                running,
                held,
                parked: state.scheduler.parked_of(name),
                vector_points: held_vectors.points,
                vector_bytes: held_vectors.bytes,
            })
        })
        .collect()
}

/// The limits as (quota, value), in the units `/metrics` uses.
fn limits(l: &LimitsStatus) -> [(&'static str, u64); 9] {
    [
        ("max_concurrency", u64::from(l.max_concurrency)),
        ("max_children", u64::from(l.max_children)),
        ("max_depth", u64::from(l.max_depth)),
        ("max_descendants", u64::from(l.max_descendants)),
        ("children_per_s", u64::from(l.children_per_s)),
        ("vector_points", l.vector_points),
        ("vector_bytes", l.vector_mb << 20),
        ("max_payload_bytes", l.max_payload_mb << 20),
        ("max_parked", u64::from(l.max_parked)),
    ]
}

/// The `wasmhive_plugin_limit` and `wasmhive_plugin_usage` families.
pub fn render_prometheus(state: &AppState) -> String {
    let statuses = state.scheduler.registry().statuses();
    let usage = usage(state, &statuses);
    let mut out = String::from(
        "# HELP wasmhive_plugin_limit A plugin's quota (manifest [limits] or the default; \
         max_concurrency 0 = automatic).\n# TYPE wasmhive_plugin_limit gauge\n",
    );
    for s in &statuses {
        let (Some(name), Some(l)) = (&s.name, &s.limits) else {
            continue;
        };
        for (quota, value) in limits(l) {
            let _ = writeln!(
                out,
                "wasmhive_plugin_limit{{plugin=\"{}\",quota=\"{quota}\"}} {value}",
                label_value(name)
            );
        }
    }
    out.push_str(
        "# HELP wasmhive_plugin_usage What a plugin holds against its quota now.\n\
         # TYPE wasmhive_plugin_usage gauge\n",
    );
    for (s, u) in statuses.iter().zip(&usage) {
        let (Some(name), Some(u)) = (&s.name, u) else {
            continue;
        };
        let name = label_value(name);
        for (quota, value) in [
            ("max_concurrency", u.running as u64),
            ("max_parked", u.parked as u64),
            ("vector_points", u.vector_points),
            ("vector_bytes", u.vector_bytes),
        ] {
            let _ = writeln!(
                out,
                "wasmhive_plugin_usage{{plugin=\"{name}\",quota=\"{quota}\"}} {value}"
            );
        }
    }
    out
}
