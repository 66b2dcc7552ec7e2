//! The runtime's settings: default per-plugin limits and the engine's
//! fixed parameters. They are part of the daemon's `Config` (re-exported
//! from `config`), defined here so the runtime depends on nothing above it.

use serde::{Deserialize, Serialize};

/// Default limits for every plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Linear memory cap per instance, MiB.
    pub memory_mb: u64,
    /// Wall-clock ceiling of one attempt, seconds.
    pub timeout_s: u64,
    /// Instruction (fuel) budget per attempt; 0 turns the budget off.
    pub fuel: u64,
    /// Child tasks one task may submit.
    pub max_children: u32,
    /// Largest result a plugin may return, MiB; a larger one fails the task.
    pub max_result_mb: u64,
    /// Largest payload of a child task a plugin submits, MiB (the REST API
    /// caps bodies the same way).
    pub max_payload_mb: u64,
    /// Attempts of one plugin running at once in its pool; 0 = the pool's
    /// size less one when other plugins share the pool, so one plugin never
    /// holds every worker of a shared pool.
    pub max_concurrency: u32,
    /// How deep a tree of child tasks may grow below a task submitted over
    /// REST (its children are depth 1).
    pub max_depth: u32,
    /// Tasks a whole tree of child tasks may hold below its root.
    pub max_descendants: u32,
    /// Child tasks one plugin may submit per second, across all its tasks.
    pub children_per_s: u32,
    /// Points one plugin may keep in its own vector collections.
    pub vector_points: u64,
    /// Memory one plugin's own vector collections may take, MiB (all
    /// collections together are bounded by `[vectors] max_mb`).
    pub vector_mb: u64,
    /// Tasks of one plugin that may wait parked on open circuit breakers;
    /// past it, submissions of its kinds answer 503 with `Retry-After`.
    pub max_parked: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mb: 64,
            timeout_s: 300,
            fuel: 0,
            max_children: 100,
            max_result_mb: 16,
            max_payload_mb: 10,
            max_concurrency: 0,
            max_depth: 4,
            max_descendants: 1000,
            children_per_s: 200,
            vector_points: 1_000_000,
            vector_mb: 256,
            max_parked: 10_000,
        }
    }
}

/// Sandbox engine settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Largest memory cap any manifest may ask for, MiB: the size of one
    /// slot in the pooling allocator.
    pub max_memory_mb: u64,
    /// Instances the pooling allocator keeps room for (running tasks plus
    /// `describe` calls during reloads).
    pub max_instances: u32,
    /// Period of the epoch clock that enforces deadlines and cancellation.
    pub epoch_tick_ms: u64,
    /// Quiet time after the last change in the plugins directory before it
    /// is reloaded.
    pub reload_debounce_ms: u64,
    /// Cache compiled plugins under `<data>/cache` (fast restarts).
    pub compile_cache: bool,
    /// On SIGTERM / ctrl-c, how long running attempts may finish before they
    /// are interrupted (and re-queued), seconds.
    pub shutdown_grace_s: u64,
    /// Wall time `describe()` may take when a plugin loads, milliseconds
    /// (it also runs under a fixed fuel budget).
    pub describe_timeout_ms: u64,
    /// Largest plugin file the daemon compiles, MiB.
    pub max_plugin_mb: u64,
    /// Wall time one compile may take, seconds; a file over it is refused
    /// and the others are not held up by it.
    pub compile_timeout_s: u64,
    /// Plugin files compiled (and described) at once. Default: one less
    /// than the machine's cores (at least one), so loading never takes
    /// every core from the API and the running tasks.
    pub parallel_loads: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            max_memory_mb: 1024,
            max_instances: 256,
            epoch_tick_ms: 10,
            reload_debounce_ms: 50,
            compile_cache: true,
            shutdown_grace_s: 30,
            describe_timeout_ms: 2000,
            max_plugin_mb: 64,
            compile_timeout_s: 60,
            parallel_loads: std::thread::available_parallelism()
                .map_or(1, |n| n.get().saturating_sub(1))
                .max(1),
        }
    }
}
