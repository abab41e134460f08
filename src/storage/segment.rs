//! One segment of a partition's log: a `.log` file of record batches written with O_DIRECT
//! through glommio's `DmaFile` (io_uring), plus its in-memory indexes.
//!
//! O_DIRECT writes must be block-aligned, so the segment keeps the bytes from the last
//! aligned position (`pending_pos`) to its end in memory (`pending`) and rewrites that tail
//! block on the next flush. Bytes below `pending_pos` are on the file (maybe not yet synced);
//! reads take them from the file and the rest from `pending`.
//!
//! `pending` is a chain of the stamped batches themselves (shared with the log's tail
//! cache), not a copy of them: appending and releasing written bytes move no data.
//!
//! Runs on the shard that owns the partition; never shared across threads.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};

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
/// The segment's aborted-transaction index (written by the partition: `partition::transactions`).
pub fn txn_index_path(dir: &Path, base_offset: Offset) -> PathBuf {
    dir.join(format!("{}.txnindex", file_stem(base_offset)))
}

pub struct Segment {
    pub base_offset: Offset,
    /// The `.log` file exists (a freshly rolled segment's is created by its first write).
    /// Open files are kept by the shard's cache (`open_files`), not here.
    pub on_disk: bool,
    /// Bytes of complete batches in this segment.
    pub size: u64,
    /// Bytes `[pending_pos, size)`, not yet (fully) written to the file, in order.
    pub pending: VecDeque<Bytes>,
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
            on_disk: false,
            size: 0,
            pending: VecDeque::new(),
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
        batch: Bytes,
        base_offset: Offset,
        last_offset: Offset,
        max_timestamp: i64,
        index_interval_bytes: u64,
    ) -> u64 {
        let position = self.size;
        // Its index files, if written (at a clean stop), no longer cover it.
        self.index_files_written = false;
        if self.size == 0 || self.bytes_since_index >= index_interval_bytes {
            let relative = super::index::relative(self.base_offset, base_offset);
            self.index.add(relative, position as u32, max_timestamp.max(self.max_timestamp));
            self.bytes_since_index = 0;
        }
        self.size += batch.len() as u64;
        self.bytes_since_index += batch.len() as u64;
        self.pending.push_back(batch);
        self.next_offset = last_offset + 1;
        self.max_timestamp = self.max_timestamp.max(max_timestamp);
        position
    }

    /// Bytes `[from, to)` that are only in memory, if `from` is at or past `pending_pos`:
    /// a slice of one batch when they lie in one (no copy), else joined.
    pub fn pending_range(&self, from: u64, to: u64) -> Option<Bytes> {
        if from < self.pending_pos || to > self.size || from > to {
            return None;
        }
        let mut skip = (from - self.pending_pos) as usize;
        let mut left = (to - from) as usize;
        let mut chunks = self.pending.iter();
        let first = loop {
            match chunks.next() {
                Some(c) if skip >= c.len() => skip -= c.len(),
                Some(c) => break c,
                None => return Some(Bytes::new()),
            }
        };
        if skip + left <= first.len() {
            return Some(first.slice(skip..skip + left));
        }
        let mut out = BytesMut::with_capacity(left);
        out.extend_from_slice(&first[skip..]);
        left -= first.len() - skip;
        for c in chunks {
            if left == 0 {
                break;
            }
            let n = left.min(c.len());
            out.extend_from_slice(&c[..n]);
            left -= n;
        }
        Some(out.freeze())
    }

    /// Copies `dst.len()` pending bytes, starting `skip` bytes past `pending_pos`, into `dst`.
    pub fn copy_pending(&self, mut skip: usize, dst: &mut [u8]) {
        let mut at = 0;
        for c in &self.pending {
            if at == dst.len() {
                break;
            }
            if skip >= c.len() {
                skip -= c.len();
                continue;
            }
            let n = (c.len() - skip).min(dst.len() - at);
            dst[at..at + n].copy_from_slice(&c[skip..skip + n]);
            at += n;
            skip = 0;
        }
    }

    /// Forgets in-memory bytes below `new_pending_pos` once they are in the file.
    pub fn release_written(&mut self, new_pending_pos: u64) {
        debug_assert!(new_pending_pos.is_multiple_of(ALIGN) && new_pending_pos >= self.pending_pos);
        let mut drop = (new_pending_pos - self.pending_pos) as usize;
        while let Some(front) = self.pending.front_mut() {
            if front.len() > drop {
                front.advance(drop);
                break;
            }
            drop -= front.len();
            self.pending.pop_front();
        }
        self.pending_pos = new_pending_pos;
    }

    pub fn unwritten_bytes(&self) -> u64 {
        self.size - self.written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_chain_reads_copies_and_releases() {
        let mut seg = Segment::new_empty(0, 0);
        let data: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut at = 0;
        for (i, len) in [3000usize, 1, 5000, 4096, 7903].into_iter().enumerate() {
            seg.push(Bytes::copy_from_slice(&data[at..at + len]), i as i64, i as i64, 0, u64::MAX);
            at += len;
        }
        assert_eq!(seg.size, 20_000);
        for (from, to) in [(0, 20_000), (0, 3000), (2999, 3001), (3000, 3001), (3001, 8001), (12_000, 20_000), (5, 5)] {
            let got = seg.pending_range(from, to).expect("in memory");
            assert_eq!(&got[..], &data[from as usize..to as usize], "{from}..{to}");
        }
        assert!(seg.pending_range(0, 20_001).is_none());
        let mut dst = vec![0; 9000];
        seg.copy_pending(0, &mut dst);
        assert_eq!(&dst[..], &data[..9000]);
        for skip in [0usize, 1, 2999, 3000, 3001, 8097, 12_096] {
            let mut dst = vec![0; 20_000 - skip];
            seg.copy_pending(skip, &mut dst);
            assert_eq!(&dst[..], &data[skip..], "skip {skip}");
        }
        seg.release_written(8192);
        assert!(seg.pending_range(8191, 8192).is_none(), "released");
        assert_eq!(&seg.pending_range(8192, 20_000).expect("kept")[..], &data[8192..]);
        let mut dst = vec![0; 20_000 - 8192];
        seg.copy_pending(0, &mut dst);
        assert_eq!(&dst[..], &data[8192..]);
        seg.release_written(16_384);
        assert_eq!(&seg.pending_range(16_384, 20_000).expect("kept")[..], &data[16_384..]);
        assert_eq!(seg.pending.len(), 1);
    }
}
