//! A zero-copy view of a Kafka record batch (magic 2) header, and the checks a broker makes
//! before it stores one.
//!
//! The broker never decodes records on the hot path: it checks the 61-byte header and the
//! CRC32C of the body, then stamps the base offset (outside the CRC) in place. Layout
//! (big-endian), from the Kafka protocol guide:
//!
//! ```text
//! 0  baseOffset i64        8  batchLength i32     12 partitionLeaderEpoch i32
//! 16 magic i8              17 crc u32 (CRC32C of bytes 21..)
//! 21 attributes i16        23 lastOffsetDelta i32 27 baseTimestamp i64
//! 35 maxTimestamp i64      43 producerId i64      51 producerEpoch i16
//! 53 baseSequence i32      57 recordCount i32     61 records...
//! ```

use bytes::Bytes;
use thiserror::Error;

use crate::types::Offset;

/// Bytes of a batch header; the smallest possible batch.
pub const BATCH_HEADER_BYTES: usize = 61;
/// Bytes before `batchLength` counts: baseOffset + batchLength.
pub const BATCH_LOG_OVERHEAD: usize = 12;
/// Smallest encoded record: length, attributes, timestamp and offset deltas, key and value
/// lengths, header count, each at least one byte.
const RECORD_BYTES_MIN: usize = 7;
/// No codec Kafka uses expands data more than this (zstd's RLE blocks come closest:
/// a few bytes for 128 KiB).
const EXPANSION_MAX: usize = 1 << 17;
/// The only record format this broker stores.
pub const MAGIC_V2: i8 = 2;

const OFFSET_BATCH_LENGTH: usize = 8;
const OFFSET_LEADER_EPOCH: usize = 12;
const OFFSET_MAGIC: usize = 16;
const OFFSET_CRC: usize = 17;
const OFFSET_ATTRIBUTES: usize = 21;
const OFFSET_LAST_OFFSET_DELTA: usize = 23;
const OFFSET_BASE_TIMESTAMP: usize = 27;
const OFFSET_MAX_TIMESTAMP: usize = 35;
const OFFSET_PRODUCER_ID: usize = 43;
const OFFSET_PRODUCER_EPOCH: usize = 51;
const OFFSET_BASE_SEQUENCE: usize = 53;
const OFFSET_RECORD_COUNT: usize = 57;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
const ATTR_LOG_APPEND_TIME: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
/// KIP-534: the base timestamp holds the time after which the cleaner may remove the batch.
const ATTR_DELETE_HORIZON: i16 = 0x40;

/// Why a batch was refused; each maps to the Kafka error code Kafka returns for it.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is shorter than its header or its declared length")]
    Truncated,
    #[error("batch length field {0} is impossible")]
    BadLength(i32),
    #[error("record format magic {0} is not supported (only magic 2)")]
    OldMagic(i8),
    #[error("CRC32C mismatch")]
    BadCrc,
    #[error("record count {0} does not match lastOffsetDelta {1}")]
    BadCount(i32, i32),
    #[error("control batches may not be produced by clients")]
    Control,
    #[error("a batch with a producer id must carry a sequence")]
    NoSequence,
    #[error("batch of {0} bytes exceeds message.max.bytes")]
    TooLarge(usize),
    #[error("more than one record batch in a partition's produce data")]
    MultipleBatches,
    #[error("unsupported compression codec {0}")]
    BadCompression(i16),
    #[error("the records cannot be decoded (or decompress past the cap)")]
    Undecodable,
}

impl BatchError {
    /// The Kafka error for this problem.
    pub fn error(self) -> kafka_protocol::ResponseError {
        use kafka_protocol::ResponseError as E;
        match self {
            BatchError::Truncated | BatchError::BadLength(_) | BatchError::BadCrc | BatchError::Undecodable => {
                E::CorruptMessage
            }
            BatchError::TooLarge(_) => E::MessageTooLarge,
            BatchError::OldMagic(_) => E::UnsupportedForMessageFormat,
            BatchError::BadCount(..)
            | BatchError::Control
            | BatchError::NoSequence
            | BatchError::MultipleBatches
            | BatchError::BadCompression(_) => E::InvalidRecord,
        }
    }
}

/// A read-only view of one batch's header over a byte slice that holds at least the header.
#[derive(Clone, Copy)]
pub struct BatchHeader<'a> {
    bytes: &'a [u8],
}

fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn be_i64(b: &[u8], at: usize) -> i64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    i64::from_be_bytes(a)
}

