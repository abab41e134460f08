//! Encoding a response without copying the record sets it carries: [`PartsBuf`] is an
//! encode buffer for kafka-protocol that, when the encoder puts one of the byte strings it
//! was told to reference (a fetch response's stored batches, by address and length), keeps
//! a reference to it instead of copying it, and copies everything else. The result is the
//! frame as a list of parts, written in order (vectored) by the connection.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::buf::UninitSlice;
use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::protocol::buf::ByteBufMut;

/// Byte strings shorter than this are copied: a part of its own costs an entry in the
/// vectored write, which is dearer than copying a few kilobytes.
pub const REFERENCE_MIN_BYTES: usize = 16 * 1024;

pub struct PartsBuf {
    parts: Vec<Bytes>,
    /// Bytes encoded since the last referenced string.
    current: BytesMut,
    /// The length of `parts` together.
    done: usize,
    /// The strings to reference, in the order the encoder puts them.
    references: VecDeque<Bytes>,
}

impl PartsBuf {
    /// A buffer that references `references` (the ones of at least
    /// [`REFERENCE_MIN_BYTES`]) when the encoder puts them in this order; `capacity` is what
    /// the rest is expected to take.
    pub fn new(references: impl IntoIterator<Item = Bytes>, capacity: usize) -> PartsBuf {
        PartsBuf {
            parts: Vec::new(),
            current: BytesMut::with_capacity(capacity),
            done: 0,
            references: references.into_iter().filter(|b| b.len() >= REFERENCE_MIN_BYTES).collect(),
        }
    }

    /// The parts, in order; empty ones left out.
    pub fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.parts.push(self.current.freeze());
        }
        self.parts
    }

    fn is_next_reference(&self, src: &[u8]) -> bool {
        self.references.front().is_some_and(|r| r.as_ptr() == src.as_ptr() && r.len() == src.len())
    }
}

// kafka-protocol encodes into a `BufMut`, an unsafe trait; delegation alone (the only other
// unsafe code in Weir is `storage/stamped_run.rs`).
// SAFETY: every method hands on to `current`'s own `BufMut`, which upholds the contract.
#[allow(unsafe_code)]
unsafe impl BufMut for PartsBuf {
    fn remaining_mut(&self) -> usize {
        self.current.remaining_mut()
    }

    unsafe fn advance_mut(&mut self, cnt: usize) {
        // SAFETY: the caller initialised `cnt` bytes of `current`'s chunk, as the contract asks.
        unsafe { self.current.advance_mut(cnt) }
    }

    fn chunk_mut(&mut self) -> &mut UninitSlice {
        self.current.chunk_mut()
    }

    fn put_slice(&mut self, src: &[u8]) {
        if self.is_next_reference(src) {
            if let Some(reference) = self.references.pop_front() {
                let before = self.current.split().freeze();
                self.done += before.len() + reference.len();
                if !before.is_empty() {
                    self.parts.push(before);
                }
                self.parts.push(reference);
                return;
            }
        }
        self.current.extend_from_slice(src);
    }
}

impl ByteBufMut for PartsBuf {
    fn offset(&self) -> usize {
        self.done + self.current.len()
    }

    /// Seeking only moves within what was encoded since the last reference. kafka-protocol
    /// seeks only inside record batches it encodes itself, never across a field of bytes.
    fn seek(&mut self, offset: usize) {
        assert!(offset >= self.done, "seek back across a referenced part");
        self.current.resize(offset - self.done, 0);
    }

    fn range(&mut self, r: Range<usize>) -> &mut [u8] {
        assert!(r.start >= self.done, "range across a referenced part");
        &mut self.current[r.start - self.done..r.end - self.done]
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::messages::{FetchResponse, TopicName};
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn response(records: &[Bytes]) -> FetchResponse {
        let mut topic = FetchableTopicResponse::default();
        topic.topic = TopicName(StrBytes::from_static_str("t"));
        topic.partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let mut p = PartitionData::default();
                p.partition_index = i as i32;
                p.high_watermark = 1000 + i as i64;
                p.records = Some(r.clone());
                p
            })
            .collect();
        let mut response = FetchResponse::default();
        response.responses = vec![topic];
        response
    }

    #[test]
    fn large_record_sets_are_referenced_and_the_frame_is_the_same() {
        let big = Bytes::from(vec![7u8; REFERENCE_MIN_BYTES]);
        let small = Bytes::from(vec![9u8; 100]);
        let other_big = Bytes::from(vec![8u8; REFERENCE_MIN_BYTES * 2]);
        let records = [big.clone(), small.clone(), other_big.clone()];
        for version in [4, 12, 16] {
            let r = response(&records);
            let mut whole = BytesMut::new();
            r.encode(&mut whole, version).expect("encode");
            let mut buf = PartsBuf::new(records.iter().cloned(), 256);
            r.encode(&mut buf, version).expect("encode in parts");
            let parts = buf.finish();
            let joined: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(joined, whole.to_vec(), "v{version}");
            assert!(parts.iter().any(|p| p.as_ptr() == big.as_ptr()), "the big set is not copied");
            assert!(parts.iter().any(|p| p.as_ptr() == other_big.as_ptr()));
            assert!(!parts.iter().any(|p| p.as_ptr() == small.as_ptr()), "a small set is copied");
        }
    }

    #[test]
    fn equal_bytes_elsewhere_are_copied_not_mistaken_for_a_reference() {
        let big = Bytes::from(vec![7u8; REFERENCE_MIN_BYTES]);
        let twin = Bytes::from(vec![7u8; REFERENCE_MIN_BYTES]);
        let r = response(std::slice::from_ref(&twin));
        let mut buf = PartsBuf::new([big.clone()], 64);
        r.encode(&mut buf, 12).expect("encode");
        let parts = buf.finish();
        assert_eq!(parts.len(), 1, "one copied frame");
        assert!(parts[0].as_ptr() != big.as_ptr() && parts[0].as_ptr() != twin.as_ptr());
    }
}
