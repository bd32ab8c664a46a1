//! Per-peer rate limiting for inbound gossip and requests: a token bucket
//! per peer, kept in a bounded map.
//!
//! **Invariant:** pure. Time comes in as milliseconds on a monotonic clock
//! chosen by the caller, so the logic is tested without sleeping.

use std::collections::HashMap;
use std::hash::Hash;

/// How fast one peer may send: a burst allowance and a sustained rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Messages accepted back to back before the rate applies.
    pub burst: u32,
    /// Messages per second refilled after the burst is spent.
    pub per_second: u32,
}

impl RateLimit {
    /// A limit of `per_second` sustained with bursts of `burst`.
    pub const fn new(burst: u32, per_second: u32) -> Self {
        Self { burst, per_second }
    }
}

/// One peer's bucket. Tokens are counted in thousandths so that slow
/// rates refill smoothly with integer arithmetic.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    /// Current allowance, in thousandths of a message.
    milli_tokens: u64,
    /// Most thousandths the bucket holds (burst * 1000).
    capacity: u64,
    /// Thousandths refilled per millisecond elapsed (equals `per_second`).
    refill_per_ms: u64,
    /// Last time the bucket was refilled.
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket for `limit`, as of `now_ms`.
    pub fn new(limit: RateLimit, now_ms: u64) -> Self {
        let capacity = u64::from(limit.burst) * 1000;
        Self {
            milli_tokens: capacity,
            capacity,
            refill_per_ms: u64::from(limit.per_second),
            last_ms: now_ms,
        }
    }

    /// Takes one token if there is one. A clock that goes backwards (the
    /// caller's bug, or a wrapped counter) refills nothing rather than
    /// panicking.
    pub fn try_take(&mut self, now_ms: u64) -> bool {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        if elapsed > 0 {
            self.milli_tokens = self
                .milli_tokens
                .saturating_add(elapsed.saturating_mul(self.refill_per_ms))
                .min(self.capacity);
            self.last_ms = now_ms;
        }
        if self.milli_tokens >= 1000 {
            self.milli_tokens -= 1000;
            true
        } else {
            false
        }
    }

    /// Whole tokens left right now (for logs and tests).
    pub fn available(&self) -> u64 {
        self.milli_tokens / 1000
    }
}

/// A token bucket per key (peer), bounded in size: when full, the bucket
/// touched longest ago is forgotten, which at worst gives that peer a
/// fresh burst.
#[derive(Debug)]
pub struct RateLimiter<K> {
    /// The limit every key gets.
    limit: RateLimit,
    /// Buckets with the time each was last used.
    buckets: HashMap<K, (TokenBucket, u64)>,
    /// Most keys tracked at once.
    max_keys: usize,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter giving every key `limit`, tracking at most `max_keys`
    /// keys (at least 1).
    pub fn new(limit: RateLimit, max_keys: usize) -> Self {
        Self {
            limit,
            buckets: HashMap::new(),
            max_keys: max_keys.max(1),
        }
    }

    /// Whether `key` may send one more message at `now_ms`; takes a token
    /// if so.
    pub fn check(&mut self, key: &K, now_ms: u64) -> bool {
        if !self.buckets.contains_key(key) && self.buckets.len() >= self.max_keys {
            self.evict_oldest();
        }
        let limit = self.limit;
        let (bucket, last_used) = self
            .buckets
            .entry(key.clone())
            .or_insert_with(|| (TokenBucket::new(limit, now_ms), now_ms));
        *last_used = now_ms;
        bucket.try_take(now_ms)
    }

    /// Forgets `key` (e.g. when the peer disconnects).
    pub fn remove(&mut self, key: &K) {
        self.buckets.remove(key);
    }

    /// Number of keys tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    fn evict_oldest(&mut self) {
        // Linear scan: eviction only happens at the size bound, and the
        // bound is the connection limit, so this stays small.
        let oldest = self
            .buckets
            .iter()
            .min_by_key(|(_, (_, used))| *used)
            .map(|(k, _)| k.clone());
        if let Some(k) = oldest {
            self.buckets.remove(&k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refusal_then_refill() {
        let mut b = TokenBucket::new(RateLimit::new(3, 2), 1_000);
        assert!(b.try_take(1_000));
        assert!(b.try_take(1_000));
        assert!(b.try_take(1_000));
        assert!(!b.try_take(1_000), "burst of 3 is spent");
        // 2 per second: one token every 500 ms.
        assert!(!b.try_take(1_499));
        assert!(b.try_take(1_500));
        assert!(!b.try_take(1_500));
        // A long pause refills only up to the burst.
        assert_eq!(b.available(), 0);
        assert!(b.try_take(60_000));
        assert_eq!(b.available(), 2);
    }

    #[test]
    fn slow_rates_accumulate_fractions() {
        // 1 per second: 999 ms is not enough, 1000 ms is.
        let mut b = TokenBucket::new(RateLimit::new(1, 1), 0);
        assert!(b.try_take(0));
        assert!(!b.try_take(999));
        assert!(b.try_take(1_000));
    }

    #[test]
    fn clock_going_backwards_does_not_panic_or_refill() {
        let mut b = TokenBucket::new(RateLimit::new(1, 1000), 10_000);
        assert!(b.try_take(10_000));
        assert!(!b.try_take(5_000));
        assert!(!b.try_take(10_000));
        assert!(b.try_take(10_001));
    }

    #[test]
    fn zero_rate_never_refills() {
        let mut b = TokenBucket::new(RateLimit::new(2, 0), 0);
        assert!(b.try_take(0));
        assert!(b.try_take(0));
        assert!(!b.try_take(u64::MAX));
    }

    #[test]
    fn peers_have_separate_buckets() {
        let mut l = RateLimiter::new(RateLimit::new(2, 1), 16);
        assert!(l.check(&"a", 0));
        assert!(l.check(&"a", 0));
        assert!(!l.check(&"a", 0));
        assert!(l.check(&"b", 0), "b is not charged for a's messages");
        assert!(l.check(&"a", 1_000), "a refilled after a second");
    }

    #[test]
    fn limiter_is_bounded_and_evicts_least_recently_used() {
        let mut l = RateLimiter::new(RateLimit::new(1, 0), 2);
        assert!(l.check(&1, 0));
        assert!(l.check(&2, 5));
        assert!(!l.check(&1, 10), "1 spent its only token");
        // Adding 3 evicts 2 (last used at 5), not 1 (used at 10).
        assert!(l.check(&3, 20));
        assert_eq!(l.len(), 2);
        assert!(!l.check(&1, 30), "1 kept its empty bucket");
        l.remove(&1);
        assert!(l.check(&1, 40), "a removed peer starts afresh");
    }
}