impl<'a> BatchHeader<'a> {
    /// A view over `bytes`, which must hold at least a header; `None` otherwise.
    pub fn new(bytes: &'a [u8]) -> Option<Self> {
        (bytes.len() >= BATCH_HEADER_BYTES).then_some(Self { bytes })
    }

    pub fn base_offset(&self) -> Offset {
        be_i64(self.bytes, 0)
    }
    pub fn batch_length(&self) -> i32 {
        be_i32(self.bytes, OFFSET_BATCH_LENGTH)
    }
    /// Bytes of the whole batch, log overhead included (as stored), if the length is sane.
    pub fn total_bytes(&self) -> Option<usize> {
        let len = self.batch_length();
        let total = usize::try_from(len).ok()? + BATCH_LOG_OVERHEAD;
        (total >= BATCH_HEADER_BYTES).then_some(total)
    }
    pub fn leader_epoch(&self) -> i32 {
        be_i32(self.bytes, OFFSET_LEADER_EPOCH)
    }
    pub fn magic(&self) -> i8 {
        self.bytes[OFFSET_MAGIC] as i8
    }
    pub fn crc(&self) -> u32 {
        be_i32(self.bytes, OFFSET_CRC) as u32
    }
    pub fn attributes(&self) -> i16 {
        be_i16(self.bytes, OFFSET_ATTRIBUTES)
    }
    pub fn compression(&self) -> i16 {
        self.attributes() & ATTR_COMPRESSION_MASK
    }
    pub fn is_log_append_time(&self) -> bool {
        self.attributes() & ATTR_LOG_APPEND_TIME != 0
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }
    /// When the cleaner set one (KIP-534): the time after which it may remove this batch.
    pub fn delete_horizon(&self) -> Option<i64> {
        (self.attributes() & ATTR_DELETE_HORIZON != 0).then(|| self.base_timestamp())
    }
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(self.bytes, OFFSET_LAST_OFFSET_DELTA)
    }
    pub fn last_offset(&self) -> Offset {
        self.base_offset() + self.last_offset_delta() as i64
    }
    pub fn base_timestamp(&self) -> i64 {
        be_i64(self.bytes, OFFSET_BASE_TIMESTAMP)
    }
    pub fn max_timestamp(&self) -> i64 {
        be_i64(self.bytes, OFFSET_MAX_TIMESTAMP)
    }
    pub fn producer_id(&self) -> i64 {
        be_i64(self.bytes, OFFSET_PRODUCER_ID)
    }
    pub fn producer_epoch(&self) -> i16 {
        be_i16(self.bytes, OFFSET_PRODUCER_EPOCH)
    }
    pub fn base_sequence(&self) -> i32 {
        be_i32(self.bytes, OFFSET_BASE_SEQUENCE)
    }
    pub fn record_count(&self) -> i32 {
        be_i32(self.bytes, OFFSET_RECORD_COUNT)
    }
}

/// What a control batch's record marks (its key's type; Kafka's `ControlRecordType`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlType {
    /// The producer's transaction was aborted: its records since the transaction began are
    /// invisible to read_committed consumers.
    Abort,
    /// The producer's transaction was committed.
    Commit,
}

impl ControlType {
    fn code(self) -> i16 {
        match self {
            ControlType::Abort => 0,
            ControlType::Commit => 1,
        }
    }
}

impl BatchHeader<'_> {
    /// For a control batch whose bytes this view holds whole: what its record marks
    /// (`None` for other batches, an unknown type, or a record that cannot be decoded).
    pub fn control_type(&self) -> Option<ControlType> {
        self.marker().map(|(kind, _)| kind)
    }

    /// For a transaction marker whose bytes this view holds whole: what it marks and the
    /// coordinator epoch it carries (-1 when its value does not say).
    pub fn marker(&self) -> Option<(ControlType, i32)> {
        if !self.is_control() {
            return None;
        }
        let total = self.total_bytes()?;
        let mut bytes = Bytes::copy_from_slice(self.bytes.get(..total)?);
        let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut bytes).ok()?;
        let record = set.records.first()?;
        // The key: version (i16, 0), type (i16).
        let kind = match record.key.as_ref()?.get(2..4).map(|t| i16::from_be_bytes([t[0], t[1]])) {
            Some(0) => ControlType::Abort,
            Some(1) => ControlType::Commit,
            _ => return None,
        };
        // The value (EndTxnMarker): version (i16), coordinator epoch (i32).
        let coordinator_epoch = record
            .value
            .as_ref()
            .and_then(|v| v.get(2..6))
            .map_or(-1, |e| i32::from_be_bytes([e[0], e[1], e[2], e[3]]));
        Some((kind, coordinator_epoch))
    }
}

