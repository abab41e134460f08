//! Metadata records: every change to topics is one of these, appended to the metadata log
//! and applied to the image. Applying the same records in the same order gives the same
//! image, which is what lets a Raft quorum replicate them later.
//!
//! Encoded as FlatBuffers (schema: `schema/metadata.fbs`; the generated code is committed
//! and rebuilt by `scripts/gen-flatbuffers.sh`). Decoding verifies the buffer first.

use std::collections::BTreeMap;

use flatbuffers::FlatBufferBuilder;
use thiserror::Error;
use uuid::Uuid;

#[allow(unsafe_code, clippy::all, clippy::unwrap_used, unused_imports, mismatched_lifetime_syntaxes)]
#[path = "schema/metadata_generated.rs"]
mod generated;

use generated::weir::metadata as fb;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataRecord {
    /// A topic was created (or, with the same id, replaced).
    Topic { name: String, id: Uuid, partitions: i32, configs: BTreeMap<String, String> },
    /// A topic was deleted.
    RemoveTopic { id: Uuid },
    /// Producer ids below `next_producer_id` have been handed out.
    ProducerIds { next_producer_id: i64 },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("metadata record is not a valid FlatBuffer: {0}")]
    Invalid(String),
    #[error("metadata record has an unknown payload type {0}")]
    UnknownType(u8),
}

fn to_fb_uuid(id: &Uuid) -> fb::Uuid {
    let (hi, lo) = id.as_u64_pair();
    fb::Uuid::new(hi, lo)
}

fn from_fb_uuid(id: &fb::Uuid) -> Uuid {
    Uuid::from_u64_pair(id.hi(), id.lo())
}

impl MetadataRecord {
    pub fn encode(&self) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let (payload_type, payload) = match self {
            MetadataRecord::Topic { name, id, partitions, configs } => {
                let name = fbb.create_string(name);
                let entries: Vec<_> = configs
                    .iter()
                    .map(|(k, v)| {
                        let key = Some(fbb.create_string(k));
                        let value = Some(fbb.create_string(v));
                        fb::ConfigEntry::create(&mut fbb, &fb::ConfigEntryArgs { key, value })
                    })
                    .collect();
                let configs = Some(fbb.create_vector(&entries));
                let id = to_fb_uuid(id);
                let args = fb::TopicRecordArgs { name: Some(name), id: Some(&id), partitions: *partitions, configs };
                (fb::Payload::TopicRecord, fb::TopicRecord::create(&mut fbb, &args).as_union_value())
            }
            MetadataRecord::RemoveTopic { id } => {
                let id = to_fb_uuid(id);
                let args = fb::RemoveTopicRecordArgs { id: Some(&id) };
                (fb::Payload::RemoveTopicRecord, fb::RemoveTopicRecord::create(&mut fbb, &args).as_union_value())
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                let args = fb::ProducerIdsRecordArgs { next_producer_id: *next_producer_id };
                (fb::Payload::ProducerIdsRecord, fb::ProducerIdsRecord::create(&mut fbb, &args).as_union_value())
            }
        };
        let root =
            fb::MetadataRecord::create(&mut fbb, &fb::MetadataRecordArgs { payload_type, payload: Some(payload) });
        fbb.finish(root, None);
        fbb.finished_data().to_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<MetadataRecord, RecordError> {
        let record = fb::root_as_metadata_record(bytes).map_err(|e| RecordError::Invalid(e.to_string()))?;
        if let Some(t) = record.payload_as_topic_record() {
            let configs = t
                .configs()
                .map(|c| c.iter().map(|e| (e.key().to_string(), e.value().to_string())).collect())
                .unwrap_or_default();
            return Ok(MetadataRecord::Topic {
                name: t.name().to_string(),
                id: from_fb_uuid(t.id()),
                partitions: t.partitions(),
                configs,
            });
        }
        if let Some(r) = record.payload_as_remove_topic_record() {
            return Ok(MetadataRecord::RemoveTopic { id: from_fb_uuid(r.id()) });
        }
        if let Some(r) = record.payload_as_producer_ids_record() {
            return Ok(MetadataRecord::ProducerIds { next_producer_id: r.next_producer_id() });
        }
        Err(RecordError::UnknownType(record.payload_type().0))
    }
}

/// Encodes records as one metadata-log entry: `length u32 | record` each.
pub fn encode_records(records: &[MetadataRecord]) -> Vec<u8> {
    let mut out = Vec::new();
    for r in records {
        let body = r.encode();
        out.extend_from_slice(&(body.len() as u32).to_be_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// Decodes an entry written by [`encode_records`].
pub fn decode_records(mut bytes: &[u8]) -> Result<Vec<MetadataRecord>, RecordError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(RecordError::Invalid("truncated record length".into()));
        };
        let len = u32::from_be_bytes(*len) as usize;
        let Some(body) = rest.get(..len) else { return Err(RecordError::Invalid("truncated record".into())) };
        out.push(MetadataRecord::decode(body)?);
        bytes = &rest[len..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_carry_several_records_and_refuse_truncation() {
        let records = vec![
            MetadataRecord::RemoveTopic { id: Uuid::new_v4() },
            MetadataRecord::ProducerIds { next_producer_id: 42 },
        ];
        let bytes = encode_records(&records);
        assert_eq!(decode_records(&bytes), Ok(records));
        assert!(decode_records(&bytes[..bytes.len() - 1]).is_err());
        assert_eq!(decode_records(&[]), Ok(Vec::new()));
    }

    #[test]
    fn round_trips() {
        let records = [
            MetadataRecord::Topic {
                name: "orders".into(),
                id: Uuid::new_v4(),
                partitions: 6,
                configs: [("cleanup.policy".to_string(), "delete".to_string())].into(),
            },
            MetadataRecord::RemoveTopic { id: Uuid::new_v4() },
            MetadataRecord::ProducerIds { next_producer_id: 4000 },
        ];
        for r in records {
            assert_eq!(MetadataRecord::decode(&r.encode()), Ok(r.clone()));
            let enc = r.encode();
            assert!(matches!(MetadataRecord::decode(&enc[..enc.len() / 2]), Err(RecordError::Invalid(_))));
        }
        assert!(matches!(MetadataRecord::decode(&[9, 0, 0]), Err(RecordError::Invalid(_))));
    }
}
