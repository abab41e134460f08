//! The records of `__transaction_state`, in Kafka's own layout (`TransactionLogKey` v0,
//! `TransactionLogValue` v0) so Kafka's tools can read the topic. Big-endian; strings as
//! i16 length + UTF-8; arrays as i32 count.
//!
//! | part  | fields |
//! |-------|--------|
//! | key   | version (0), transactional id |
//! | value | version (0), producer id, producer epoch, transaction timeout ms, status (i8), partitions (nullable array of topic + partition ids), last update ms, start ms |
//!
//! A null value is a tombstone: the transactional id expired.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::records::RecordBatchDecoder;

use super::state::{TxnState, TxnValue};
use crate::group::records::{get_i16, get_i32, get_i64, get_opt_str, get_str, need, put_str, GroupRecordError};

/// Errors decoding `__transaction_state` (the same kinds as `__consumer_offsets`').
pub type TxnRecordError = GroupRecordError;

pub fn encode_key(transactional_id: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + transactional_id.len());
    b.put_i16(0);
    put_str(&mut b, transactional_id);
    b.freeze()
}

pub fn encode_value(v: &TxnValue) -> Bytes {
    let mut b = BytesMut::with_capacity(64 + v.partitions.len() * 16);
    b.put_i16(0);
    b.put_i64(v.producer_id);
    b.put_i16(v.producer_epoch);
    b.put_i32(v.timeout_ms);
    b.put_i8(v.state.code());
    // Partitions grouped by topic, as Kafka writes them.
    let mut topics: Vec<(&str, Vec<i32>)> = Vec::new();
    for (topic, partition) in &v.partitions {
        match topics.last_mut() {
            Some((t, ps)) if *t == topic.as_str() => ps.push(*partition),
            _ => topics.push((topic.as_str(), vec![*partition])),
        }
    }
    b.put_i32(topics.len() as i32);
    for (topic, partitions) in topics {
        put_str(&mut b, topic);
        b.put_i32(partitions.len() as i32);
        for p in partitions {
            b.put_i32(p);
        }
    }
    b.put_i64(v.last_update_ms);
    b.put_i64(v.start_ms);
    b.freeze()
}

pub fn decode_key(mut b: &[u8]) -> Result<String, TxnRecordError> {
    let version = get_i16(&mut b)?;
    if version != 0 {
        return Err(TxnRecordError::UnknownVersion { what: "transaction key", version });
    }
    get_str(&mut b)
}

pub fn decode_value(mut b: &[u8]) -> Result<TxnValue, TxnRecordError> {
    let version = get_i16(&mut b)?;
    if version != 0 {
        return Err(TxnRecordError::UnknownVersion { what: "transaction value", version });
    }
    let producer_id = get_i64(&mut b)?;
    let producer_epoch = get_i16(&mut b)?;
    let timeout_ms = get_i32(&mut b)?;
    need(b, 1)?;
    let code = b.get_i8();
    let state = TxnState::from_code(code)
        .ok_or(TxnRecordError::UnknownVersion { what: "transaction status", version: i16::from(code) })?;
    let mut partitions = std::collections::BTreeSet::new();
    let topics = get_i32(&mut b)?;
    for _ in 0..topics.max(0) {
        let topic = get_opt_str(&mut b)?.unwrap_or_default();
        let count = get_i32(&mut b)?;
        // Each partition id takes 4 bytes: a count past what is there is a lie.
        need(b, count.max(0) as usize * 4)?;
        for _ in 0..count.max(0) {
            partitions.insert((topic.clone(), b.get_i32()));
        }
    }
    let last_update_ms = get_i64(&mut b)?;
    let start_ms = get_i64(&mut b)?;
    Ok(TxnValue { producer_id, producer_epoch, timeout_ms, state, partitions, last_update_ms, start_ms })
}

/// Every record of stored batches, in log order: the transactional id and its value
/// (`None`: tombstone). Records that cannot be decoded are counted, not fatal.
pub fn decode_batches(mut bytes: Bytes) -> (Vec<(String, Option<TxnValue>)>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    while bytes.has_remaining() {
        let Ok(set) = RecordBatchDecoder::decode(&mut bytes) else {
            skipped += 1;
            break;
        };
        for r in set.records.into_iter().filter(|r| !r.control) {
            let key = r.key.as_deref().map(decode_key);
            let value = r.value.as_deref().map(decode_value).transpose();
            match (key, value) {
                (Some(Ok(id)), Ok(v)) => out.push((id, v)),
                _ => skipped += 1,
            }
        }
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_round_trip() {
        assert_eq!(decode_key(&encode_key("app-1")).expect("key"), "app-1");
        let v = TxnValue {
            producer_id: 4000,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::PrepareCommit,
            partitions: [("a".to_string(), 0), ("a".to_string(), 2), ("b".to_string(), 1)].into_iter().collect(),
            last_update_ms: 17,
            start_ms: 11,
        };
        let bytes = encode_value(&v);
        // Kafka's layout: version, id, epoch, timeout, status, 2 topics.
        assert_eq!(&bytes[..2], &[0, 0]);
        assert_eq!(bytes[16], 2, "PrepareCommit is status 2");
        assert_eq!(decode_value(&bytes).expect("value"), v);
        let batch = crate::group::records::encode_batch(
            &[(encode_key("app-1"), Some(bytes.clone())), (encode_key("gone"), None)],
            5,
        )
        .expect("batch");
        let (records, skipped) = decode_batches(batch);
        assert_eq!(records, vec![("app-1".to_string(), Some(v)), ("gone".to_string(), None)]);
        assert_eq!(skipped, 0);
    }

    #[test]
    fn hostile_values_are_errors() {
        let mut bad = BytesMut::new();
        bad.put_i16(0);
        bad.put_i64(1);
        bad.put_i16(0);
        bad.put_i32(100);
        bad.put_i8(1);
        bad.put_i32(1);
        put_str(&mut bad, "t");
        bad.put_i32(i32::MAX);
        assert!(decode_value(&bad).is_err());
        assert!(decode_value(&[0, 0, 1]).is_err());
        assert!(decode_value(&[0, 9]).is_err());
    }
}
