//! Capped in-memory stdout/stderr for Wasm jobs.
//!
//! wasmtime-wasi's own `MemoryOutputPipe` closes the stream when full, and a
//! program that ignores write errors then spins until its timeout. This
//! pipe instead traps the guest on the first write that would cross the
//! cap and remembers that it did, so the executor reports
//! `OutputTooLarge` at once and never holds more than `cap` bytes.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// Largest write permit handed to the guest at once. The bytes are already
/// in guest memory (which is limited), so this only sets the chunk size.
const WRITE_PERMIT: usize = 64 * 1024;

/// The error a capped pipe traps the guest with.
#[derive(Debug, thiserror::Error)]
#[error("output cap of {cap} bytes exceeded")]
pub struct CapExceeded {
    /// The cap, in bytes.
    pub cap: usize,
}

/// Shared state behind every handle to one pipe.
#[derive(Debug)]
struct State {
    /// Bytes written so far; never longer than `cap`.
    buf: Mutex<Vec<u8>>,
    /// Most bytes the pipe will hold.
    cap: usize,
    /// Set when a write was refused for crossing the cap.
    overflowed: AtomicBool,
}

/// A capped, in-memory output stream. Clones share one buffer, as WASI
/// requires of all handles to the same stdio stream.
#[derive(Debug, Clone)]
pub struct CappedPipe {
    /// The shared buffer and flags.
    state: Arc<State>,
}

impl CappedPipe {
    /// An empty pipe that holds at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Self {
            state: Arc::new(State {
                buf: Mutex::new(Vec::new()),
                cap,
                overflowed: AtomicBool::new(false),
            }),
        }
    }

    /// Whether the guest tried to write past the cap.
    pub fn overflowed(&self) -> bool {
        self.state.overflowed.load(Ordering::SeqCst)
    }

    /// Takes the bytes written so far, leaving the pipe empty.
    pub fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.lock())
    }

    /// A poisoned lock only means another handle panicked mid-append; the
    /// buffer is still a valid byte vector, so keep using it.
    fn lock(&self) -> MutexGuard<'_, Vec<u8>> {
        crate::lock(&self.state.buf)
    }

    /// Appends `data`, or refuses and records the overflow if the total
    /// would cross the cap.
    fn append(&self, data: &[u8]) -> Result<(), CapExceeded> {
        let mut buf = self.lock();
        let fits = buf
            .len()
            .checked_add(data.len())
            .is_some_and(|total| total <= self.state.cap);
        if !fits || self.overflowed() {
            self.state.overflowed.store(true, Ordering::SeqCst);
            return Err(CapExceeded {
                cap: self.state.cap,
            });
        }
        buf.extend_from_slice(data);
        Ok(())
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.append(&bytes)
            .map_err(|e| StreamError::Trap(anyhow::Error::new(e)))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        // Always grant a permit, even when full: the write that crosses the
        // cap must reach `append` so the guest traps instead of seeing a
        // closed stream it might ignore.
        Ok(WRITE_PERMIT)
    }
}

impl AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.append(data)
                .map(|()| data.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_up_to_the_cap_then_refuses() {
        let mut p = CappedPipe::new(5);
        let other = p.clone();
        assert!(p.write(Bytes::from_static(b"abc")).is_ok());
        assert!(p.write(Bytes::from_static(b"de")).is_ok());
        assert!(!p.overflowed());
        assert!(matches!(
            p.write(Bytes::from_static(b"f")),
            Err(StreamError::Trap(_))
        ));
        assert!(other.overflowed(), "clones share the overflow flag");
        assert_eq!(other.take(), b"abcde");
    }

    #[test]
    fn exactly_the_cap_is_not_an_overflow() {
        let p = CappedPipe::new(3);
        assert!(p.append(b"xyz").is_ok());
        assert!(!p.overflowed());
        assert!(p.append(b"").is_ok());
        assert!(p.append(b"!").is_err());
    }

    #[test]
    fn once_overflowed_nothing_more_is_accepted() {
        let p = CappedPipe::new(4);
        assert!(p.append(b"12345").is_err());
        assert!(p.append(b"1").is_err());
        assert!(p.take().is_empty());
    }
}
