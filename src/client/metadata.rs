//! What a client needs to know about a cluster before it sends data: brokers by node id,
//! the controller, each partition's leader (Metadata), and a group's coordinator
//! (FindCoordinator).
//!
//! Runs on the connection's executor, built on [`Connection::call`]. A snapshot, not a cache:
//! callers read metadata again when a broker tells them something moved
//! (NOT_LEADER_OR_FOLLOWER, NOT_COORDINATOR, ...). Only the fields callers use so far are kept.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{ApiKey, FindCoordinatorRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use thiserror::Error;

use super::connection::Connection;
use super::error::{check, ClientError};

/// A Metadata answer.
#[derive(Debug, Clone, Default)]
pub struct ClusterMetadata {
    /// Node id -> `host:port`.
    pub brokers: HashMap<i32, String>,
    /// The node the broker names as controller; -1 when it names none.
    pub controller_id: i32,
    /// By topic name: the topics asked for (with an error code when they do not exist), or
    /// every topic when none were named.
    pub topics: HashMap<String, TopicMetadata>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMetadata {
    pub error_code: i16,
    /// Sorted by partition index.
    pub partitions: Vec<PartitionMetadata>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionMetadata {
    pub partition: i32,
    /// As the broker sent it; see [`PartitionMetadata::leader`].
    pub leader_id: i32,
    pub error_code: i16,
}

impl PartitionMetadata {
    /// The leader, when the partition has no error and names one.
    pub fn leader(&self) -> Option<i32> {
        (self.error_code == 0 && self.leader_id >= 0).then_some(self.leader_id)
    }
}

/// Why [`ClusterMetadata::leader`] found no leader to talk to.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum LeaderError {
    #[error("topic {topic} is not in the metadata")]
    UnknownTopic { topic: String },
    #[error("topic {topic}: error code {code}")]
    Topic { topic: String, code: i16 },
    #[error("partition {topic}-{partition} is not in the metadata")]
    UnknownPartition { topic: String, partition: i32 },
    #[error("{topic}-{partition} has no leader (error code {code})")]
    NoLeader { topic: String, partition: i32, code: i16 },
    #[error("metadata names no broker {node} (leader of {topic}-{partition})")]
    UnknownBroker { node: i32, topic: String, partition: i32 },
}

impl ClusterMetadata {
    /// The address of broker `node_id`.
    pub fn broker(&self, node_id: i32) -> Option<&str> {
        self.brokers.get(&node_id).map(String::as_str)
    }

    /// The controller's node id and address, when the broker named one it also listed.
    pub fn controller(&self) -> Option<(i32, &str)> {
        self.broker(self.controller_id).map(|addr| (self.controller_id, addr))
    }

    /// The leader of `topic`-`partition`: its node id and address.
    pub fn leader(&self, topic: &str, partition: i32) -> Result<(i32, &str), LeaderError> {
        let t = self.topics.get(topic).ok_or_else(|| LeaderError::UnknownTopic { topic: topic.to_string() })?;
        if t.error_code != 0 {
            return Err(LeaderError::Topic { topic: topic.to_string(), code: t.error_code });
        }
        let p = t
            .partitions
            .binary_search_by_key(&partition, |p| p.partition)
            .map(|i| t.partitions[i])
            .map_err(|_| LeaderError::UnknownPartition { topic: topic.to_string(), partition })?;
        let node = p.leader().ok_or_else(|| LeaderError::NoLeader {
            topic: topic.to_string(),
            partition,
            code: p.error_code,
        })?;
        let addr = self.broker(node).ok_or_else(|| LeaderError::UnknownBroker {
            node,
            topic: topic.to_string(),
            partition,
        })?;
        Ok((node, addr))
    }
}

/// `host:port`, with an IPv6 host in brackets so it parses back.
pub fn broker_address(host: &str, port: i32) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// A Metadata request at `version` for `topics` (every topic for `None`) that creates none.
pub fn metadata_request(topics: Option<&[String]>, version: i16) -> MetadataRequest {
    let mut request = MetadataRequest::default();
    request.topics = topics.map(|names| {
        names
            .iter()
            .map(|n| {
                let mut t = MetadataRequestTopic::default();
                t.name = Some(TopicName(StrBytes::from_string(n.clone())));
                t
            })
            .collect()
    });
    // The field exists from v4; a v1-3 broker creates missing topics if its own
    // auto.create.topics.enable says so.
    if version >= 4 {
        request.allow_auto_topic_creation = false;
    }
    request
}

/// Reads Metadata for `topics` (every topic for `None`) without creating any.
pub async fn read_metadata(
    conn: &mut Connection,
    topics: Option<&[String]>,
    timeout: Duration,
) -> Result<ClusterMetadata, ClientError> {
    let version = conn.version(ApiKey::Metadata)?;
    let request = metadata_request(topics, version);
    let response = conn.call_version(&request, version, timeout).await?;
    let brokers = response.brokers.iter().map(|b| (b.node_id.0, broker_address(b.host.as_str(), b.port))).collect();
    let mut topics = HashMap::new();
    for t in &response.topics {
        let Some(name) = &t.name else { continue };
        let mut partitions: Vec<PartitionMetadata> = t
            .partitions
            .iter()
            .map(|p| PartitionMetadata {
                partition: p.partition_index,
                leader_id: p.leader_id.0,
                error_code: p.error_code,
            })
            .collect();
        partitions.sort_unstable_by_key(|p| p.partition);
        topics.insert(name.0.to_string(), TopicMetadata { error_code: t.error_code, partitions });
    }
    Ok(ClusterMetadata { brokers, controller_id: response.controller_id.0, topics })
}

/// A group's coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coordinator {
    pub node_id: i32,
    /// `host:port`.
    pub addr: String,
}

