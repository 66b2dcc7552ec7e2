//! wasmhive: a WebAssembly plugin host for task handlers.
//!
//! Tasks arrive over REST ([`api`]), are recorded ([`store`]), scheduled
//! ([`scheduler`]) and run in a fresh sandboxed instance of the plugin that
//! handles their kind ([`runtime`]), which reaches the outside world only
//! through [`capabilities`]. Plugins are WebAssembly components in a
//! watched directory, hot-reloaded without a restart. [`testkit`] runs a
//! plugin against test cases in the same sandbox (`wasmhive test`). See
//! ARCHITECTURE.md.

pub mod api;
pub mod bindings;
pub mod breaker;
pub mod capabilities;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod metrics;
pub mod runtime;
pub mod scaffold;
pub mod scheduler;
pub mod store;
pub mod sync;
pub mod task;
pub mod telemetry;
pub mod testkit;

pub use config::Config;
pub use daemon::{Daemon, DaemonError};

/// mimalloc for the daemon and everything linking it (tests, benches):
/// a task's records are allocated on a runtime thread and freed on the
/// store's writer thread, and glibc's malloc serialises such frees on its
/// arena locks (measured: the first cause of blocking under durable load).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
