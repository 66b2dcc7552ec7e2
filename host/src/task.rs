//! The vocabulary every layer shares: a task's priority, status, and how an
//! attempt failed.
//!
//! These are the words of the REST contract (`DESIGN.md`): they serialise to
//! the exact strings clients see (`"NORMAL"`, `"retry_wait"`, `"out_of_memory"`).
//! Nothing here knows about HTTP, storage or WebAssembly, so every module may
//! use it.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How urgent a task is. Ordered from most to least urgent.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Priority {
    Critical,
    High,
    #[default]
    Normal,
    Low,
    Bulk,
}

impl Priority {
    /// All priorities, most urgent first.
    pub const ALL: [Priority; 5] = [
        Priority::Critical,
        Priority::High,
        Priority::Normal,
        Priority::Low,
        Priority::Bulk,
    ];

    /// The name clients use, e.g. `"CRITICAL"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Critical => "CRITICAL",
            Priority::High => "HIGH",
            Priority::Normal => "NORMAL",
            Priority::Low => "LOW",
            Priority::Bulk => "BULK",
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Priority {
    type Err = String;

    /// Accepts any letter case (`normal`, `NORMAL`), as the original API did.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown priority `{s}`; expected one of CRITICAL, HIGH, NORMAL, LOW, BULK")
            })
    }
}

/// Where a task is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskStatus {
    Queued,
    Running,
    RetryWait,
    Succeeded,
    Failed,
    Cancelled,
}

impl TaskStatus {
    /// A finished task never changes again.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            TaskStatus::Succeeded | TaskStatus::Failed | TaskStatus::Cancelled
        )
    }

    /// The name clients use, e.g. `"retry_wait"`.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Queued => "queued",
            TaskStatus::Running => "running",
            TaskStatus::RetryWait => "retry_wait",
            TaskStatus::Succeeded => "succeeded",
            TaskStatus::Failed => "failed",
            TaskStatus::Cancelled => "cancelled",
        }
    }
}

impl FromStr for TaskStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            TaskStatus::Queued,
            TaskStatus::Running,
            TaskStatus::RetryWait,
            TaskStatus::Succeeded,
            TaskStatus::Failed,
            TaskStatus::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
        .ok_or_else(|| format!("unknown status `{s}`"))
    }
}

/// Why an attempt failed, named by what the layers above do next: the
/// scheduler retries `retryable` (and, by policy, `timeout`), never `fatal`;
/// breakers count all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The attempt ran past its deadline and was interrupted.
    Timeout,
    /// The guest trapped (panic, stack overflow, unreachable, bad memory access).
    Trap,
    /// The guest asked for more memory than its cap allows.
    OutOfMemory,
    /// The guest used up its fuel (instruction) budget.
    Fuel,
    /// The plugin said the task cannot succeed, or its output was unusable.
    Fatal,
    /// The plugin said the failure is transient.
    Retryable,
    /// A user cancelled the task.
    Cancelled,
    /// No loaded plugin handles the task's kind.
    NoHandler,
    /// A circuit breaker the task needs is open.
    BreakerOpen,
    /// The daemon stopped (crash, kill) while the attempt ran; the task was
    /// re-queued when it came back.
    Interrupted,
}

impl FailureKind {
    /// The name clients see in `error.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Trap => "trap",
            FailureKind::OutOfMemory => "out_of_memory",
            FailureKind::Fuel => "fuel",
            FailureKind::Fatal => "fatal",
            FailureKind::Retryable => "retryable",
            FailureKind::Cancelled => "cancelled",
            FailureKind::NoHandler => "no_handler",
            FailureKind::BreakerOpen => "breaker_open",
            FailureKind::Interrupted => "interrupted",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one attempt failed: the kind the layers above act on, and a sentence
/// for the user.
#[derive(
    Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error, utoipa::ToSchema,
)]
#[error("{kind}: {message}")]
pub struct TaskFailure {
    pub kind: FailureKind,
    pub message: String,
}

/// Longest failure message kept, bytes: a plugin's error text is stored,
/// served and streamed to dashboards, so it is bounded like a log line.
pub const MAX_ERROR_MESSAGE: usize = 4096;

