//! The deterministic environment a Wasm job sees: clocks that start at a
//! fixed instant and advance by a fixed step per read, and random streams
//! seeded from the job id. Honest executors on different machines must hand
//! a program the same values, or their result hashes would never agree.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use agora_protocol::ContentId;
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sha2::{Digest, Sha256};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock};

/// Where the wall clock starts: 2024-01-01T00:00:00Z, in ns since the Unix
/// epoch. Any fixed value works; a plausible date keeps programs that
/// sanity-check the year happy.
pub const WALL_CLOCK_START_NS: u64 = 1_704_067_200 * 1_000_000_000;

/// Where the monotonic clock starts (1 s), in ns. Not zero, because some
/// programs treat a zero timestamp as "unset".
pub const MONOTONIC_START_NS: u64 = 1_000_000_000;

/// How far either clock moves per read: 1 ms. Programs that loop until
/// some time has passed still make progress, and each read is distinct.
pub const CLOCK_STEP_NS: u64 = 1_000_000;

/// A clock that returns `start + n * step` on its n-th read (n from 0).
/// Time is a function of how many times the program looked, never of the
/// machine it runs on.
#[derive(Debug)]
pub struct StepClock {
    /// First value returned, in ns.
    start_ns: u64,
    /// Advance per read, in ns.
    step_ns: u64,
    /// Reads so far. Atomic because the WASI traits read through `&self`.
    reads: AtomicU64,
}

impl StepClock {
    /// A clock starting at `start_ns` and moving `step_ns` per read.
    pub fn new(start_ns: u64, step_ns: u64) -> Self {
        Self {
            start_ns,
            step_ns,
            reads: AtomicU64::new(0),
        }
    }

    /// The wall clock every job sees.
    pub fn wall() -> Self {
        Self::new(WALL_CLOCK_START_NS, CLOCK_STEP_NS)
    }

    /// The monotonic clock every job sees.
    pub fn monotonic() -> Self {
        Self::new(MONOTONIC_START_NS, CLOCK_STEP_NS)
    }

    /// The next reading, in ns. Saturates instead of wrapping so a program
    /// that reads the clock billions of times cannot make time go backwards.
    pub fn tick_ns(&self) -> u64 {
        let n = self.reads.fetch_add(1, Ordering::Relaxed);
        self.start_ns.saturating_add(n.saturating_mul(self.step_ns))
    }
}

impl HostWallClock for StepClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(self.step_ns)
    }

    fn now(&self) -> Duration {
        Duration::from_nanos(self.tick_ns())
    }
}

impl HostMonotonicClock for StepClock {
    fn resolution(&self) -> u64 {
        self.step_ns
    }

    fn now(&self) -> u64 {
        self.tick_ns()
    }
}

/// A ChaCha20 stream seeded from the job id and a purpose label, so the
/// secure and insecure WASI random sources are distinct but both fixed by
/// the job.
pub fn job_rng(job_id: &ContentId, purpose: &str) -> ChaCha20Rng {
    ChaCha20Rng::from_seed(derive_seed(job_id, purpose))
}

/// The 128-bit seed WASI hands out as `insecure-random-seed` (hash-map
/// keys in guest runtimes), fixed by the job.
pub fn job_seed_u128(job_id: &ContentId) -> u128 {
    let seed = derive_seed(job_id, "insecure-seed");
    let mut half = [0u8; 16];
    half.copy_from_slice(&seed[..16]);
    u128::from_le_bytes(half)
}

/// sha256 over a versioned domain, the purpose and the job id. The version
/// is part of the protocol: changing it changes every job's random bytes.
fn derive_seed(job_id: &ContentId, purpose: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"agora/wasm-random/v1\0");
    h.update(purpose.as_bytes());
    h.update([0u8]);
    h.update(job_id.as_bytes());
    h.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::RngCore;

    #[test]
    fn clock_steps_from_its_start() {
        let c = StepClock::new(10, 3);
        assert_eq!(c.tick_ns(), 10);
        assert_eq!(c.tick_ns(), 13);
        assert_eq!(HostMonotonicClock::now(&c), 16);
        assert_eq!(HostWallClock::now(&c), Duration::from_nanos(19));
    }

    #[test]
    fn clock_saturates_instead_of_wrapping() {
        let c = StepClock::new(u64::MAX - 1, u64::MAX);
        assert_eq!(c.tick_ns(), u64::MAX - 1);
        assert_eq!(c.tick_ns(), u64::MAX);
        assert_eq!(c.tick_ns(), u64::MAX);
    }

    #[test]
    fn rng_is_fixed_by_job_and_purpose() {
        let a = ContentId::of(b"job a");
        let b = ContentId::of(b"job b");
        let draw = |id: &ContentId, p: &str| {
            let mut buf = [0u8; 32];
            job_rng(id, p).fill_bytes(&mut buf);
            buf
        };
        assert_eq!(draw(&a, "secure"), draw(&a, "secure"));
        assert_ne!(draw(&a, "secure"), draw(&b, "secure"));
        assert_ne!(draw(&a, "secure"), draw(&a, "insecure"));
        assert_ne!(job_seed_u128(&a), job_seed_u128(&b));
    }
}