/// Asks `conn`'s broker which broker coordinates consumer group `group`.
pub async fn find_coordinator(
    conn: &mut Connection,
    group: &str,
    timeout: Duration,
) -> Result<Coordinator, ClientError> {
    find(conn, 0, group, timeout).await
}

/// Asks `conn`'s broker which broker coordinates transactional id `id`.
pub async fn find_transaction_coordinator(
    conn: &mut Connection,
    id: &str,
    timeout: Duration,
) -> Result<Coordinator, ClientError> {
    find(conn, 1, id, timeout).await
}

/// FindCoordinator for one key (every version in the client's table, v0-3, takes one `key`);
/// `key_type` 0 is a group, 1 a transactional id.
async fn find(conn: &mut Connection, key_type: i8, key: &str, timeout: Duration) -> Result<Coordinator, ClientError> {
    let mut request = FindCoordinatorRequest::default();
    request.key = StrBytes::from_string(key.to_string());
    request.key_type = key_type;
    let response = conn.call(&request, timeout).await?;
    let what = if key_type == 0 { "group" } else { "transactional id" };
    check(response.error_code, || format!("FindCoordinator for {what} {key}"))?;
    Ok(Coordinator { node_id: response.node_id.0, addr: broker_address(response.host.as_str(), response.port) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata() -> ClusterMetadata {
        let partitions = vec![
            PartitionMetadata { partition: 0, leader_id: 1, error_code: 0 },
            PartitionMetadata { partition: 1, leader_id: -1, error_code: 5 },
            PartitionMetadata { partition: 2, leader_id: 7, error_code: 0 },
        ];
        ClusterMetadata {
            brokers: HashMap::from([(1, "a:9092".to_string()), (2, "b:9092".to_string())]),
            controller_id: 2,
            topics: HashMap::from([
                ("t".to_string(), TopicMetadata { error_code: 0, partitions }),
                ("gone".to_string(), TopicMetadata { error_code: 3, partitions: Vec::new() }),
            ]),
        }
    }

    #[test]
    fn leader_lookup_names_what_is_missing() {
        let m = metadata();
        assert_eq!(m.leader("t", 0), Ok((1, "a:9092")));
        assert_eq!(m.leader("t", 1), Err(LeaderError::NoLeader { topic: "t".into(), partition: 1, code: 5 }));
        assert_eq!(m.leader("t", 2), Err(LeaderError::UnknownBroker { node: 7, topic: "t".into(), partition: 2 }));
        assert_eq!(m.leader("t", 3), Err(LeaderError::UnknownPartition { topic: "t".into(), partition: 3 }));
        assert_eq!(m.leader("gone", 0), Err(LeaderError::Topic { topic: "gone".into(), code: 3 }));
        assert_eq!(m.leader("x", 0), Err(LeaderError::UnknownTopic { topic: "x".into() }));
        assert_eq!(m.controller(), Some((2, "b:9092")));
    }

    #[test]
    fn ipv6_hosts_are_bracketed() {
        assert_eq!(broker_address("::1", 9092), "[::1]:9092");
        assert_eq!(broker_address("127.0.0.1", 9092), "127.0.0.1:9092");
        assert_eq!(broker_address("kafka-0", 9092), "kafka-0:9092");
    }
}
