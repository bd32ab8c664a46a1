//! Per-run resource limits for Wasm jobs and the reasons a run was stopped.
//!
//! wasmtime reports a refused `memory.grow` or a callback abort as a generic
//! error; the executor must name the broken limit. So every stop is also
//! recorded here, in plain data the executor reads after the call returns.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use wasmtime::ResourceLimiter;

use crate::executor::OutputStream;

/// Most table elements one table may hold (8 bytes each on the host).
pub const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Instances per store: the job's module only (WASI is host functions).
pub const MAX_INSTANCES: usize = 1;
/// Tables per store.
pub const MAX_TABLES: usize = 4;
/// Memories per store: one, so the memory limit is the job's total.
pub const MAX_MEMORIES: usize = 1;

/// Why the executor itself stopped a run (as opposed to the program
/// exiting or trapping on its own).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stop {
    /// The wall-clock limit passed.
    #[error("wall-clock limit reached")]
    Timeout,
    /// The caller stopped waiting (job cancelled or daemon shutting down).
    #[error("run cancelled")]
    Cancelled,
    /// Memory or a table tried to grow past the limit.
    #[error("memory limit reached")]
    OutOfMemory,
    /// An output stream or file crossed the output cap.
    #[error("output cap reached on {0}")]
    OutputTooLarge(OutputStream),
}

/// The first stop reason recorded for a run. Later ones are ignored: the
/// first limit broken is the one the user needs to hear about.
#[derive(Debug, Default)]
pub struct StopFlag {
    /// The reason, once set.
    reason: Mutex<Option<Stop>>,
    /// Fast check for the epoch callback, which runs every tick.
    set: AtomicBool,
}

impl StopFlag {
    /// Records `stop` unless a reason is already recorded.
    pub fn record(&self, stop: Stop) {
        let mut r = crate::lock(&self.reason);
        if r.is_none() {
            *r = Some(stop);
            self.set.store(true, Ordering::SeqCst);
        }
    }

    /// The recorded reason, if any.
    pub fn get(&self) -> Option<Stop> {
        if !self.set.load(Ordering::SeqCst) {
            return None;
        }
        crate::lock(&self.reason).clone()
    }
}

/// The store's resource limiter: refuses growth past the job's memory
/// limit by trapping (not by failing `memory.grow`, which a program could
/// ignore or retry forever) and records that it did.
#[derive(Debug)]
pub struct Limiter {
    /// Most bytes of linear memory.
    memory_bytes: usize,
    /// Set when a limit was hit.
    oom: bool,
}

impl Limiter {
    /// A limiter allowing `memory_bytes` of linear memory.
    pub fn new(memory_bytes: u64) -> Self {
        Self {
            memory_bytes: usize::try_from(memory_bytes).unwrap_or(usize::MAX),
            oom: false,
        }
    }

    /// Whether growth was refused (or failed on the host) during the run.
    pub fn hit(&self) -> bool {
        self.oom
    }

    fn refuse(&mut self, what: &str, desired: usize, limit: usize) -> anyhow::Error {
        self.oom = true;
        anyhow::Error::new(Stop::OutOfMemory)
            .context(format!("{what} wanted {desired}, limit {limit}"))
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> anyhow::Result<bool> {
        if desired > self.memory_bytes {
            return Err(self.refuse("memory", desired, self.memory_bytes));
        }
        // Growth past the module's own declared maximum is not our limit:
        // wasmtime fails that `memory.grow` with -1, as the spec says.
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: anyhow::Error) -> anyhow::Result<()> {
        // Allowed by us but refused by the host (mmap failed): still memory
        // exhaustion from the job's point of view.
        self.oom = true;
        Err(error.context(Stop::OutOfMemory))
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> anyhow::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            return Err(self.refuse("table elements", desired, MAX_TABLE_ELEMENTS));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn growth_within_the_limit_is_allowed() {
        let mut l = Limiter::new(1 << 20);
        assert!(matches!(l.memory_growing(0, 1 << 20, None), Ok(true)));
        assert!(!l.hit());
    }

    #[test]
    fn growth_past_the_limit_traps_and_is_recorded() {
        let mut l = Limiter::new(1 << 20);
        let err = l.memory_growing(1 << 20, (1 << 20) + 65536, None);
        assert!(err.is_err());
        assert!(l.hit());
        let mut l = Limiter::new(1 << 30);
        assert!(l.table_growing(0, MAX_TABLE_ELEMENTS + 1, None).is_err());
        assert!(l.hit());
    }

    #[test]
    fn first_stop_reason_wins() {
        let f = StopFlag::default();
        assert_eq!(f.get(), None);
        f.record(Stop::Timeout);
        f.record(Stop::OutOfMemory);
        assert_eq!(f.get(), Some(Stop::Timeout));
    }
}
