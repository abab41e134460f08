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
    /// A topic was created (or, with the same id, replaced). `replicas[p]` are partition
    /// `p`'s brokers, the preferred leader first; empty in records from before the cluster.
    Topic { name: String, id: Uuid, partitions: i32, configs: BTreeMap<String, String>, replicas: Vec<Vec<i32>> },
    /// A topic was deleted.
    RemoveTopic { id: Uuid },
    /// Producer ids below `next_producer_id` have been handed out.
    ProducerIds { next_producer_id: i64 },
    /// A broker registered, fenced, in a new `epoch`.
    Broker(BrokerRegistration),
    /// A broker was fenced or unfenced in its registration `epoch`.
    BrokerFence { id: i32, epoch: i64, fenced: bool },
    /// A partition's leadership, whole (see [`PartitionChange`]).
    PartitionChange(PartitionChange),
    /// A config of a topic or broker was set, or removed (`value: None`).
    Config { resource: ConfigResource, name: String, value: Option<String> },
}

/// What a config belongs to (Kafka's config resources).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ConfigResource {
    Topic(String),
    /// One broker's own dynamic configs, or (`None`) the cluster-wide default of every broker.
    Broker(Option<i32>),
}

impl ConfigResource {
    /// Kafka's resource type codes.
    pub const TOPIC: i8 = 2;
    pub const BROKER: i8 = 4;

    /// From a request's resource type and name; `None` for types and names Weir has no
    /// configs for.
    pub fn from_wire(resource_type: i8, name: &str) -> Option<ConfigResource> {
        match resource_type {
            Self::TOPIC => Some(ConfigResource::Topic(name.to_string())),
            Self::BROKER if name.is_empty() => Some(ConfigResource::Broker(None)),
            Self::BROKER => name.parse().ok().filter(|id: &i32| *id >= 0).map(|id| ConfigResource::Broker(Some(id))),
            _ => None,
        }
    }

    pub fn wire_type(&self) -> i8 {
        match self {
            ConfigResource::Topic(_) => Self::TOPIC,
            ConfigResource::Broker(_) => Self::BROKER,
        }
    }

    pub fn wire_name(&self) -> String {
        match self {
            ConfigResource::Topic(name) => name.clone(),
            ConfigResource::Broker(None) => String::new(),
            ConfigResource::Broker(Some(id)) => id.to_string(),
        }
    }
}

/// A partition's leader, leader epoch, partition epoch and in-sync replicas, as decided by
/// the active controller. Applied only when `partition_epoch` is newer than the image's, so
/// a change decided on an older image never undoes a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionChange {
    pub topic_id: Uuid,
    pub partition: i32,
    /// -1: no leader (offline).
    pub leader: i32,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

