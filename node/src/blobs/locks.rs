//! Per-blob locks: one lock object per content id, created on first use
//! and forgotten when nobody holds it any more.
//!
//! Used twice by the store: a synchronous mutex per partial file (appends
//! and the final hash check of one blob never interleave) and an async
//! mutex per blob fetch (two fetches of the same blob in one process take
//! turns instead of racing on the partial file).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use agora_protocol::ContentId;

use crate::lock;

/// Above this many entries, dead ones are swept before a new one is added,
/// so the map stays about as large as the number of locks in use.
const SWEEP_ABOVE: usize = 64;

/// A lock object of type `T` per content id.
#[derive(Debug)]
pub(crate) struct KeyedLocks<T> {
    /// Live lock objects by id; an entry whose holders are all gone is
    /// dead and swept lazily.
    map: Mutex<HashMap<ContentId, Weak<T>>>,
}

impl<T> Default for KeyedLocks<T> {
    fn default() -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
        }
    }
}

impl<T: Default> KeyedLocks<T> {
    /// The lock object of `id`, shared with everyone else holding it now.
    pub(crate) fn get(&self, id: &ContentId) -> Arc<T> {
        let mut map = lock(&self.map);
        if let Some(live) = map.get(id).and_then(Weak::upgrade) {
            return live;
        }
        if map.len() >= SWEEP_ABOVE {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let fresh = Arc::new(T::default());
        map.insert(*id, Arc::downgrade(&fresh));
        fresh
    }

    /// Number of map entries, dead ones included (for tests).
    #[cfg(test)]
    fn entries(&self) -> usize {
        lock(&self.map).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::of(&[n])
    }

    #[test]
    fn same_id_shares_one_lock_until_released() {
        let locks: KeyedLocks<Mutex<u32>> = KeyedLocks::default();
        let a = locks.get(&id(1));
        let b = locks.get(&id(1));
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &locks.get(&id(2))));
        *a.lock().unwrap() = 7;
        drop(a);
        assert_eq!(*locks.get(&id(1)).lock().unwrap(), 7, "still shared");
        drop(b);
        assert_eq!(*locks.get(&id(1)).lock().unwrap(), 0, "fresh once unheld");
    }

    #[test]
    fn dead_entries_are_swept() {
        let locks: KeyedLocks<Mutex<()>> = KeyedLocks::default();
        for n in 0..=255u8 {
            drop(locks.get(&id(n)));
        }
        assert!(locks.entries() <= SWEEP_ABOVE + 1, "{}", locks.entries());
    }
}
