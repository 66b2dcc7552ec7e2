//! A guest's stdout and stderr, turned into log lines tagged with the plugin
//! and task (the guest never sees the daemon's own stdio).
//!
//! [`GuestOutput`] implements wasmtime-wasi's `StdoutStream`. Writes never
//! fail (a guest's `println!` must not panic because the host is busy); lines
//! are cut at [`MAX_LINE`] bytes and an attempt may log at most
//! [`MAX_BYTES`], after which further output is dropped and counted. The last
//! [`TAIL`] bytes of stderr are kept so a panic message can explain a trap.

use crate::sync::lock;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

/// Longest line logged as one event.
pub const MAX_LINE: usize = 4096;
/// Most output logged per attempt and stream.
pub const MAX_BYTES: usize = 64 * 1024;
/// How much of stderr is kept to explain a trap.
pub const TAIL: usize = 2048;

/// Which of the guest's streams this is.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Default)]
struct Lines {
    partial: Vec<u8>,
    logged: usize,
    dropped: usize,
    tail: String,
}

/// One guest stream of one attempt.
#[derive(Debug, Clone)]
pub struct GuestOutput {
    stream: Stream,
    plugin: Arc<str>,
    task_id: Arc<str>,
    lines: Arc<Mutex<Lines>>,
}

impl GuestOutput {
    pub fn new(stream: Stream, plugin: Arc<str>, task_id: Arc<str>) -> Self {
        GuestOutput {
            stream,
            plugin,
            task_id,
            lines: Arc::default(),
        }
    }

    fn write(&self, buf: &[u8]) {
        let mut lines = lock(&self.lines);
        for &byte in buf {
            if byte == b'\n' || lines.partial.len() >= MAX_LINE {
                let line = std::mem::take(&mut lines.partial);
                self.emit(&mut lines, &line);
                if byte == b'\n' {
                    continue;
                }
            }
            lines.partial.push(byte);
        }
    }

    fn emit(&self, lines: &mut Lines, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        if matches!(self.stream, Stream::Stderr) {
            lines.tail.push_str(&text);
            lines.tail.push('\n');
            if lines.tail.len() > TAIL {
                let cut = lines.tail.len() - TAIL;
                let cut = (cut..lines.tail.len())
                    .find(|&i| lines.tail.is_char_boundary(i))
                    .unwrap_or(lines.tail.len());
                lines.tail.drain(..cut);
            }
        }
        if lines.logged + line.len() > MAX_BYTES {
            lines.dropped += line.len();
            return;
        }
        lines.logged += line.len();
        let stream = match self.stream {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        };
        tracing::info!(
            target: "wasmhive::guest",
            plugin = %self.plugin,
            task.id = %self.task_id,
            stream,
            "{}",
            crate::task::one_line(&text)
        );
    }

    /// Logs any unterminated last line and reports dropped output. Returns
    /// the kept tail of stderr.
    pub fn finish(&self) -> String {
        let mut lines = lock(&self.lines);
        if !lines.partial.is_empty() {
            let line = std::mem::take(&mut lines.partial);
            self.emit(&mut lines, &line);
        }
        if lines.dropped > 0 {
            tracing::warn!(
                plugin = %self.plugin,
                task.id = %self.task_id,
                dropped_bytes = lines.dropped,
                "guest wrote more than {MAX_BYTES} bytes of output; the rest was dropped"
            );
            lines.dropped = 0;
        }
        lines.tail.clone()
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.write(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stderr() -> GuestOutput {
        GuestOutput::new(Stream::Stderr, "p".into(), "t".into())
    }

    #[test]
    fn keeps_the_tail_of_stderr_across_partial_writes() {
        let out = stderr();
        out.write(b"thread panicked at src/lib.rs:3:5:\nbo");
        out.write(b"om");
        assert_eq!(out.finish(), "thread panicked at src/lib.rs:3:5:\nboom\n");
    }

    #[test]
    fn the_tail_is_bounded_and_long_lines_are_cut() {
        let out = stderr();
        out.write(&vec![b'x'; 3 * MAX_LINE]);
        out.write(b"\nlast\n");
        let tail = out.finish();
        assert!(tail.len() <= TAIL, "{}", tail.len());
        assert!(tail.ends_with("last\n"));
    }
}
