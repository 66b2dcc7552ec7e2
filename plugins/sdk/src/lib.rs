//! Guest side of the wasmhive plugin contract (`wit/plugin.wit`).
//!
//! Write a [`Handler`]: a serde payload type in, a serde result type out,
//! [`Error::retryable`] or [`Error::fatal`] when it fails, and export it with
//! [`handler!`]. The [`Context`] it gets is the running attempt and its host
//! calls (progress, log, config, child tasks); [`http`] sends requests over
//! `wasi:http` (the host checks each against the manifest's allowlist),
//! [`collection`] reads and writes vector collections, [`openai`] talks to
//! OpenAI-compatible endpoints. See `handler.rs` for a complete example and
//! `docs/writing-a-handler.md` for the whole guide.
//!
//! The raw contract is here too: [`Guest`] and [`export_handler!`], and the
//! host interfaces [`host`], [`vectors`] and [`admin`]; [`models`] asks the
//! host for sentence embeddings.

#[allow(unsafe_code, clippy::all, missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "wasmhive:plugin/handler",
        pub_export_macro: true,
        export_macro_name: "export_handler",
        default_bindings_module: "wasmhive_sdk::bindings",
        generate_all,
    });
}

pub mod handler;
pub mod http;
pub mod models;
pub mod openai;
pub mod store;

pub use handler::{Context, Error, Handler, Info};
pub use store::{Hit, Point, collection};

pub use bindings::wasmhive::plugin::types::{LogLevel, Priority};
pub use bindings::wasmhive::plugin::{admin, host, vectors};
// `models` is the typed wrapper of `bindings::wasmhive::plugin::models`.
pub use bindings::{Guest, PluginInfo, Task, TaskError};
pub use host::Child;

/// Logs a line at `info`, tagged by the host with the plugin and task.
pub fn log(message: &str) {
    host::log(LogLevel::Info, message);
}

/// Logs a line at `warn`.
pub fn warn(message: &str) {
    host::log(LogLevel::Warn, message);
}

/// Reports progress on the current task (shown on the task JSON).
pub fn progress(percent: u8, message: &str) {
    host::progress(percent, message);
}

/// A value from the `[config]` table of the plugin's manifest.
pub fn config(key: &str) -> Option<String> {
    host::config_get(key).filter(|v| !v.is_empty())
}

/// Submits a child task; returns its id or the host's reason for refusing.
pub fn submit(
    kind: &str,
    payload: &serde_json::Value,
    priority: Priority,
) -> Result<String, String> {
    host::submit(kind, &payload.to_string(), priority)
}

/// The children this task has submitted, oldest first.
pub fn children() -> Vec<Child> {
    host::children()
}

/// Whether a child has reached a final status.
pub fn is_finished(child: &Child) -> bool {
    matches!(child.status.as_str(), "succeeded" | "failed" | "cancelled")
}

/// How often [`wait_for_children`] asks the host.
const CHILDREN_POLL: std::time::Duration = std::time::Duration::from_millis(20);

/// Waits until every child this task has submitted has finished, or until
/// `deadline`. `on_change(finished, total)` is called each time the count
/// of finished children changes (to report progress). Returns the children
/// as last seen; the host keeps counting the task's own deadline meanwhile,
/// and the wait uses no CPU.
pub fn wait_for_children(
    deadline: std::time::Instant,
    mut on_change: impl FnMut(usize, usize),
) -> Vec<Child> {
    let mut reported = usize::MAX;
    loop {
        let children = children();
        let finished = children.iter().filter(|c| is_finished(c)).count();
        if finished == children.len() || std::time::Instant::now() >= deadline {
            return children;
        }
        if finished != reported {
            reported = finished;
            on_change(finished, children.len());
        }
        std::thread::sleep(CHILDREN_POLL);
    }
}

/// The vector collection the bundled handlers keep a brand's pages in:
/// `brand-` and the brand lower-cased, runs of other characters as `-`
/// (`"Acme Corp"` → `brand-acme-corp`).
pub fn brand_collection(brand: &str) -> String {
    let mut slug = String::new();
    for c in brand.trim().chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.ends_with('-') && !slug.is_empty() {
            slug.push('-');
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug: String = slug.chars().take(57).collect();
    format!("brand-{}", if slug.is_empty() { "default" } else { &slug })
}

/// Exports a type implementing [`Guest`] as this component's handler.
#[macro_export]
macro_rules! export_handler {
    ($ty:ident) => {
        $crate::bindings::export_handler!($ty);
    };
}

/// Builds the [`PluginInfo`] a plugin returns from `describe`.
pub fn plugin_info(
    name: &str,
    version: &str,
    kinds: &[&str],
    category: &str,
    description: &str,
) -> PluginInfo {
    PluginInfo {
        name: name.to_string(),
        version: version.to_string(),
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        category: category.to_string(),
        description: description.to_string(),
    }
}

/// Parses the task's JSON payload, or fails the task as `fatal` (a payload
/// that is not JSON will not become JSON on a retry).
pub fn payload(task: &Task) -> Result<serde_json::Value, TaskError> {
    serde_json::from_str(&task.payload)
        .map_err(|e| TaskError::Fatal(format!("payload is not valid JSON: {e}")))
}
