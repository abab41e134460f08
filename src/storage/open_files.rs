//! The shard's bounded cache of open segment files.
//!
//! Kafka keeps every segment of every partition open, so its descriptors grow with
//! partitions × segments and a broker can come to hold more than its limit allows it to
//! reopen. Weir opens a segment's file when it is written or read and keeps the most
//! recently used ones open, up to the shard's share of the descriptor budget (see
//! `config::descriptors`); the least recently used are closed when that is exceeded.
//!
//! A file is closed only when nothing written through it awaits an `fdatasync` (it is
//! *dirty* from its write until a sync covers it) and no one is using it: a sync must go
//! through the descriptor the data was written with, never a reopened one, so no error a
//! write left behind can be missed. Dirty and busy files may take the cache past its
//! capacity for a moment; the descriptors reserved beyond it absorb that.
//!
//! One cache per shard thread (thread-local): a shard's logs never share files with
//! another shard's.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use glommio::io::DmaFile;

use crate::types::Offset;

/// A segment file: the log it belongs to (`next_log_id`) and the segment's base offset.
pub type FileKey = (u64, Offset);

/// How many least-recently-used entries one insertion looks at for something to close:
/// bounds the work when the oldest files are all dirty or busy.
const EVICTION_SCAN: usize = 256;

struct Entry<F> {
    file: Rc<F>,
    dirty: bool,
    used: u64,
}

/// The LRU bookkeeping, over any file type (tests use a plain one).
pub struct FileCache<F> {
    capacity: usize,
    entries: HashMap<FileKey, Entry<F>>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, FileKey>,
    clock: u64,
    stats: CacheStats,
}

/// Counters for tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Insertions that left the cache above capacity (everything old was dirty or busy).
    pub overflows: u64,
}

impl<F> FileCache<F> {
    pub fn new(capacity: usize) -> Self {
        FileCache {
            capacity: capacity.max(1),
            entries: HashMap::new(),
            order: BTreeMap::new(),
            clock: 0,
            stats: CacheStats::default(),
        }
    }

    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// The open file, marked as just used.
    pub fn get(&mut self, key: FileKey) -> Option<Rc<F>> {
        let now = self.tick();
        let entry = self.entries.get_mut(&key)?;
        self.order.remove(&entry.used);
        entry.used = now;
        self.order.insert(now, key);
        Some(entry.file.clone())
    }

    /// Adds a file just opened; returns it and the files closed to make room (the caller
    /// drops them, which closes them in the background).
    pub fn insert(&mut self, key: FileKey, file: F) -> (Rc<F>, Vec<Rc<F>>) {
        let now = self.tick();
        let file = Rc::new(file);
        if let Some(old) = self.entries.insert(key, Entry { file: file.clone(), dirty: false, used: now }) {
            self.order.remove(&old.used);
        }
        self.order.insert(now, key);
        (file, self.evict())
    }

    fn evict(&mut self) -> Vec<Rc<F>> {
        let mut closed = Vec::new();
        if self.entries.len() <= self.capacity {
            return closed;
        }
        let excess = self.entries.len() - self.capacity;
        let victims: Vec<(u64, FileKey)> = self
            .order
            .iter()
            .take(EVICTION_SCAN)
            .filter(|(_, key)| self.entries.get(key).is_some_and(|e| !e.dirty && Rc::strong_count(&e.file) == 1))
            .take(excess)
            .map(|(used, key)| (*used, *key))
            .collect();
        for (used, key) in victims {
            self.order.remove(&used);
            if let Some(e) = self.entries.remove(&key) {
                closed.push(e.file);
            }
        }
        if self.entries.len() > self.capacity {
            self.stats.overflows += 1;
        }
        closed
    }

