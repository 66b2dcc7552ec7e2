//! The one place where the ways a guest can fail become [`TaskFailure`]s.
//!
//! A wasmtime call fails with an opaque `wasmtime::Error`. What it *means*
//! depends on what the store saw while the guest ran: the deadline callback
//! records an [`Interruption`] before it interrupts, and the memory limiter
//! records a refused growth. [`classify`] reads those signals first (they are
//! exact), then the trap code, so the scheduler and breakers act on one kind
//! per failure.

use crate::task::{FailureKind, TaskFailure};
use wasmtime::Trap;

/// Why the host interrupted a running guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interruption {
    /// The attempt's deadline passed.
    Timeout,
    /// The task was cancelled.
    Cancelled,
}

/// What the store observed during the call, read after it returns.
#[derive(Debug, Default, Clone)]
pub struct Signals {
    pub interruption: Option<Interruption>,
    /// The limiter refused a memory growth past the plugin's cap.
    pub memory_refused: Option<MemoryRefusal>,
    /// The last lines the guest wrote to stderr (a Rust panic message lands here).
    pub stderr_tail: String,
}

/// A refused memory growth: what was asked for against the cap.
#[derive(Debug, Clone, Copy)]
pub struct MemoryRefusal {
    pub desired_bytes: usize,
    pub cap_bytes: usize,
}

/// Turns a failed guest call into the failure the layers above act on.
pub fn classify(error: &wasmtime::Error, signals: &Signals, budget_ms: u64) -> TaskFailure {
    match signals.interruption {
        Some(Interruption::Timeout) => return timeout(budget_ms),
        Some(Interruption::Cancelled) => {
            return TaskFailure::new(FailureKind::Cancelled, "cancelled while running");
        }
        None => {}
    }
    if let Some(refusal) = signals.memory_refused {
        return TaskFailure::new(
            FailureKind::OutOfMemory,
            format!(
                "plugin asked for {} of linear memory; its cap is {} (raise [limits] memory_mb in its manifest)",
                mib(refusal.desired_bytes),
                mib(refusal.cap_bytes)
            ),
        );
    }
    let trap = error
        .chain()
        .find_map(|e| e.downcast_ref::<Trap>())
        .copied();
    match trap {
        Some(Trap::OutOfFuel) => TaskFailure::new(
            FailureKind::Fuel,
            "plugin used up its fuel budget ([limits] fuel in its manifest)",
        ),
        Some(Trap::Interrupt) => timeout(budget_ms),
        Some(Trap::StackOverflow) => {
            TaskFailure::new(FailureKind::Trap, "stack overflow (call stack exhausted)")
        }
        Some(trap) => TaskFailure::new(FailureKind::Trap, trap_message(trap, signals)),
        None => TaskFailure::new(FailureKind::Trap, chain_message(error)),
    }
}

/// The failure for an attempt that ran out of time, with its budget.
pub fn timeout(budget_ms: u64) -> TaskFailure {
    TaskFailure::new(
        FailureKind::Timeout,
        format!("interrupted after its {budget_ms} ms deadline"),
    )
}

fn trap_message(trap: Trap, signals: &Signals) -> String {
    // A Rust guest that panics prints the message to stderr, then executes
    // `unreachable`: the message is the useful part.
    let panic_line = signals
        .stderr_tail
        .lines()
        .rev()
        .find(|l| l.contains("panicked at"));
    match panic_line {
        Some(line) => {
            let detail = signals
                .stderr_tail
                .lines()
                .skip_while(|l| *l != line)
                .nth(1)
                .unwrap_or_default();
            format!("guest panicked: {} {}", line.trim(), detail.trim())
                .trim_end()
                .to_string()
        }
        None => format!("guest trapped: {trap}"),
    }
}

/// The error and its causes on one line, outermost first.
pub fn chain_message(error: &wasmtime::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if parts.last().is_none_or(|last| !last.contains(&text)) {
            parts.push(text);
        }
    }
    parts.join(": ")
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_signals_win_over_the_trap_code() {
        let err = wasmtime::Error::from(Trap::Interrupt);
        let signals = Signals {
            interruption: Some(Interruption::Cancelled),
            ..Signals::default()
        };
        assert_eq!(classify(&err, &signals, 10).kind, FailureKind::Cancelled);

        let signals = Signals {
            memory_refused: Some(MemoryRefusal {
                desired_bytes: 65 << 20,
                cap_bytes: 64 << 20,
            }),
            ..Signals::default()
        };
        let failure = classify(
            &wasmtime::Error::from(Trap::UnreachableCodeReached),
            &signals,
            10,
        );
        assert_eq!(failure.kind, FailureKind::OutOfMemory);
        assert!(failure.message.contains("64.0 MiB"), "{}", failure.message);
    }

    #[test]
    fn trap_codes_map_to_kinds() {
        let none = Signals::default();
        let kind = |t: Trap| classify(&wasmtime::Error::from(t), &none, 1500).kind;
        assert_eq!(kind(Trap::OutOfFuel), FailureKind::Fuel);
        assert_eq!(kind(Trap::Interrupt), FailureKind::Timeout);
        assert_eq!(kind(Trap::StackOverflow), FailureKind::Trap);
        assert_eq!(kind(Trap::MemoryOutOfBounds), FailureKind::Trap);
        let msg = classify(&wasmtime::Error::from(Trap::Interrupt), &none, 1500).message;
        assert!(msg.contains("1500 ms"), "{msg}");
    }

    #[test]
    fn a_panic_message_on_stderr_becomes_the_trap_message() {
        let signals = Signals {
            stderr_tail: "\nthread '<unnamed>' panicked at src/lib.rs:14:9:\nboom 42\n".into(),
            ..Signals::default()
        };
        let failure = classify(
            &wasmtime::Error::from(Trap::UnreachableCodeReached),
            &signals,
            10,
        );
        assert_eq!(failure.kind, FailureKind::Trap);
        assert!(
            failure.message.contains("panicked at src/lib.rs:14:9"),
            "{}",
            failure.message
        );
        assert!(failure.message.ends_with("boom 42"), "{}", failure.message);
    }
}
