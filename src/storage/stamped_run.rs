//! Aligned memory that appended batches are stamped in, so that each produced batch is
//! copied once — out of its request — and that copy is both what the segment's O_DIRECT
//! write sends (no second copy into a DMA buffer) and what the tail cache and fetches hand
//! out (`Bytes` slices of it).
//!
//! A segment's *stamped runs* hold its unwritten bytes: each run holds the file's bytes
//! from an aligned `file_start` to the next run's, contiguously at an aligned place of a
//! chunk, the last one up to the segment's end. Appends copy to the last run's end. A write
//! sends each run's part as it is. A write that covers the last, partial block freezes the
//! last run until the write completes, because the kernel reads those bytes meanwhile; an
//! append in that window starts a new run after the old one, whose first bytes are a copy
//! of the partial block (at most 4 KiB). A run that does not fit its chunk starts a new one.
//!
//! Soundness: the bytes of a chunk are written only by the shard that owns the segment,
//! through [`StampedRun`], and only at places past the run's end, which no slice, no
//! write and no other run covers; everything handed out (slices, write sources) covers
//! bytes already written that never change again.
//!
//! With `protocol/parts.rs`, the only unsafe code in Weir: an allocation that is written
//! at its end while its beginning is shared with other shards and with the kernel cannot
//! be expressed with `Bytes` or glommio's buffers.
#![allow(unsafe_code)]

use std::alloc::Layout;
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::Arc;

use bytes::Bytes;
use glommio::io::DmaBuffer;

use super::segment::{align_down, align_up, ALIGN};

/// The size of a segment's first chunk, and the smallest.
const MIN_CHUNK_BYTES: usize = 16 << 10;

/// An aligned allocation that runs live in; freed when the last run, slice and write
/// source holding it are gone.
struct Chunk {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: see the module's soundness note: the owning shard writes only bytes nothing else
// reads, and every other holder only reads bytes that no longer change.
unsafe impl Send for Chunk {}
// SAFETY: as above.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(bytes: usize) -> Arc<Chunk> {
        let layout = match Layout::from_size_align(bytes.max(ALIGN as usize), ALIGN as usize) {
            Ok(l) => l,
            Err(e) => unreachable!("a chunk of {bytes} bytes has a layout: {e}"),
        };
        // SAFETY: the layout's size is not zero.
        let ptr = unsafe { std::alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(ptr) else { std::alloc::handle_alloc_error(layout) };
        Arc::new(Chunk { ptr, layout })
    }

    fn capacity(&self) -> usize {
        self.layout.size()
    }