impl TaskFailure {
    /// A failure; a message over [`MAX_ERROR_MESSAGE`] is cut, saying so.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        let mut message = message.into();
        if message.len() > MAX_ERROR_MESSAGE {
            let total = message.len();
            truncate_on_char(&mut message, MAX_ERROR_MESSAGE);
            message.push_str(&format!(" … (cut: the message was {total} bytes)"));
        }
        TaskFailure { kind, message }
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub fn truncate_on_char(s: &mut String, max: usize) {
    if s.len() > max {
        let cut = (0..=max)
            .rev()
            .find(|&i| s.is_char_boundary(i))
            .unwrap_or(0);
        s.truncate(cut);
    }
}

/// How deeply a JSON document a task carries (payload, child payload,
/// result) may nest. The stored record wraps it a few levels deeper, and
/// reading it back must stay far inside serde_json's limit of 128: what was
/// acknowledged always reads back.
pub const MAX_JSON_DEPTH: usize = 64;

/// How deeply `value` nests (a scalar is 0, `[]` and `{}` are 1), counted
/// without recursion.
pub fn json_depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 0usize)];
    while let Some((v, depth)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &serde_json::Value>> = match v {
            serde_json::Value::Array(a) => Box::new(a.iter()),
            serde_json::Value::Object(o) => Box::new(o.values()),
            _ => continue,
        };
        deepest = deepest.max(depth + 1);
        stack.extend(children.map(|c| (c, depth + 1)));
    }
    deepest
}

/// Refuses a document nested deeper than [`MAX_JSON_DEPTH`]; `what` names
/// it in the message ("the payload").
pub fn check_json_depth(value: &serde_json::Value, what: &str) -> Result<(), String> {
    let depth = json_depth(value);
    if depth > MAX_JSON_DEPTH {
        return Err(format!(
            "{what} nests {depth} levels deep; at most {MAX_JSON_DEPTH}"
        ));
    }
    Ok(())
}

/// Text a plugin hands the host, made safe for one log line: control
/// characters (newlines, carriage returns, escape sequences) are escaped,
/// so a plugin cannot forge a line or recolour a terminal.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return text.into();
    }
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect::<String>()
        .into()
}

/// A point in time as clients see it: RFC 3339, UTC, milliseconds.
pub fn rfc3339(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {

    #[test]
    fn json_depth_counts_nesting_without_recursion() {
        assert_eq!(json_depth(&serde_json::json!(1)), 0);
        assert_eq!(json_depth(&serde_json::json!([])), 1);
        assert_eq!(
            json_depth(&serde_json::json!({"a": [1, {"b": []}], "c": 2})),
            4
        );
        let deep = (0..1000).fold(serde_json::json!(0), |v, _| serde_json::json!([v]));
        assert_eq!(json_depth(&deep), 1000);
        assert!(check_json_depth(&deep, "the payload").is_err_and(|m| m.contains("at most 64")));
        let limit = (0..MAX_JSON_DEPTH).fold(serde_json::json!(0), |v, _| serde_json::json!([v]));
        assert_eq!(check_json_depth(&limit, "the payload"), Ok(()));
    }

    use super::*;

    #[test]
    fn priority_parses_any_case_and_orders_most_urgent_first() {
        assert_eq!("normal".parse::<Priority>(), Ok(Priority::Normal));
        assert_eq!("BULK".parse::<Priority>(), Ok(Priority::Bulk));
        assert!("urgent".parse::<Priority>().is_err());
        assert!(Priority::Critical < Priority::Bulk);
    }

    #[test]
    fn wire_names_match_the_rest_contract() {
        let json = serde_json::to_string(&TaskStatus::RetryWait).unwrap_or_default();
        assert_eq!(json, "\"retry_wait\"");
        let json = serde_json::to_string(&FailureKind::OutOfMemory).unwrap_or_default();
        assert_eq!(json, "\"out_of_memory\"");
        assert_eq!(
            serde_json::to_string(&Priority::High).unwrap_or_default(),
            "\"HIGH\""
        );
        assert_eq!(
            "retry_wait".parse::<TaskStatus>(),
            Ok(TaskStatus::RetryWait)
        );
    }
}

/// A Prometheus label value, escaped as the text format requires (`\`,
/// `"` and newlines), so no value can end its label or start a line.
pub fn label_value(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}

#[cfg(test)]
mod label_tests {
    #[test]
    fn plugin_text_stays_on_one_line_and_within_bounds() {
        assert_eq!(
            super::one_line("a\nFORGED\r\x1b[31m"),
            "a\\nFORGED\\r\\u{1b}[31m"
        );
        let f = super::TaskFailure::new(super::FailureKind::Fatal, "e".repeat(100_000));
        assert!(
            f.message.len() < super::MAX_ERROR_MESSAGE + 64,
            "{}",
            f.message.len()
        );
        assert!(f.message.ends_with("100000 bytes)"));
    }

    #[test]
    fn label_values_cannot_break_out_of_their_quotes() {
        assert_eq!(super::label_value("echo"), "echo");
        assert_eq!(
            super::label_value("a\"} 1\nfake{x=\"y"),
            "a\\\"} 1\\nfake{x=\\\"y"
        );
    }
}
