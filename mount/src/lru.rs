//! The byte budget of the mount's caches (decoded trees, plaintext blobs): the `lru` crate keeps
//! the order of use, this module weighs the values and drops the least recently used while the
//! total is over the budget. Pure.

use std::hash::Hash;

/// Values by key; inserting past the byte budget drops the least recently used first.
#[derive(Debug)]
pub struct Lru<K: Hash + Eq, V> {
    budget: usize,
    bytes: usize,
    values: lru::LruCache<K, (V, usize)>,
}

impl<K: Hash + Eq, V: Clone> Lru<K, V> {
    /// An empty map that holds at most `budget` bytes of values (one larger value is kept
    /// alone until the next insertion).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            values: lru::LruCache::unbounded(),
        }
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.values.get(key).map(|(value, _)| value.clone())
    }

    /// Keeps `value` weighing `weight` bytes under `key`, dropping the least recently used
    /// values while the total is over the budget.
    pub fn insert(&mut self, key: K, value: V, weight: usize) {
        if let Some((_, old_weight)) = self.values.pop(&key) {
            self.bytes -= old_weight;
        }
        while self.bytes + weight > self.budget {
            let Some((_, (_, dropped))) = self.values.pop_lru() else {
                break;
            };
            self.bytes -= dropped;
        }
        self.bytes += weight;
        self.values.put(key, (value, weight));
    }

    /// Bytes held.
    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_goes_first_and_bytes_stay_within_the_budget() {
        let mut lru = Lru::new(10);
        lru.insert(1, "a", 4);
        lru.insert(2, "b", 4);
        assert_eq!(lru.get(&1), Some("a"));
        lru.insert(3, "c", 4);
        assert_eq!(lru.get(&2), None);
        assert_eq!(lru.get(&1), Some("a"));
        assert_eq!(lru.get(&3), Some("c"));
        assert_eq!(lru.bytes(), 8);
        lru.insert(4, "d", 20);
        assert_eq!(lru.bytes(), 20);
        assert_eq!(lru.get(&1), None);
        lru.insert(4, "e", 2);
        assert_eq!((lru.get(&4), lru.bytes()), (Some("e"), 2));
    }
}