    /// Writes `bytes` at `at`.
    ///
    /// # Safety
    /// `[at, at + bytes.len())` is inside the chunk and no slice, write source or other
    /// reference covers it.
    unsafe fn write(&self, at: usize, bytes: &[u8]) {
        debug_assert!(at + bytes.len() <= self.capacity());
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.as_ptr().add(at), bytes.len());
    }

    /// Zeroes `[at, at + len)`, under the same conditions as [`Chunk::write`].
    unsafe fn zero(&self, at: usize, len: usize) {
        debug_assert!(at + len <= self.capacity());
        std::ptr::write_bytes(self.ptr.as_ptr().add(at), 0, len);
    }

    /// `[at, at + len)` for editing, under the same conditions as [`Chunk::write`], and
    /// the bytes were written before.
    #[allow(clippy::mut_from_ref)]
    unsafe fn bytes_mut(&self, at: usize, len: usize) -> &mut [u8] {
        std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), len)
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: allocated in `Chunk::new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

/// Written bytes of a chunk, handed out as `Bytes` (`Bytes::from_owner`).
struct ChunkSlice {
    chunk: Arc<Chunk>,
    at: usize,
    len: usize,
}

impl AsRef<[u8]> for ChunkSlice {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: these bytes were written before the slice was made and never change.
        unsafe { std::slice::from_raw_parts(self.chunk.ptr.as_ptr().add(self.at), self.len) }
    }
}

/// Identifies a run, to thaw it after the write that froze it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RunId {
    chunk: *const u8,
    at: usize,
}

/// One of a segment's stamped runs (see the module note). The last one ends at the
/// segment's `size`, which the segment passes in; a segment drops its runs when bytes reach
/// it any other way.
pub struct StampedRun {
    chunk: Arc<Chunk>,
    /// Where `file_start` is in the chunk (aligned).
    at: usize,
    file_start: u64,
    /// A write covering the partial last block is in flight.
    frozen: bool,
    /// Bytes of batches appended to this run's chunk so far (by this run and the ones
    /// before it in the chunk), which sizes the next chunk.
    chunk_data: usize,
}

impl StampedRun {
    pub fn id(&self) -> RunId {
        RunId { chunk: self.chunk.ptr.as_ptr(), at: self.at }
    }

    /// The first file position this run holds (aligned).
    pub fn file_start(&self) -> u64 {
        self.file_start
    }

    /// Whether a batch of `len` bytes appended at `end` fits this run.
    fn takes(&self, end: u64, len: usize) -> bool {
        !self.frozen
            && end >= self.file_start
            && self.at + (align_up(end + len as u64) - self.file_start) as usize <= self.chunk.capacity()
    }

    /// Copies `batch` to the segment's end (`end`), in the last of `runs` when it takes it,
    /// else in a new run pushed after it, whose first `end - align_down(end)` bytes
    /// `prefix` fills (a copy of the file's partial last block); `stamp` then edits the
    /// copy, which is returned. A segment's runs hold consecutive parts of the file, each
    /// from its `file_start` to the next one's.
    pub fn append(
        runs: &mut VecDeque<StampedRun>,
        end: u64,
        batch: &[u8],
        chunk_bytes: usize,
        prefix: impl FnOnce(&mut [u8]),
        stamp: impl FnOnce(&mut [u8]),
    ) -> Bytes {
        if !runs.back().is_some_and(|r| r.takes(end, batch.len())) {
            let run = StampedRun::start(runs.back(), end, batch.len(), chunk_bytes, prefix);
            runs.push_back(run);
        }
        let Some(run) = runs.back_mut() else { unreachable!("a run was just pushed") };
        run.chunk_data += batch.len();
        let at = run.at + (end - run.file_start) as usize;
        // SAFETY: past the run's end, inside the room `takes` or `start` checked.
        let copy = unsafe {
            run.chunk.write(at, batch);
            run.chunk.bytes_mut(at, batch.len())
        };
        stamp(copy);
        Bytes::from_owner(ChunkSlice { chunk: run.chunk.clone(), at, len: batch.len() })
    }

    /// A run for the file from `align_down(end)`, with room for `len` more bytes: in the
    /// chunk of `last` (the last run, hence the last in its chunk) after it, padding
    /// included (a write may still be reading that), if the chunk has the room. Else in a
    /// new chunk twice the size of the batches the last one took, within `chunk_bytes`:
    /// a busy partition gets large chunks, and many quiet ones do not each hold one (a
    /// write's padding and the partial block it freezes use up room without data).
    fn start(
        last: Option<&StampedRun>,
        end: u64,
        len: usize,
        chunk_bytes: usize,
        prefix: impl FnOnce(&mut [u8]),
    ) -> StampedRun {
        let file_start = align_down(end);
        let head = (end - file_start) as usize;
        let need = align_up((head + len) as u64) as usize;
        let next_chunk = |r: Option<&StampedRun>| {
            let data = r.map_or(0, |r| r.chunk_data);
            let bytes = (2 * data).next_power_of_two().clamp(MIN_CHUNK_BYTES, chunk_bytes.max(MIN_CHUNK_BYTES));
            (Chunk::new(bytes.max(need)), 0, 0)
        };
        let (chunk, at, chunk_data) = match last {
            Some(r) if r.file_start <= end => {
                let after = r.at + (align_up(end) - r.file_start) as usize;
                match after + need <= r.chunk.capacity() {
                    true => (r.chunk.clone(), after, r.chunk_data),
                    false => next_chunk(Some(r)),
                }
            }
            _ => next_chunk(None),
        };
        // SAFETY: past every earlier run of the chunk; nothing holds these bytes.
        unsafe {
            chunk.zero(at, head);
            prefix(chunk.bytes_mut(at, head));
        }
        StampedRun { chunk, at, file_start, frozen: false, chunk_data }
    }

    /// The file's bytes `[from, to)` (aligned; `to` at most the aligned end of `end`, the
    /// segment's size) as an O_DIRECT write source without a copy, if this run holds
    /// `from`. Zeroes what lies past `end` in the last block; a source covering the partial
    /// last block freezes the run until [`StampedRun::thaw`].
    pub fn write_source(&mut self, from: u64, to: u64, end: u64) -> Option<DmaBuffer> {
        if from < self.file_start
            || to > align_up(end)
            || from >= to
            || !from.is_multiple_of(ALIGN)
            || !to.is_multiple_of(ALIGN)
        {
            return None;
        }
        let start = self.at + (from - self.file_start) as usize;
        let len = (to - from) as usize;
        if to > end {
            // SAFETY: past the run's end (nothing handed out), inside its reserved room.
            unsafe { self.chunk.zero(self.at + (end - self.file_start) as usize, (to - end) as usize) };
            self.frozen = true;
        }
        // SAFETY: aligned (chunks and runs start aligned; `from` is), written (batches, the
        // prefix and the zeroes just made), and unchanged while the write runs: appends go
        // past `end`, beyond `to`, unless the run is frozen, when they go to a new run.
        let source =
            unsafe { DmaBuffer::from_owner(self.chunk.ptr.as_ptr().add(start), len, Box::new(self.chunk.clone())) };
        Some(source)
    }

    /// The write that froze run `id` completed: appends may go to it again.
    pub fn thaw(&mut self, id: RunId) {
        if self.id() == id {
            self.frozen = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn append(runs: &mut VecDeque<StampedRun>, end: u64, batch: &[u8], file: &[u8]) -> Bytes {
        StampedRun::append(
            runs,
            end,
            batch,
            16 * 1024,
            |p| p.copy_from_slice(&file[align_down(end) as usize..end as usize]),
            |b| b[0] = b'S',
        )
    }

    #[test]
    fn appends_stamp_their_copy_and_writes_send_the_run_itself() {
        let mut runs = VecDeque::new();
        let mut file = Vec::new();
        let a = append(&mut runs, 0, &[1u8; 3000], &file);
        assert_eq!(a[0], b'S');
        assert!(a[1..].iter().all(|&b| b == 1));
        file.extend_from_slice(&a);
        let b = append(&mut runs, 3000, &[2u8; 3000], &file);
        file.extend_from_slice(&b);
        assert_eq!(runs.len(), 1);
        let id = runs[0].id();
        let source = runs[0].write_source(0, 8192, 6000).expect("the run holds the file from 0");
        assert_eq!(&source.as_bytes()[..6000], &file[..]);
        assert!(source.as_bytes()[6000..].iter().all(|&b| b == 0), "padding zeroed");
        // Frozen by that write: the next append starts a new run with the partial block copied.
        let c = append(&mut runs, 6000, &[3u8; 100], &file);
        assert_eq!(runs.len(), 2);
        assert_ne!(runs[1].id(), id);
        assert_eq!(runs[1].file_start(), 4096);
        assert_eq!(&source.as_bytes()[..6000], &file[..], "the write's bytes did not change");
        file.extend_from_slice(&c);
        let source2 = runs[1].write_source(4096, 8192, 6100).expect("the new run holds its block");
        assert_eq!(&source2.as_bytes()[..6100 - 4096], &file[4096..]);
        // The old run still sends what lies before the new one.
        let old = runs[0].write_source(0, 4096, 6100).expect("the old run holds the first block");
        assert_eq!(old.as_bytes(), &file[..4096]);
        // Still in the old slices: what fetches were handed.
        assert_eq!(a[1], 1);
        assert_eq!(b[1], 2);
    }

    #[test]
    fn a_thawed_run_takes_appends_again_and_a_full_chunk_starts_another() {
        let mut runs = VecDeque::new();
        let mut file = Vec::new();
        let a = append(&mut runs, 0, &[1u8; 100], &file);
        file.extend_from_slice(&a);
        let id = runs[0].id();
        drop(runs[0].write_source(0, 4096, 100).expect("source"));
        runs[0].thaw(id);
        let b = append(&mut runs, 100, &[2u8; 100], &file);
        assert_eq!(runs.len(), 1, "same run after the write completed");
        file.extend_from_slice(&b);
        // Bigger than the chunk has room for: a new chunk, sized for the batch.
        let c = append(&mut runs, 200, &vec![4u8; 40_000], &file);
        assert_eq!(runs.len(), 2);
        assert_ne!(runs[1].id(), id);
        file.extend_from_slice(&c);
        let end = file.len() as u64;
        assert_eq!(runs[1].file_start(), 0, "the new run starts with a copy of the partial block");
        let source = runs[1].write_source(0, align_up(end), end).expect("source");
        assert_eq!(&source.as_bytes()[..file.len()], &file[..]);
        assert!(runs[1].write_source(0, 4096 + 100, 200).is_none(), "unaligned");
    }

    #[test]
    fn chunks_grow_with_the_data_they_take_not_with_the_room_writes_use_up() {
        let chunk_bytes = 1 << 20;
        let mut runs = VecDeque::new();
        let mut file = Vec::new();
        // A quiet partition: every small append is written at once, freezing its run, so
        // each next append starts a run a block further on.
        for i in 0..40u8 {
            let end = file.len() as u64;
            let b = StampedRun::append(
                &mut runs,
                end,
                &[i; 100],
                chunk_bytes,
                |p| p.copy_from_slice(&file[align_down(end) as usize..]),
                |_| {},
            );
            file.extend_from_slice(&b);
            let end = file.len() as u64;
            let last = runs.back_mut().expect("a run");
            drop(last.write_source(last.file_start(), align_up(end), end).expect("source"));
        }
        assert!(runs.iter().all(|r| r.chunk.capacity() == MIN_CHUNK_BYTES), "quiet chunks stay small");
        // A busy one: chunks fill with batches and double up to `chunk_bytes`.
        for _ in 0..100 {
            let end = file.len() as u64;
            let b = StampedRun::append(
                &mut runs,
                end,
                &[7u8; 30_000],
                chunk_bytes,
                |p| p.copy_from_slice(&file[align_down(end) as usize..]),
                |_| {},
            );
            file.extend_from_slice(&b);
        }
        assert_eq!(runs.back().expect("a run").chunk.capacity(), chunk_bytes);
        // Every run holds the file from its start to the next run's.
        let end = file.len() as u64;
        let starts: Vec<u64> = runs.iter().map(StampedRun::file_start).chain([align_up(end)]).collect();
        for (i, run) in runs.iter_mut().enumerate() {
            let (from, to) = (starts[i], starts[i + 1]);
            if from == to {
                continue;
            }
            let source = run.write_source(from, to, end).expect("source");
            let want = &file[from as usize..(to.min(end)) as usize];
            assert_eq!(&source.as_bytes()[..want.len()], want, "run {i}");
        }
    }
}
