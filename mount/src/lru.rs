//! A least-recently-used map bounded by the bytes its values weigh: the decoded trees and the
//! plaintext blobs the mount keeps. Pure.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

/// Values by key; inserting past the byte budget drops the least recently used first.
#[derive(Debug)]
pub struct Lru<K, V> {
    budget: usize,
    bytes: usize,
    clock: u64,
    values: HashMap<K, (V, usize, u64)>,
    by_use: BTreeMap<u64, K>,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    /// An empty map that holds at most `budget` bytes of values (one larger value is kept
    /// alone until the next insertion).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            bytes: 0,
            clock: 0,
            values: HashMap::new(),
            by_use: BTreeMap::new(),
        }
    }

    /// The value of `key`, now the most recently used.
    pub fn get(&mut self, key: &K) -> Option<V> {
        self.clock += 1;
        let clock = self.clock;
        let (value, _, used) = self.values.get_mut(key)?;
        self.by_use.remove(used);
        *used = clock;
        self.by_use.insert(clock, key.clone());
        Some(value.clone())
    }

    /// Keeps `value` weighing `weight` bytes under `key`, dropping the least recently used
    /// values while the total is over the budget.
    pub fn insert(&mut self, key: K, value: V, weight: usize) {
        self.clock += 1;
        if let Some((_, old_weight, used)) = self.values.remove(&key) {
            self.by_use.remove(&used);
            self.bytes -= old_weight;
        }
        while self.bytes + weight > self.budget {
            let Some((_, oldest)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((_, dropped, _)) = self.values.remove(&oldest) {
                self.bytes -= dropped;
            }
        }
        self.bytes += weight;
        self.values.insert(key.clone(), (value, weight, self.clock));
        self.by_use.insert(self.clock, key);
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
