//! Sparse offset and time indexes of one segment, kept in memory and written beside the
//! segment in Kafka's file format when the segment is sealed or the broker stops cleanly.
//!
//! - Offset index (`.index`): 8-byte entries `relative offset u32 | position u32`, one every
//!   `log.index.interval.bytes` of log; a lookup finds the last entry at or before an offset.
//! - Time index (`.timeindex`): 12-byte entries `timestamp i64 | relative offset u32`, where
//!   the timestamp is the largest seen so far, so entries are sorted by both fields.
//!
//! Invariant: entries are strictly increasing in offset (and in timestamp for the time index);
//! a file that breaks it is treated as damaged and rebuilt from the log.

use crate::types::Offset;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetEntry {
    pub relative_offset: u32,
    pub position: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeEntry {
    pub timestamp: i64,
    pub relative_offset: u32,
}

/// Both indexes of one segment.
#[derive(Debug, Default, Clone)]
pub struct SegmentIndex {
    pub offsets: Vec<OffsetEntry>,
    pub times: Vec<TimeEntry>,
}

impl SegmentIndex {
    /// Records a batch starting at `position` whose first offset is `relative_offset` and
    /// whose largest timestamp is `max_timestamp` (the caller decides when an entry is due).
    pub fn add(&mut self, relative_offset: u32, position: u32, max_timestamp: i64) {
        if self.offsets.last().is_none_or(|e| e.relative_offset < relative_offset) {
            self.offsets.push(OffsetEntry { relative_offset, position });
        }
        if self.times.last().is_none_or(|e| e.timestamp < max_timestamp && e.relative_offset < relative_offset) {
            self.times.push(TimeEntry { timestamp: max_timestamp, relative_offset });
        }
    }

    /// The byte position to start scanning from for `relative_offset`: that of the last
    /// entry at or before it, or 0.
    pub fn lookup_offset(&self, relative_offset: u32) -> u32 {
        let i = self.offsets.partition_point(|e| e.relative_offset <= relative_offset);
        if i == 0 {
            0
        } else {
            self.offsets[i - 1].position
        }
    }

    /// The relative offset to start scanning from for the first record with a timestamp at or
    /// after `timestamp`: that of the last entry whose timestamp is below it, or 0.
    pub fn lookup_time(&self, timestamp: i64) -> u32 {
        let i = self.times.partition_point(|e| e.timestamp < timestamp);
        if i == 0 {
            0
        } else {
            self.times[i - 1].relative_offset
        }
    }

    /// Drops entries at or past `position` / `relative_offset` (after a truncation).
    pub fn truncate(&mut self, relative_offset: u32, position: u32) {
        self.offsets.retain(|e| e.position < position && e.relative_offset < relative_offset);
        self.times.retain(|e| e.relative_offset < relative_offset);
    }

    pub fn encode_offsets(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.offsets.len() * 8);
        for e in &self.offsets {
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
            out.extend_from_slice(&e.position.to_be_bytes());
        }
        out
    }

    pub fn encode_times(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.times.len() * 12);
        for e in &self.times {
            out.extend_from_slice(&e.timestamp.to_be_bytes());
            out.extend_from_slice(&e.relative_offset.to_be_bytes());
        }
        out
    }

    /// Parses both index files of a segment whose log holds `log_bytes` bytes and whose
    /// offsets end before `relative_end`; `None` when either is damaged (odd size, unsorted
    /// entries, or pointing past the log), so the caller rebuilds them from the log.
    pub fn decode(offsets: &[u8], times: &[u8], log_bytes: u64, relative_end: u64) -> Option<SegmentIndex> {
        if !offsets.len().is_multiple_of(8) || !times.len().is_multiple_of(12) {
            return None;
        }
        let mut index = SegmentIndex::default();
        for chunk in offsets.chunks_exact(8) {
            let relative_offset = u32::from_be_bytes(chunk[0..4].try_into().ok()?);
            let position = u32::from_be_bytes(chunk[4..8].try_into().ok()?);
            let sorted =
                index.offsets.last().is_none_or(|e| e.relative_offset < relative_offset && e.position < position);
            if !sorted || u64::from(position) >= log_bytes || u64::from(relative_offset) >= relative_end {
                return None;
            }
            index.offsets.push(OffsetEntry { relative_offset, position });
        }
        for chunk in times.chunks_exact(12) {
            let timestamp = i64::from_be_bytes(chunk[0..8].try_into().ok()?);
            let relative_offset = u32::from_be_bytes(chunk[8..12].try_into().ok()?);
            let sorted =
                index.times.last().is_none_or(|e| e.timestamp < timestamp && e.relative_offset < relative_offset);
            if !sorted || u64::from(relative_offset) >= relative_end {
                return None;
            }
            index.times.push(TimeEntry { timestamp, relative_offset });
        }
        Some(index)
    }
}

/// Relative offset of `offset` in a segment starting at `base`; callers keep segments under
/// 2^32 offsets (a segment rolls before that).
pub fn relative(base: Offset, offset: Offset) -> u32 {
    debug_assert!(offset >= base, "offset {offset} before segment base {base}");
    u32::try_from(offset - base).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        let mut idx = SegmentIndex::default();
        idx.add(0, 0, 100);
        idx.add(10, 4096, 150);
        idx.add(20, 8192, 140); // timestamp went back: no time entry
        idx.add(30, 12288, 300);
        idx
    }

    #[test]
    fn offset_lookup_finds_last_entry_at_or_before() {
        let idx = sample();
        assert_eq!(idx.lookup_offset(0), 0);
        assert_eq!(idx.lookup_offset(9), 0);
        assert_eq!(idx.lookup_offset(10), 4096);
        assert_eq!(idx.lookup_offset(25), 8192);
        assert_eq!(idx.lookup_offset(1000), 12288);
    }

    #[test]
    fn time_lookup_starts_before_first_candidate() {
        let idx = sample();
        assert_eq!(idx.times.len(), 3);
        assert_eq!(idx.lookup_time(50), 0);
        assert_eq!(idx.lookup_time(150), 0);
        assert_eq!(idx.lookup_time(151), 10);
        assert_eq!(idx.lookup_time(301), 30);
    }

    #[test]
    fn round_trips_and_rejects_damage() {
        let idx = sample();
        let (o, t) = (idx.encode_offsets(), idx.encode_times());
        let back = SegmentIndex::decode(&o, &t, 20_000, 40).expect("valid");
        assert_eq!(back.offsets, idx.offsets);
        assert_eq!(back.times, idx.times);
        assert!(SegmentIndex::decode(&o[..7], &t, 20_000, 40).is_none());
        assert!(SegmentIndex::decode(&o, &t, 10_000, 40).is_none(), "position past the log");
        let mut unsorted = o.clone();
        unsorted[8..16].copy_from_slice(&o[0..8]);
        assert!(SegmentIndex::decode(&unsorted, &t, 20_000, 40).is_none());
    }

    #[test]
    fn truncate_drops_entries_past_the_cut() {
        let mut idx = sample();
        idx.truncate(20, 8192);
        assert_eq!(idx.offsets.len(), 2);
        assert_eq!(idx.lookup_offset(100), 4096);
    }
}