/// A transaction marker as the coordinator has it written (Kafka's `EndTxnMarker`): a
/// control batch of one record, transactional, with the producer's id and epoch, no
/// sequence, and the coordinator's epoch in the value. Offsets are stamped at append.
pub fn control_batch(
    producer_id: i64,
    producer_epoch: i16,
    coordinator_epoch: i32,
    kind: ControlType,
    timestamp: i64,
) -> Result<bytes::BytesMut, BatchError> {
    use kafka_protocol::messages::EndTxnMarker;
    use kafka_protocol::protocol::Encodable;
    use kafka_protocol::records::{Compression, Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let mut key = bytes::BytesMut::with_capacity(4);
    key.extend_from_slice(&0i16.to_be_bytes());
    key.extend_from_slice(&kind.code().to_be_bytes());
    let mut value = bytes::BytesMut::with_capacity(6);
    value.extend_from_slice(&0i16.to_be_bytes());
    EndTxnMarker::default()
        .with_coordinator_epoch(coordinator_epoch)
        .encode(&mut value, 0)
        .map_err(|_| BatchError::Undecodable)?;
    let record = Record {
        transactional: true,
        control: true,
        delete_horizon: false,
        partition_leader_epoch: -1,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: 0,
        sequence: -1,
        timestamp,
        key: Some(key.freeze()),
        value: Some(value.freeze()),
        headers: Default::default(),
    };
    let mut buf = bytes::BytesMut::new();
    RecordBatchEncoder::encode(
        &mut buf,
        [&record],
        &RecordEncodeOptions { version: 2, compression: Compression::None },
    )
    .map_err(|_| BatchError::Undecodable)?;
    Ok(buf)
}

/// Checks a whole batch (exactly `bytes`) as it arrives from a producer: length, magic, CRC,
/// record count. Returns the header view on success.
pub fn validate_produced(bytes: &[u8], batch_bytes_max: usize) -> Result<BatchHeader<'_>, BatchError> {
    if bytes.len() > OFFSET_MAGIC {
        let magic = bytes[OFFSET_MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(BatchError::OldMagic(magic));
        }
    }
    let header = BatchHeader::new(bytes).ok_or(BatchError::Truncated)?;
    let total = header.total_bytes().ok_or(BatchError::BadLength(header.batch_length()))?;
    if total > bytes.len() {
        return Err(BatchError::Truncated);
    }
    if total < bytes.len() {
        return Err(BatchError::MultipleBatches);
    }
    if total > batch_bytes_max {
        return Err(BatchError::TooLarge(total));
    }
    check_crc(bytes, &header)?;
    let count = header.record_count();
    if count < 1 || header.last_offset_delta() != count - 1 {
        return Err(BatchError::BadCount(count, header.last_offset_delta()));
    }
    // A record takes at least 7 bytes: a count the body cannot hold is a lie that would
    // skip offsets. Compressed bodies are not opened on the hot path, so for them the bound
    // is what the best codec could expand the body to.
    let body = total - BATCH_HEADER_BYTES;
    let records_max = if header.compression() == 0 {
        body / RECORD_BYTES_MIN
    } else {
        body.saturating_mul(EXPANSION_MAX) / RECORD_BYTES_MIN
    };
    if count as usize > records_max {
        return Err(BatchError::BadCount(count, header.last_offset_delta()));
    }
    if header.is_control() {
        return Err(BatchError::Control);
    }
    if header.producer_id() >= 0 && header.base_sequence() < 0 {
        return Err(BatchError::NoSequence);
    }
    if header.compression() > 4 {
        return Err(BatchError::BadCompression(header.compression()));
    }
    Ok(header)
}

/// Checks a stored batch read back from disk (recovery): length and CRC, nothing of the
/// producer's rules. `bytes` may run past the batch; returns the batch's total size.
pub fn validate_stored(bytes: &[u8]) -> Result<usize, BatchError> {
    let header = BatchHeader::new(bytes).ok_or(BatchError::Truncated)?;
    if header.magic() != MAGIC_V2 {
        return Err(BatchError::OldMagic(header.magic()));
    }
    let total = header.total_bytes().ok_or(BatchError::BadLength(header.batch_length()))?;
    if total > bytes.len() {
        return Err(BatchError::Truncated);
    }
    check_crc(&bytes[..total], &header)?;
    if header.record_count() < 0 || header.last_offset_delta() < 0 {
        return Err(BatchError::BadCount(header.record_count(), header.last_offset_delta()));
    }
    Ok(total)
}

fn check_crc(batch: &[u8], header: &BatchHeader<'_>) -> Result<(), BatchError> {
    if crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]) != header.crc() {
        return Err(BatchError::BadCrc);
    }
    Ok(())
}

