//! One segment of a partition's log: a `.log` file of record batches written with O_DIRECT
//! through glommio's `DmaFile` (io_uring), plus its in-memory indexes.
//!
//! O_DIRECT writes must be block-aligned, so the segment keeps the bytes from the last
//! aligned position (`pending_pos`) to its end in memory (`pending`) and rewrites that tail
//! block on the next flush. Bytes below `pending_pos` are on the file (maybe not yet synced);
//! reads take them from the file and the rest from `pending`.
//!
//! `pending` is a chain of the stamped batches themselves (shared with the log's tail
//! cache), not a copy of them: appending and releasing written bytes move no data. Batches
//! appended by this broker are stamped in the segment's `stamped` runs (`stamped_run`),
//! which a write sends as they are; what reached the segment otherwise (a replica's fetched
//! batches, the tail block read back at open) is copied into a DMA buffer by the write.
//!
//! Runs on the shard that owns the partition; never shared across threads.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use bytes::{Buf, Bytes, BytesMut};
use glommio::io::DmaBuffer;

use super::index::SegmentIndex;
use super::stamped_run::{RunId, StampedRun};
use crate::types::Offset;

/// One of the parts a segment write goes out in ([`Segment::write_parts`]).
pub struct WritePart {
    pub pos: u64,
    pub len: u64,
    /// The bytes as they are in a stamped run, or None: the write copies them.
    pub source: Option<DmaBuffer>,
}

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
    /// Where the unwritten bytes are in aligned memory, when appends put them there
    /// (consecutive runs, the last at the end; dropped when bytes reach the segment any
    /// other way).
    pub stamped: VecDeque<StampedRun>,
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
            stamped: VecDeque::new(),
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

    /// Copies `batch` to the end of the last stamped run, lets `stamp` edit the copy, and returns
    /// it, for [`Segment::push`] with `stamped`.
    pub fn stamp_copy(&mut self, batch: &[u8], chunk_bytes: usize, stamp: impl FnOnce(&mut [u8])) -> Bytes {
        let end = self.size;
        let mut runs = std::mem::take(&mut self.stamped);
        let bytes = StampedRun::append(
            &mut runs,
            end,
            batch,
            chunk_bytes,
            |head| self.copy_pending((align_down(end) - self.pending_pos) as usize, head),
            stamp,
        );
        self.stamped = runs;
        bytes
    }

    /// The parts a write of the file's bytes `[from, to)` goes out in (aligned, `to` at
    /// most the aligned end), cut at `cut` and where stamped runs start: each part's
    /// position, length and, when a run holds it, the run's bytes as they are (else the
    /// write copies them from `pending`). Also the run a part froze, to thaw when the write
    /// completes ([`StampedRun::write_source`]).
    pub fn write_parts(&mut self, from: u64, to: u64, cut: u64) -> (Vec<WritePart>, Option<RunId>) {
        let mut cuts = vec![from, to];
        cuts.extend(self.stamped.iter().map(StampedRun::file_start).chain([cut]).filter(|&c| from < c && c < to));
        cuts.sort_unstable();
        cuts.dedup();
        let size = self.size;
        let mut froze = None;
        let parts = cuts
            .windows(2)
            .map(|w| {
                let (a, b) = (w[0], w[1]);
                let run = self.stamped.iter_mut().rev().find(|r| r.file_start() <= a);
                let source = run.and_then(|r| {
                    let source = r.write_source(a, b, size)?;
                    if b > size {
                        froze = Some(r.id());
                    }
                    Some(source)
                });
                WritePart { pos: a, len: b - a, source }
            })
            .collect();
        (parts, froze)
    }

    /// Appends a stamped batch to the in-memory tail; returns its position. `stamped`: the
    /// batch is the copy [`Segment::stamp_copy`] just returned.
    pub fn push(
        &mut self,
        batch: Bytes,
        base_offset: Offset,
        last_offset: Offset,
        max_timestamp: i64,
        index_interval_bytes: u64,
        stamped: bool,
    ) -> u64 {
        if !stamped {
            self.stamped.clear();
        }
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
        // A run is done with once the next one starts where nothing is left to write, and
        // all are once a sealed segment is written to its end (the last would otherwise
        // keep its chunk for as long as the segment lives).
        while self.stamped.get(1).is_some_and(|next| next.file_start() <= new_pending_pos) {
            self.stamped.pop_front();
        }
        if self.sealed && self.written >= self.size {
            self.stamped.clear();
        }
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
            seg.push(Bytes::copy_from_slice(&data[at..at + len]), i as i64, i as i64, 0, u64::MAX, false);
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
