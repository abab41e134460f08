//! The records of `__consumer_offsets`, in Kafka's own layout so Kafka's tools can read the
//! topic: a key (schema version, then fields) and a value (schema version, then fields),
//! all big-endian, strings as i16 length + UTF-8, bytes as i32 length.
//!
//! | key version | key                        | value (version written)                         |
//! |-------------|----------------------------|-------------------------------------------------|
//! | 0, 1        | group, topic, partition    | offset commit (v3): offset, leader epoch, metadata, commit time |
//! | 2           | group                      | group metadata (v3): protocol, generation, leader, members |
//!
//! A null value is a tombstone: the key's earlier records no longer count.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::{
    Compression, Record, RecordBatchDecoder, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum GroupRecordError {
    #[error("record is truncated")]
    Truncated,
    #[error("string is not UTF-8")]
    NotUtf8,
    #[error("unknown {what} schema version {version}")]
    UnknownVersion { what: &'static str, version: i16 },
    #[error("record has no key")]
    NoKey,
    #[error("cannot decode batch: {0}")]
    Batch(String),
}

/// What a `__consumer_offsets` key names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GroupKey {
    Offset { group: String, topic: String, partition: i32 },
    Group { group: String },
}

impl GroupKey {
    pub fn group(&self) -> &str {
        match self {
            GroupKey::Offset { group, .. } | GroupKey::Group { group } => group,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: String,
    pub commit_timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberValue {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub rebalance_timeout_ms: i32,
    pub session_timeout_ms: i32,
    /// The member's metadata for the chosen protocol (opaque to the broker).
    pub subscription: Bytes,
    pub assignment: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct GroupValue {
    pub protocol_type: String,
    pub generation: i32,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    pub state_timestamp: i64,
    pub members: Vec<MemberValue>,
}

/// One decoded record: a key and its value (`None`: tombstone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupRecord {
    Offset { key: GroupKey, value: Option<OffsetValue> },
    Group { key: GroupKey, value: Option<GroupValue> },
}

pub fn encode_key(key: &GroupKey) -> Bytes {
    let mut b = BytesMut::with_capacity(64);
    match key {
        GroupKey::Offset { group, topic, partition } => {
            b.put_i16(1);
            put_str(&mut b, group);
            put_str(&mut b, topic);
            b.put_i32(*partition);
        }
        GroupKey::Group { group } => {
            b.put_i16(2);
            put_str(&mut b, group);
        }
    }
    b.freeze()
}

pub fn encode_offset(v: &OffsetValue) -> Bytes {
    let mut b = BytesMut::with_capacity(32 + v.metadata.len());
    b.put_i16(3);
    b.put_i64(v.offset);
    b.put_i32(v.leader_epoch);
    put_str(&mut b, &v.metadata);
    b.put_i64(v.commit_timestamp);
    b.freeze()
}

pub fn encode_group(v: &GroupValue) -> Bytes {
    let mut b = BytesMut::with_capacity(128);
    b.put_i16(3);
    put_str(&mut b, &v.protocol_type);
    b.put_i32(v.generation);
    put_opt_str(&mut b, v.protocol.as_deref());
    put_opt_str(&mut b, v.leader.as_deref());
    b.put_i64(v.state_timestamp);
    b.put_i32(v.members.len() as i32);
    for m in &v.members {
        put_str(&mut b, &m.member_id);
        put_opt_str(&mut b, m.instance_id.as_deref());
        put_str(&mut b, &m.client_id);
        put_str(&mut b, &m.client_host);
        b.put_i32(m.rebalance_timeout_ms);
        b.put_i32(m.session_timeout_ms);
        b.put_i32(m.subscription.len() as i32);
        b.put_slice(&m.subscription);
        b.put_i32(m.assignment.len() as i32);
        b.put_slice(&m.assignment);
    }
    b.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Result<GroupKey, GroupRecordError> {
    let version = get_i16(&mut b)?;
    match version {
        0 | 1 => Ok(GroupKey::Offset { group: get_str(&mut b)?, topic: get_str(&mut b)?, partition: get_i32(&mut b)? }),
        2 => Ok(GroupKey::Group { group: get_str(&mut b)? }),
        _ => Err(GroupRecordError::UnknownVersion { what: "key", version }),
    }
}

pub fn decode_offset(mut b: &[u8]) -> Result<OffsetValue, GroupRecordError> {
    let version = get_i16(&mut b)?;
    let offset = get_i64(&mut b)?;
    match version {
        // v0: offset, metadata, timestamp; v1: + expire timestamp; v2: commit timestamp only.
        0..=2 => {
            let metadata = get_str(&mut b)?;
            let commit_timestamp = get_i64(&mut b)?;
            Ok(OffsetValue { offset, leader_epoch: -1, metadata, commit_timestamp })
        }
        3 => {
            let leader_epoch = get_i32(&mut b)?;
            let metadata = get_str(&mut b)?;
            let commit_timestamp = get_i64(&mut b)?;
            Ok(OffsetValue { offset, leader_epoch, metadata, commit_timestamp })
        }
        _ => Err(GroupRecordError::UnknownVersion { what: "offset value", version }),
    }
}

pub fn decode_group(mut b: &[u8]) -> Result<GroupValue, GroupRecordError> {
    let version = get_i16(&mut b)?;
    if version != 3 {
        return Err(GroupRecordError::UnknownVersion { what: "group value", version });
    }
    let protocol_type = get_str(&mut b)?;
    let generation = get_i32(&mut b)?;
    let protocol = get_opt_str(&mut b)?;
    let leader = get_opt_str(&mut b)?;
    let state_timestamp = get_i64(&mut b)?;
    let count = get_i32(&mut b)?.max(0) as usize;
    // Each member takes at least 28 bytes: never trust the count beyond what is there.
    let mut members = Vec::with_capacity(count.min(b.len() / 28));
    for _ in 0..count {
        members.push(MemberValue {
            member_id: get_str(&mut b)?,
            instance_id: get_opt_str(&mut b)?,
            client_id: get_str(&mut b)?,
            client_host: get_str(&mut b)?,
            rebalance_timeout_ms: get_i32(&mut b)?,
            session_timeout_ms: get_i32(&mut b)?,
            subscription: get_bytes(&mut b)?,
            assignment: get_bytes(&mut b)?,
        });
    }
    Ok(GroupValue { protocol_type, generation, protocol, leader, state_timestamp, members })
}

/// Decodes one stored record.
pub fn decode_record(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<GroupRecord, GroupRecordError> {
    let key = decode_key(key.ok_or(GroupRecordError::NoKey)?)?;
    Ok(match key {
        GroupKey::Offset { .. } => GroupRecord::Offset { value: value.map(decode_offset).transpose()?, key },
        GroupKey::Group { .. } => GroupRecord::Group { value: value.map(decode_group).transpose()?, key },
    })
}

/// One uncompressed batch of `(key, value)` records, ready to append.
pub fn encode_batch(records: &[(Bytes, Option<Bytes>)], timestamp: i64) -> Result<Bytes, GroupRecordError> {
    encode_batch_as(records, timestamp, None)
}

/// One uncompressed batch of `(key, value)` records; with `producer` (id, epoch), a
/// transactional batch of that producer (offsets committed in a transaction: they count
/// only once its commit marker follows). Its sequence is -1: the coordinator writes it, not
/// the producer, so the partition's idempotence check does not apply to it.
pub fn encode_batch_as(
    records: &[(Bytes, Option<Bytes>)],
    timestamp: i64,
    producer: Option<(i64, i16)>,
) -> Result<Bytes, GroupRecordError> {
    let (producer_id, producer_epoch) = producer.unwrap_or((-1, -1));
    let records: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, (key, value))| Record {
            transactional: producer.is_some(),
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol keeps records in one batch while offset - sequence is constant.
            sequence: i as i32 - 1,
            timestamp,
            key: Some(key.clone()),
            value: value.clone(),
            headers: Default::default(),
        })
        .collect();
    let mut buf = BytesMut::new();
    RecordBatchEncoder::encode(&mut buf, &records, &RecordEncodeOptions { version: 2, compression: Compression::None })
        .map_err(|e| GroupRecordError::Batch(e.to_string()))?;
    Ok(buf.freeze())
}

/// Decodes every record of stored batches (as a fetch returns them), in log order, with
/// each record's offset.
pub fn decode_batches(mut bytes: Bytes) -> Result<Vec<(i64, GroupRecord)>, GroupRecordError> {
    let mut out = Vec::new();
    while bytes.has_remaining() {
        let set = RecordBatchDecoder::decode(&mut bytes).map_err(|e| GroupRecordError::Batch(e.to_string()))?;
        for r in set.records {
            if r.control {
                continue;
            }
            out.push((r.offset, decode_record(r.key.as_deref(), r.value.as_deref())?));
        }
    }
    Ok(out)
}

/// Kafka's placement of a group on a `__consumer_offsets` partition:
/// `Utils.abs(groupId.hashCode) % partitions`, with Java's `String.hashCode` and Kafka's
/// `abs` (which maps `i32::MIN` to 0).
pub fn partition_for(group: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for unit in group.encode_utf16() {
        h = h.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

pub(crate) fn put_str(b: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(i16::MAX as usize)];
    b.put_i16(s.len() as i16);
    b.put_slice(s);
}

fn put_opt_str(b: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => put_str(b, s),
        None => b.put_i16(-1),
    }
}

pub(crate) fn need(b: &[u8], n: usize) -> Result<(), GroupRecordError> {
    if b.len() < n {
        Err(GroupRecordError::Truncated)
    } else {
        Ok(())
    }
}

pub(crate) fn get_i16(b: &mut &[u8]) -> Result<i16, GroupRecordError> {
    need(b, 2)?;
    Ok(b.get_i16())
}

pub(crate) fn get_i32(b: &mut &[u8]) -> Result<i32, GroupRecordError> {
    need(b, 4)?;
    Ok(b.get_i32())
}

pub(crate) fn get_i64(b: &mut &[u8]) -> Result<i64, GroupRecordError> {
    need(b, 8)?;
    Ok(b.get_i64())
}

pub(crate) fn get_opt_str(b: &mut &[u8]) -> Result<Option<String>, GroupRecordError> {
    let len = get_i16(b)?;
    if len < 0 {
        return Ok(None);
    }
    let len = len as usize;
    need(b, len)?;
    let s = std::str::from_utf8(&b[..len]).map_err(|_| GroupRecordError::NotUtf8)?.to_string();
    b.advance(len);
    Ok(Some(s))
}

pub(crate) fn get_str(b: &mut &[u8]) -> Result<String, GroupRecordError> {
    Ok(get_opt_str(b)?.unwrap_or_default())
}

fn get_bytes(b: &mut &[u8]) -> Result<Bytes, GroupRecordError> {
    let len = get_i32(b)?;
    if len < 0 {
        return Ok(Bytes::new());
    }
    let len = len as usize;
    need(b, len)?;
    let out = Bytes::copy_from_slice(&b[..len]);
    b.advance(len);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        let k = GroupKey::Offset { group: "g".into(), topic: "t".into(), partition: 3 };
        assert_eq!(decode_key(&encode_key(&k)).expect("key"), k);
        let v = OffsetValue { offset: 42, leader_epoch: 0, metadata: "m".into(), commit_timestamp: 7 };
        assert_eq!(decode_offset(&encode_offset(&v)).expect("offset"), v);
        let g = GroupValue {
            protocol_type: "consumer".into(),
            generation: 5,
            protocol: Some("range".into()),
            leader: Some("m1".into()),
            state_timestamp: 9,
            members: vec![MemberValue {
                member_id: "m1".into(),
                instance_id: Some("i1".into()),
                client_id: "c".into(),
                client_host: "/127.0.0.1".into(),
                rebalance_timeout_ms: 300_000,
                session_timeout_ms: 10_000,
                subscription: Bytes::from_static(b"sub"),
                assignment: Bytes::from_static(b"asg"),
            }],
        };
        assert_eq!(decode_group(&encode_group(&g)).expect("group"), g);
    }

    #[test]
    fn batches_round_trip_with_tombstones() {
        let k = encode_key(&GroupKey::Group { group: "g".into() });
        let batch = encode_batch(&[(k.clone(), None)], 1).expect("batch");
        let records = decode_batches(batch).expect("decode");
        assert_eq!(records, vec![(0, GroupRecord::Group { key: GroupKey::Group { group: "g".into() }, value: None })]);
    }

    #[test]
    fn truncated_and_hostile_input_is_an_error() {
        let g = encode_group(&GroupValue { members: vec![MemberValue::default()], ..Default::default() });
        for cut in 0..g.len() {
            assert!(decode_group(&g[..cut]).is_err(), "cut at {cut}");
        }
        // A member count of 2^31-1 with no members behind it.
        let mut b = BytesMut::new();
        b.put_i16(3);
        b.put_i16(0);
        b.put_i32(0);
        b.put_i16(-1);
        b.put_i16(-1);
        b.put_i64(0);
        b.put_i32(i32::MAX);
        assert!(decode_group(&b).is_err());
    }

    #[test]
    fn placement_matches_kafka() {
        assert_eq!(partition_for("", 50), 0);
        let h = "test".encode_utf16().fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(u as i32));
        assert_eq!(h, 3_556_498); // "test".hashCode() in Java
        assert_eq!(partition_for("test", 50), 3_556_498 % 50);
        // Negative hashes: Kafka takes the absolute value (not a bit mask).
        assert_eq!(partition_for("analytics", 50), 10);
        assert_eq!(partition_for("payments-consumer-group", 50), 0);
        assert_eq!(partition_for("orders-service", 50), 17);
    }
}