/// Stamps the offsets the log assigned: base offset and leader epoch lie outside the CRC.
pub fn stamp_offsets(batch: &mut [u8], base_offset: Offset, leader_epoch: i32) {
    batch[0..8].copy_from_slice(&base_offset.to_be_bytes());
    batch[OFFSET_LEADER_EPOCH..OFFSET_LEADER_EPOCH + 4].copy_from_slice(&leader_epoch.to_be_bytes());
}

/// Switches a batch to LogAppendTime with `now_ms` as its max timestamp, as Kafka does for
/// topics with `message.timestamp.type=LogAppendTime`; the CRC covers both, so it is redone.
pub fn stamp_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attributes = be_i16(batch, OFFSET_ATTRIBUTES) | ATTR_LOG_APPEND_TIME;
    batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[OFFSET_MAX_TIMESTAMP..OFFSET_MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    redo_crc(batch);
}

/// Marks a batch removable by the cleaner after `horizon_ms` (KIP-534: the delete-horizon
/// flag, with the horizon in the base timestamp); the CRC covers both, so it is redone.
pub fn stamp_delete_horizon(batch: &mut [u8], horizon_ms: i64) {
    let attributes = be_i16(batch, OFFSET_ATTRIBUTES) | ATTR_DELETE_HORIZON;
    batch[OFFSET_ATTRIBUTES..OFFSET_ATTRIBUTES + 2].copy_from_slice(&attributes.to_be_bytes());
    batch[OFFSET_BASE_TIMESTAMP..OFFSET_BASE_TIMESTAMP + 8].copy_from_slice(&horizon_ms.to_be_bytes());
    redo_crc(batch);
}

/// Recomputes the CRC after a change to the bytes it covers (attributes onwards).
fn redo_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[OFFSET_ATTRIBUTES..]);
    batch[OFFSET_CRC..OFFSET_CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The leading whole batches of `bytes` that end below offset `end`.
pub fn below(bytes: Bytes, end: Offset) -> Bytes {
    let keep = iter_batches(&bytes)
        .take_while(|(_, h)| h.last_offset() < end)
        .map(|(pos, h)| pos + h.total_bytes().unwrap_or(0))
        .last()
        .unwrap_or(0);
    bytes.slice(..keep)
}

/// Walks the batches stored back to back in `bytes`, yielding `(position, header)` for each
/// complete batch (a partial batch at the end is left out).
pub fn iter_batches(bytes: &[u8]) -> impl Iterator<Item = (usize, BatchHeader<'_>)> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        let header = BatchHeader::new(bytes.get(pos..)?)?;
        let total = header.total_bytes()?;
        if pos + total > bytes.len() {
            return None;
        }
        let at = pos;
        pos += total;
        Some((at, header))
    })
}

/// Most bytes a batch may decompress to when its records are looked at (compacted topics'
/// key check).
const DECOMPRESSED_BYTES_MAX: usize = 64 << 20;

/// The indexes, within the batch, of its records that have no key (a compacted topic
/// refuses them: Kafka's INVALID_RECORD). Decodes the records, decompressing with a cap, so
/// only compacted topics pay for it.
pub fn records_without_key(batch: &Bytes) -> Result<Vec<i32>, BatchError> {
    let capped =
        |data: &mut Bytes, codec| crate::protocol::decompress::decompress_capped(data, codec, DECOMPRESSED_BYTES_MAX);
    let mut bytes = batch.clone();
    let set = kafka_protocol::records::RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(capped))
        .map_err(|_| BatchError::Undecodable)?;
    Ok(set.records.iter().enumerate().filter(|(_, r)| r.key.is_none()).map(|(i, _)| i as i32).collect())
}

/// A real batch of `count` records with `value_bytes`-byte values and keys `k<i>`, encoded
/// by kafka-protocol as a client would (for tests and benches).
pub fn sample_batch(
    count: usize,
    value_bytes: usize,
    compression: kafka_protocol::records::Compression,
) -> bytes::Bytes {
    use kafka_protocol::records::{Record, RecordBatchEncoder, RecordEncodeOptions, TimestampType};
    let records: Vec<Record> = (0..count)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol starts a new batch when offset - sequence changes; this
            // keeps one batch with the non-idempotent base sequence -1.
            sequence: i as i32 - 1,
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(bytes::Bytes::from(format!("k{i}"))),
            value: Some(bytes::Bytes::from(vec![b'v'; value_bytes])),
            headers: Default::default(),
        })
        .collect();
    let mut buf = bytes::BytesMut::new();
    // Encoding records we built ourselves cannot fail.
    #[allow(clippy::expect_used)]
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression }).expect("encode");
    buf.freeze()
}

