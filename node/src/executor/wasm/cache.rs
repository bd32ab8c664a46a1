//! A small least-recently-used map for compiled modules, keyed by the
//! module's content id. Pure data structure: the executor decides what to
//! put in it and guards it with a lock.

use std::collections::HashMap;

use agora_protocol::ContentId;

/// At most `capacity` entries; inserting into a full map evicts the entry
/// used longest ago. Lookups are O(1), eviction O(capacity), which is fine
/// for the tens of modules a node keeps hot.
#[derive(Debug)]
pub struct LruMap<V> {
    /// Most entries kept (at least 1).
    capacity: usize,
    /// Logical clock: bumped on every use, stored with the entry.
    tick: u64,
    /// Entries with the tick of their last use.
    map: HashMap<ContentId, (V, u64)>,
}

impl<V: Clone> LruMap<V> {
    /// An empty map holding at most `capacity` entries (0 is treated as 1).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            map: HashMap::new(),
        }
    }

    /// The entry for `id`, marking it recently used.
    pub fn get(&mut self, id: &ContentId) -> Option<V> {
        self.tick += 1;
        let tick = self.tick;
        self.map.get_mut(id).map(|(v, used)| {
            *used = tick;
            v.clone()
        })
    }

    /// Inserts or replaces the entry for `id`, evicting the least recently
    /// used entry if the map is full. Returns the evicted id, if any.
    pub fn insert(&mut self, id: ContentId, value: V) -> Option<ContentId> {
        self.tick += 1;
        let mut evicted = None;
        if !self.map.contains_key(&id) && self.map.len() >= self.capacity {
            evicted = self
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| *k);
            if let Some(k) = evicted {
                self.map.remove(&k);
            }
        }
        self.map.insert(id, (value, self.tick));
        evicted
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ContentId {
        ContentId::of(&[n])
    }

    #[test]
    fn evicts_the_least_recently_used() {
        let mut m = LruMap::new(2);
        assert_eq!(m.insert(id(1), "one"), None);
        assert_eq!(m.insert(id(2), "two"), None);
        assert_eq!(m.get(&id(1)), Some("one"));
        assert_eq!(m.insert(id(3), "three"), Some(id(2)));
        assert_eq!(m.get(&id(2)), None);
        assert_eq!(m.get(&id(1)), Some("one"));
        assert_eq!(m.get(&id(3)), Some("three"));
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn replacing_an_entry_evicts_nothing() {
        let mut m = LruMap::new(1);
        assert_eq!(m.len(), 0);
        m.insert(id(1), 1);
        assert_eq!(m.insert(id(1), 2), None);
        assert_eq!(m.get(&id(1)), Some(2));
        assert_eq!(LruMap::<u8>::new(0).capacity, 1);
    }
}
