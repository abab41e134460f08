//! One segment of a partition's log: a `.log` file of record batches written with O_DIRECT
//! through glommio's `DmaFile` (io_uring), plus its in-memory indexes.
//!
//! O_DIRECT writes must be block-aligned, so the segment keeps the bytes from the last
//! aligned position (`pending_pos`) to its end in memory (`pending`) and rewrites that tail
//! block on the next flush. Bytes below `pending_pos` are on the file (maybe not yet synced);
//! reads take them from the file and the rest from `pending`.
//!
//! Runs on the shard that owns the partition; never shared across threads.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use glommio::io::DmaFile;

use super::index::SegmentIndex;
use crate::types::Offset;

/// O_DIRECT alignment used for every write position and length.
pub const ALIGN: u64 = 4096;

pub fn align_down(v: u64) -> u64 {
    v & !(ALIGN - 1)
}

pub fn align_up(v: u64) -> u64 {
    (v + ALIGN - 1) & !(ALIGN - 1)
}

/// File name stem of a segment, as Kafka names them: the base offset in 20 digits.
pub fn file_stem(base_offset: Offset) -> String {
    format!("{base_offset:020}")
}

pub fn log_path(dir: &Path, base_offset: Offset) -> PathBuf {
    dir.join(format!("{}.log", file_stem(base_offset)))
}
pub fn index_path(dir: &Path, base_offset: Offset) -> PathBuf {
    dir.join(format!("{}.index", file_stem(base_offset)))
}
pub fn time_index_path(dir: &Path, base_offset: Offset) -> PathBuf {
    dir.join(format!("{}.timeindex", file_stem(base_offset)))
}

pub struct Segment {
    pub base_offset: Offset,
    /// Opened lazily by the flusher for a freshly rolled segment.
    pub file: Option<Rc<DmaFile>>,
    /// Bytes of complete batches in this segment.
    pub size: u64,
    /// Bytes `[pending_pos, size)`, not yet (fully) written to the file.
    pub pending: Vec<u8>,
    /// File position of `pending[0]`; always aligned, never above `written`.
    pub pending_pos: u64,
    /// Bytes `[0, written)` are in the file.
    pub written: u64,
    /// Bytes `[0, synced)` are durable.
    pub synced: u64,
    /// The file's length: space reserved ahead of `written` (see `Log::write_segment`).
    pub allocated: u64,
    pub index: SegmentIndex,
    pub bytes_since_index: u64,
    /// One past the last offset stored in this segment.
    pub next_offset: Offset,
    pub max_timestamp: i64,
    pub created_ms: i64,
    /// No more appends; index files are written once its data is synced.
    pub sealed: bool,
    pub index_files_written: bool,
}

impl Segment {
    pub fn new_empty(base_offset: Offset, now_ms: i64) -> Self {
        Segment {
            base_offset,
            file: None,
            size: 0,
            pending: Vec::new(),
            pending_pos: 0,
            written: 0,
            synced: 0,
            allocated: 0,
            index: SegmentIndex::default(),
            bytes_since_index: 0,
            next_offset: base_offset,
            max_timestamp: -1,
            created_ms: now_ms,
            sealed: false,
            index_files_written: false,
        }
    }

    /// Appends a stamped batch to the in-memory tail; returns its position.
    pub fn push(
        &mut self,
        batch: &[u8],
        base_offset: Offset,
        last_offset: Offset,
        max_timestamp: i64,
        index_interval_bytes: u64,
    ) -> u64 {
        let position = self.size;
        if self.size == 0 || self.bytes_since_index >= index_interval_bytes {
            let relative = super::index::relative(self.base_offset, base_offset);
            self.index.add(relative, position as u32, max_timestamp.max(self.max_timestamp));
            self.bytes_since_index = 0;
        }
        self.pending.extend_from_slice(batch);
        self.size += batch.len() as u64;
        self.bytes_since_index += batch.len() as u64;
        self.next_offset = last_offset + 1;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        position
    }

    /// Bytes `[from, to)` that are only in memory, if `from` is at or past `pending_pos`.
    pub fn pending_slice(&self, from: u64, to: u64) -> Option<&[u8]> {
        if from < self.pending_pos || to > self.size || from > to {
            return None;
        }
        let start = (from - self.pending_pos) as usize;
        let end = (to - self.pending_pos) as usize;
        self.pending.get(start..end)
    }

    /// Forgets in-memory bytes below `new_pending_pos` once they are in the file.
    pub fn release_written(&mut self, new_pending_pos: u64) {
        debug_assert!(new_pending_pos.is_multiple_of(ALIGN) && new_pending_pos >= self.pending_pos);
        let drop = (new_pending_pos - self.pending_pos) as usize;
        self.pending.drain(..drop.min(self.pending.len()));
        self.pending_pos = new_pending_pos;
        if self.pending.is_empty() {
            self.pending.shrink_to(ALIGN as usize);
        }
    }

    pub fn unwritten_bytes(&self) -> u64 {
        self.size - self.written
    }
}