    /// Marks a file as written through (it stays open until a sync covers it) or synced.
    pub fn set_dirty(&mut self, key: FileKey, dirty: bool) {
        if let Some(e) = self.entries.get_mut(&key) {
            e.dirty = dirty;
        }
        if !dirty {
            // Something may have waited for this file to become closable.
            let closed = self.evict();
            drop(closed);
        }
    }

    /// Takes a file out (its segment is being removed or replaced).
    pub fn remove(&mut self, key: FileKey) -> Option<Rc<F>> {
        let e = self.entries.remove(&key)?;
        self.order.remove(&e.used);
        Some(e.file)
    }

    /// Takes out every file of one log (closed, deleted or dropped).
    pub fn remove_log(&mut self, log: u64) -> Vec<Rc<F>> {
        let keys: Vec<FileKey> = self.entries.keys().filter(|(l, _)| *l == log).copied().collect();
        keys.into_iter().filter_map(|k| self.remove(k)).collect()
    }
}

thread_local! {
    /// Unbounded until the shard sets its share of the descriptor budget.
    static CACHE: RefCell<FileCache<DmaFile>> = RefCell::new(FileCache::new(usize::MAX));
    static NEXT_LOG: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Sets this shard's capacity (its share of the broker's descriptor budget).
pub fn set_capacity(capacity: usize) {
    CACHE.with(|c| c.borrow_mut().set_capacity(capacity));
}

/// A fresh id for a log opened on this shard.
pub fn next_log_id() -> u64 {
    NEXT_LOG.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    })
}

pub(super) fn get(key: FileKey) -> Option<Rc<DmaFile>> {
    CACHE.with(|c| c.borrow_mut().get(key))
}

pub(super) fn insert(key: FileKey, file: DmaFile) -> Rc<DmaFile> {
    let (file, closed) = CACHE.with(|c| c.borrow_mut().insert(key, file));
    // Dropped outside the borrow: glommio closes a dropped file in the background.
    drop(closed);
    file
}

pub(super) fn set_dirty(key: FileKey, dirty: bool) {
    CACHE.with(|c| c.borrow_mut().set_dirty(key, dirty));
}

pub(super) fn remove(key: FileKey) -> Option<Rc<DmaFile>> {
    CACHE.with(|c| c.borrow_mut().remove(key))
}

pub(super) fn remove_log(log: u64) -> Vec<Rc<DmaFile>> {
    CACHE.with(|c| c.borrow_mut().remove_log(log))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn least_recently_used_clean_files_close_first() {
        let mut cache = FileCache::new(2);
        cache.insert((0, 0), "a");
        cache.insert((0, 10), "b");
        assert!(cache.get((0, 0)).is_some());
        let (_, closed) = cache.insert((1, 0), "c");
        assert_eq!(closed.iter().map(|f| **f).collect::<Vec<_>>(), vec!["b"]);
        assert!(cache.get((0, 10)).is_none());
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn dirty_and_busy_files_stay_open_until_released() {
        let mut cache = FileCache::new(1);
        cache.insert((0, 0), "dirty");
        cache.set_dirty((0, 0), true);
        let (busy, closed) = cache.insert((0, 1), "busy");
        assert!(closed.is_empty(), "a dirty file is never closed");
        let (_, closed) = cache.insert((0, 2), "new");
        assert!(closed.is_empty(), "a file in use is never closed");
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.stats().overflows, 2);
        drop(busy);
        cache.set_dirty((0, 0), false);
        assert_eq!(cache.len(), 1, "released files close once the cache is over capacity");
        assert!(cache.get((0, 2)).is_some(), "the most recent stays");
    }

    #[test]
    fn removing_a_log_takes_all_its_files() {
        let mut cache = FileCache::new(10);
        cache.insert((0, 0), "a");
        cache.insert((1, 0), "b");
        cache.insert((0, 5), "c");
        assert_eq!(cache.remove_log(0).len(), 2);
        assert_eq!(cache.len(), 1);
        assert!(cache.remove((1, 0)).is_some());
        assert!(cache.is_empty());
    }
}
