//! Typed handlers: a payload type in, a result type out, [`Error`] for
//! failures. [`handler!`](crate::handler) turns a [`Handler`] into the
//! component's exports.

use crate::http::HttpError;
use crate::{PluginInfo, Priority, Task, TaskError};
use std::time::{Duration, Instant};

/// What a plugin says about itself when it is loaded.
#[derive(Debug, Clone, Copy)]
pub struct Info {
    /// The plugin's name; a replacement version keeps it.
    pub name: &'static str,
    /// Semver, e.g. `1.2.0`.
    pub version: &'static str,
    /// The task kinds it handles (a kind belongs to one plugin).
    pub kinds: &'static [&'static str],
    /// The worker pool its tasks run in, e.g. `scraping` (the operator's
    /// manifest may override it).
    pub category: &'static str,
    /// One line for operators.
    pub description: &'static str,
}

impl From<Info> for PluginInfo {
    fn from(i: Info) -> PluginInfo {
        crate::plugin_info(i.name, i.version, i.kinds, i.category, i.description)
    }
}

/// A task handler with typed input and output.
///
/// ```ignore
/// use serde::{Deserialize, Serialize};
/// use wasmhive_sdk::{Context, Error, Handler, Info};
///
/// #[derive(Deserialize)]
/// struct Input { name: String }
///
/// #[derive(Serialize)]
/// struct Output { greeting: String }
///
/// struct Greet;
///
/// impl Handler for Greet {
///     type Input = Input;
///     type Output = Output;
///     const INFO: Info = Info {
///         name: "greet", version: "1.0.0", kinds: &["greet"],
///         category: "batch", description: "says hello",
///     };
///     fn handle(ctx: &Context, input: Input) -> Result<Output, Error> {
///         ctx.progress(50, "thinking");
///         if input.name.is_empty() {
///             return Err(Error::fatal("name is empty"));
///         }
///         Ok(Output { greeting: format!("hello, {}", input.name) })
///     }
/// }
///
/// wasmhive_sdk::handler!(Greet);
/// ```
pub trait Handler {
    /// The task's payload; a payload that does not parse fails the task as
    /// `fatal` with serde's message.
    type Input: serde::de::DeserializeOwned;
    /// The task's result, stored as JSON.
    type Output: serde::Serialize;
    /// Returned by `describe`.
    const INFO: Info;
    /// Handles one attempt.
    fn handle(ctx: &Context, input: Self::Input) -> Result<Self::Output, Error>;
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// Transient (a service is down, a rate limit): the host may retry.
    Retryable(String),
    /// The task cannot succeed: recorded, never retried.
    Fatal(String),
}

impl Error {
    pub fn retryable(message: impl Into<String>) -> Error {
        Error::Retryable(message.into())
    }

    pub fn fatal(message: impl Into<String>) -> Error {
        Error::Fatal(message.into())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Retryable(m) => write!(f, "retryable: {m}"),
            Error::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<Error> for TaskError {
    fn from(e: Error) -> TaskError {
        match e {
            Error::Retryable(m) => TaskError::Retryable(m),
            Error::Fatal(m) => TaskError::Fatal(m),
        }
    }
}

impl From<TaskError> for Error {
    fn from(e: TaskError) -> Error {
        match e {
            TaskError::Retryable(m) => Error::Retryable(m),
            TaskError::Fatal(m) => Error::Fatal(m),
        }
    }
}

/// Timeouts and connection failures are worth a retry; refusals, bad URLs
/// and oversized responses are not.
impl From<HttpError> for Error {
    fn from(e: HttpError) -> Error {
        if e.is_transient() {
            Error::Retryable(e.to_string())
        } else {
            Error::Fatal(e.to_string())
        }
    }
}

/// A JSON error is the payload's or the data's fault: fatal.
impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Fatal(format!("invalid JSON: {e}"))
    }
}

/// The attempt being handled, and the host calls that act on it.
#[derive(Debug)]
pub struct Context {
    task: Task,
    started: Instant,
}

impl Context {
    pub fn new(task: Task) -> Context {
        Context {
            task,
            started: Instant::now(),
        }
    }

    /// The task's id (stable across attempts).
    pub fn task_id(&self) -> &str {
        &self.task.id
    }

    /// The kind that selected this plugin.
    pub fn kind(&self) -> &str {
        &self.task.kind
    }

    /// 1 for the first attempt.
    pub fn attempt(&self) -> u32 {
        self.task.attempt
    }

    pub fn priority(&self) -> Priority {
        self.task.priority
    }

    /// The raw JSON payload.
    pub fn payload(&self) -> &str {
        &self.task.payload
    }

    /// Wall time this attempt has left before the host interrupts it.
    pub fn remaining(&self) -> Duration {
        self.deadline().saturating_duration_since(Instant::now())
    }

    /// When the host interrupts this attempt.
    pub fn deadline(&self) -> Instant {
        self.started + Duration::from_millis(self.task.deadline_ms)
    }

    /// Reports progress (percent is clamped to 100), shown on the task JSON.
    pub fn progress(&self, percent: u8, message: &str) {
        crate::progress(percent, message);
    }

    /// A line in the daemon's log, tagged with the plugin and task.
    pub fn log(&self, message: &str) {
        crate::log(message);
    }

    /// A value from the manifest's `[config]`.
    pub fn config(&self, key: &str) -> Option<String> {
        crate::config(key)
    }

    /// Submits a child task (needs `submit = ["kind"]` in the manifest).
    pub fn submit(
        &self,
        kind: &str,
        payload: &impl serde::Serialize,
        priority: Priority,
    ) -> Result<String, Error> {
        let payload = serde_json::to_value(payload)?;
        crate::submit(kind, &payload, priority).map_err(|m| {
            if m.starts_with("unavailable: ") {
                Error::Retryable(m)
            } else {
                Error::Fatal(m)
            }
        })
    }

    /// This task's children and their status.
    pub fn children(&self) -> Vec<crate::Child> {
        crate::children()
    }
}

/// Runs a [`Handler`] on one task: what [`handler!`](crate::handler) exports.
pub fn run<H: Handler>(task: Task) -> Result<String, TaskError> {
    let input: H::Input = serde_json::from_str(&task.payload)
        .map_err(|e| TaskError::Fatal(format!("invalid payload: {e}")))?;
    let ctx = Context::new(task);
    let output = H::handle(&ctx, input)?;
    serde_json::to_string(&output)
        .map_err(|e| TaskError::Fatal(format!("the result cannot be written as JSON: {e}")))
}

/// Exports a [`Handler`] as this component's `describe` and `handle`.
#[macro_export]
macro_rules! handler {
    ($ty:ty) => {
        struct __WasmhiveExport;

        impl $crate::Guest for __WasmhiveExport {
            fn describe() -> $crate::PluginInfo {
                <$ty as $crate::Handler>::INFO.into()
            }

            fn handle(
                task: $crate::Task,
            ) -> ::core::result::Result<::std::string::String, $crate::TaskError> {
                $crate::handler::run::<$ty>(task)
            }
        }

        $crate::export_handler!(__WasmhiveExport);
    };
}