/// What a broker registers with: who it is and where clients reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    pub epoch: i64,
    /// Random per process start: a registration from a new incarnation replaces the old one.
    pub incarnation: Uuid,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
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
            MetadataRecord::Topic { name, id, partitions, configs, replicas } => {
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
                let replication_factor = replicas.first().map_or(0, |r| r.len() as i16);
                let flat: Vec<i32> = replicas.iter().flatten().copied().collect();
                let replicas = (!flat.is_empty()).then(|| fbb.create_vector(&flat));
                let args = fb::TopicRecordArgs {
                    name: Some(name),
                    id: Some(&id),
                    partitions: *partitions,
                    configs,
                    replication_factor,
                    replicas,
                };
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
            MetadataRecord::Broker(b) => {
                let host = Some(fbb.create_string(&b.host));
                let rack = b.rack.as_ref().map(|r| fbb.create_string(r));
                let incarnation = to_fb_uuid(&b.incarnation);
                let args = fb::BrokerRecordArgs {
                    id: b.id,
                    epoch: b.epoch,
                    incarnation: Some(&incarnation),
                    host,
                    port: i32::from(b.port),
                    rack,
                };
                (fb::Payload::BrokerRecord, fb::BrokerRecord::create(&mut fbb, &args).as_union_value())
            }
            MetadataRecord::BrokerFence { id, epoch, fenced } => {
                let args = fb::BrokerFenceRecordArgs { id: *id, epoch: *epoch, fenced: *fenced };
                (fb::Payload::BrokerFenceRecord, fb::BrokerFenceRecord::create(&mut fbb, &args).as_union_value())
            }
            MetadataRecord::PartitionChange(c) => {
                let topic_id = to_fb_uuid(&c.topic_id);
                let isr = Some(fbb.create_vector(&c.isr));
                let args = fb::PartitionChangeRecordArgs {
                    topic_id: Some(&topic_id),
                    partition: c.partition,
                    leader: c.leader,
                    leader_epoch: c.leader_epoch,
                    partition_epoch: c.partition_epoch,
                    isr,
                };
                let record = fb::PartitionChangeRecord::create(&mut fbb, &args);
                (fb::Payload::PartitionChangeRecord, record.as_union_value())
            }
            MetadataRecord::Config { resource, name, value } => {
                let resource_name = Some(fbb.create_string(&resource.wire_name()));
                let name = Some(fbb.create_string(name));
                let value = value.as_ref().map(|v| fbb.create_string(v));
                let args = fb::ConfigRecordArgs { resource_type: resource.wire_type(), resource_name, name, value };
                (fb::Payload::ConfigRecord, fb::ConfigRecord::create(&mut fbb, &args).as_union_value())
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
            let rf = t.replication_factor().max(0) as usize;
            let flat: Vec<i32> = t.replicas().map(|r| r.iter().collect()).unwrap_or_default();
            let replicas = if rf == 0 || flat.is_empty() {
                Vec::new()
            } else if flat.len() == rf * t.partitions().max(0) as usize {
                flat.chunks(rf).map(<[i32]>::to_vec).collect()
            } else {
                return Err(RecordError::Invalid(format!(
                    "topic {}: {} replicas for {} partitions of factor {rf}",
                    t.name(),
                    flat.len(),
                    t.partitions()
                )));
            };
            return Ok(MetadataRecord::Topic {
                name: t.name().to_string(),
                id: from_fb_uuid(t.id()),
                partitions: t.partitions(),
                configs,
                replicas,
            });
        }
        if let Some(b) = record.payload_as_broker_record() {
            let port =
                u16::try_from(b.port()).map_err(|_| RecordError::Invalid(format!("broker port {}", b.port())))?;
            return Ok(MetadataRecord::Broker(BrokerRegistration {
                id: b.id(),
                epoch: b.epoch(),
                incarnation: from_fb_uuid(b.incarnation()),
                host: b.host().to_string(),
                port,
                rack: b.rack().map(str::to_string),
            }));
        }
        if let Some(f) = record.payload_as_broker_fence_record() {
            return Ok(MetadataRecord::BrokerFence { id: f.id(), epoch: f.epoch(), fenced: f.fenced() });
        }
        if let Some(c) = record.payload_as_partition_change_record() {
            return Ok(MetadataRecord::PartitionChange(PartitionChange {
                topic_id: from_fb_uuid(c.topic_id()),
                partition: c.partition(),
                leader: c.leader(),
                leader_epoch: c.leader_epoch(),
                partition_epoch: c.partition_epoch(),
                isr: c.isr().map(|v| v.iter().collect()).unwrap_or_default(),
            }));
        }
        if let Some(r) = record.payload_as_remove_topic_record() {
            return Ok(MetadataRecord::RemoveTopic { id: from_fb_uuid(r.id()) });
        }
        if let Some(c) = record.payload_as_config_record() {
            let resource = ConfigResource::from_wire(c.resource_type(), c.resource_name()).ok_or_else(|| {
                RecordError::Invalid(format!("config resource {} {:?}", c.resource_type(), c.resource_name()))
            })?;
            return Ok(MetadataRecord::Config {
                resource,
                name: c.name().to_string(),
                value: c.value().map(str::to_string),
            });
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
                replicas: vec![vec![1, 2], vec![2, 3], vec![3, 1], vec![1, 3], vec![2, 1], vec![3, 2]],
            },
            MetadataRecord::Topic {
                name: "legacy".into(),
                id: Uuid::new_v4(),
                partitions: 2,
                configs: BTreeMap::new(),
                replicas: Vec::new(),
            },
            MetadataRecord::RemoveTopic { id: Uuid::new_v4() },
            MetadataRecord::ProducerIds { next_producer_id: 4000 },
            MetadataRecord::Broker(BrokerRegistration {
                id: 3,
                epoch: 17,
                incarnation: Uuid::new_v4(),
                host: "127.0.0.1".into(),
                port: 39092,
                rack: Some("r1".into()),
            }),
            MetadataRecord::BrokerFence { id: 3, epoch: 17, fenced: false },
            MetadataRecord::PartitionChange(PartitionChange {
                topic_id: Uuid::new_v4(),
                partition: 4,
                leader: 2,
                leader_epoch: 7,
                partition_epoch: 9,
                isr: vec![2, 3],
            }),
            MetadataRecord::Config {
                resource: ConfigResource::Topic("orders".into()),
                name: "retention.ms".into(),
                value: Some("60000".into()),
            },
            MetadataRecord::Config {
                resource: ConfigResource::Broker(None),
                name: "log.retention.ms".into(),
                value: None,
            },
            MetadataRecord::Config {
                resource: ConfigResource::Broker(Some(2)),
                name: "message.max.bytes".into(),
                value: Some("2000000".into()),
            },
        ];
        for r in records {
            assert_eq!(MetadataRecord::decode(&r.encode()), Ok(r.clone()));
            let enc = r.encode();
            assert!(matches!(MetadataRecord::decode(&enc[..enc.len() / 2]), Err(RecordError::Invalid(_))));
        }
        assert!(matches!(MetadataRecord::decode(&[9, 0, 0]), Err(RecordError::Invalid(_))));
    }
}
