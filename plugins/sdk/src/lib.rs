//! Guest side of the wasmhive plugin contract (`wit/plugin.wit`).
//!
//! A handler implements [`Guest`] (`describe` and `handle`) and exports it
//! with [`export_handler!`]:
//!
//! ```ignore
//! use wasmhive_sdk::{Guest, PluginInfo, Task, TaskError};
//!
//! struct Echo;
//!
//! impl Guest for Echo {
//!     fn describe() -> PluginInfo { /* name, version, kinds, category */ }
//!     fn handle(task: Task) -> Result<String, TaskError> { Ok(task.payload) }
//! }
//!
//! wasmhive_sdk::export_handler!(Echo);
//! ```
//!
//! The host interfaces are re-exported as [`host`] (log, progress,
//! config, child tasks) and [`vectors`].

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

pub use bindings::wasmhive::plugin::types::{LogLevel, Priority};
pub use bindings::wasmhive::plugin::{host, vectors};
pub use bindings::{Guest, PluginInfo, Task, TaskError};

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