#[cfg(test)]
pub mod tests {
    pub use super::sample_batch as make_batch;
    use super::*;
    use kafka_protocol::records::Compression;

    #[test]
    fn control_batches_say_what_they_mark() {
        for kind in [ControlType::Commit, ControlType::Abort] {
            let batch = control_batch(7, 3, 11, kind, 1_700_000_000_000).expect("encode");
            assert_eq!(validate_stored(&batch), Ok(batch.len()));
            let h = BatchHeader::new(&batch).expect("header");
            assert!(h.is_control() && h.is_transactional());
            assert_eq!((h.producer_id(), h.producer_epoch(), h.record_count()), (7, 3, 1));
            assert_eq!(h.control_type(), Some(kind));
            // Clients may not produce one.
            assert_eq!(validate_produced(&batch, 1 << 20).err(), Some(BatchError::Control));
        }
        let data = make_batch(2, 5, Compression::None);
        assert_eq!(BatchHeader::new(&data).expect("header").control_type(), None);
    }

    #[test]
    fn validates_and_reads_header() {
        let batch = make_batch(3, 10, Compression::None);
        let h = validate_produced(&batch, 1 << 20).expect("valid");
        assert_eq!(h.record_count(), 3);
        assert_eq!(h.last_offset_delta(), 2);
        assert_eq!(h.max_timestamp(), 1_700_000_000_002);
        assert_eq!(validate_stored(&batch), Ok(batch.len()));
    }

    #[test]
    fn rejects_bad_crc_length_magic_size() {
        let batch = make_batch(2, 10, Compression::None);
        let mut bad = batch.to_vec();
        let last = bad.len() - 1;
        bad[last] ^= 0xff;
        assert_eq!(validate_produced(&bad, 1 << 20).err(), Some(BatchError::BadCrc));
        assert_eq!(validate_produced(&batch[..40], 1 << 20).err(), Some(BatchError::Truncated));
        assert_eq!(validate_produced(&batch, 61).err(), Some(BatchError::TooLarge(batch.len())));
        let mut old = batch.to_vec();
        old[16] = 1;
        assert_eq!(validate_produced(&old, 1 << 20).err(), Some(BatchError::OldMagic(1)));
        let mut huge = batch.to_vec();
        huge[8..12].copy_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(validate_produced(&huge, 1 << 20).err(), Some(BatchError::Truncated));
        let mut negative = batch.to_vec();
        negative[8..12].copy_from_slice(&(-5i32).to_be_bytes());
        assert_eq!(validate_produced(&negative, 1 << 20).err(), Some(BatchError::BadLength(-5)));
        let mut two = batch.to_vec();
        two.extend_from_slice(&batch);
        assert_eq!(validate_produced(&two, 1 << 20).err(), Some(BatchError::MultipleBatches));
    }

    #[test]
    fn record_counts_the_body_cannot_hold_are_refused() {
        for compression in [Compression::None, Compression::Gzip] {
            let mut b = make_batch(2, 10, compression).to_vec();
            b[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
            b[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
            let crc = crc32c::crc32c(&b[21..]);
            b[17..21].copy_from_slice(&crc.to_be_bytes());
            assert_eq!(validate_produced(&b, 1 << 20).err(), Some(BatchError::BadCount(i32::MAX, i32::MAX - 1)));
        }
    }

    #[test]
    fn stamping_keeps_crc_valid() {
        let batch = make_batch(2, 10, Compression::None);
        let mut b = batch.to_vec();
        stamp_offsets(&mut b, 1234, 7);
        let h = validate_produced(&b, 1 << 20).expect("still valid");
        assert_eq!(h.base_offset(), 1234);
        assert_eq!(h.leader_epoch(), 7);
        stamp_log_append_time(&mut b, 42);
        let h = validate_produced(&b, 1 << 20).expect("still valid");
        assert_eq!(h.max_timestamp(), 42);
        assert_eq!(h.attributes() & ATTR_LOG_APPEND_TIME, ATTR_LOG_APPEND_TIME);
    }

    #[test]
    fn iterates_back_to_back_batches() {
        let a = make_batch(2, 5, Compression::None);
        let b = make_batch(1, 5, Compression::None);
        let mut all = a.to_vec();
        all.extend_from_slice(&b);
        all.extend_from_slice(&b[..30]);
        let found: Vec<usize> = iter_batches(&all).map(|(pos, _)| pos).collect();
        assert_eq!(found, vec![0, a.len()]);
    }
}
