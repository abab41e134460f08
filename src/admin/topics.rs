//! `weir topics describe`: each topic's partitions with their leader, leader epoch,
//! replicas, in-sync replicas and offline replicas, from Metadata asked of one bootstrap
//! broker (what `kafka-topics.sh --describe` shows).
//!
//! Runs on the glommio executor the `weir` CLI starts for the command, over
//! [`crate::client`]; the request waits at most 10 s.

use std::fmt::Write as _;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::ResponseError;

use crate::client::{metadata_request, ClientError, Connection};

const TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "weir-cli";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionReport {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopicReport {
    pub name: String,
    pub id: String,
    /// The broker's error for this topic (unknown topic, ...), if any.
    pub error: Option<String>,
    pub partitions: Vec<PartitionReport>,
}

/// `topics` (every topic when empty) as the broker at `bootstrap` sees them, by name.
pub async fn describe(bootstrap: &str, topics: &[String]) -> Result<Vec<TopicReport>, ClientError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let version = conn.version(ApiKey::Metadata)?;
    let request = metadata_request((!topics.is_empty()).then_some(topics), version);
    let metadata = conn.call_version(&request, version, TIMEOUT).await?;
    let mut out: Vec<TopicReport> = metadata
        .topics
        .into_iter()
        .map(|t| {
            let mut partitions: Vec<PartitionReport> = t
                .partitions
                .into_iter()
                .map(|p| PartitionReport {
                    partition: p.partition_index,
                    leader: p.leader_id.0,
                    leader_epoch: p.leader_epoch,
                    replicas: p.replica_nodes.iter().map(|b| b.0).collect(),
                    isr: p.isr_nodes.iter().map(|b| b.0).collect(),
                    offline: p.offline_replicas.iter().map(|b| b.0).collect(),
                })
                .collect();
            partitions.sort_by_key(|p| p.partition);
            TopicReport {
                name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                id: t.topic_id.to_string(),
                error: ResponseError::try_from_code(t.error_code).map(|e| format!("{e:?}")),
                partitions,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn ids(list: &[i32]) -> String {
    if list.is_empty() {
        return "-".into();
    }
    list.iter().map(i32::to_string).collect::<Vec<_>>().join(",")
}

pub fn format_report(topics: &[TopicReport]) -> String {
    let mut out = String::new();
    for t in topics {
        if let Some(e) = &t.error {
            let _ = writeln!(out, "Topic: {}  error: {e}\n", t.name);
            continue;
        }
        let rf = t.partitions.first().map_or(0, |p| p.replicas.len());
        let _ = writeln!(
            out,
            "Topic: {}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {rf}",
            t.name,
            t.id,
            t.partitions.len()
        );
        let _ = writeln!(
            out,
            "  {:<10} {:>6} {:>6}  {:<16} {:<16} OFFLINE",
            "PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR"
        );
        for p in &t.partitions {
            let leader = if p.leader < 0 { "none".to_string() } else { p.leader.to_string() };
            let _ = writeln!(
                out,
                "  {:<10} {:>6} {:>6}  {:<16} {:<16} {}",
                p.partition,
                leader,
                p.leader_epoch,
                ids(&p.replicas),
                ids(&p.isr),
                ids(&p.offline)
            );
        }
        let _ = writeln!(out);
    }
    out
}

/// Why an admin change was refused: the broker's error code name and message.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{name}: {error}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    Refused { name: String, error: String, message: Option<String> },
    #[error(transparent)]
    Metadata(#[from] crate::client::LeaderError),
}

fn refused(name: &str, code: i16, message: Option<&str>) -> Result<(), AdminError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(e) => Err(AdminError::Refused {
            name: name.to_string(),
            error: format!("{e:?}"),
            message: message.filter(|m| !m.is_empty()).map(str::to_string),
        }),
    }
}

/// The topics' names (internal ones too, when `internal`), sorted.
pub async fn list(bootstrap: &str, internal: bool) -> Result<Vec<String>, ClientError> {
    let mut names: Vec<String> = describe(bootstrap, &[])
        .await?
        .into_iter()
        .map(|t| t.name)
        .filter(|n| internal || !n.starts_with("__"))
        .collect();
    names.sort();
    Ok(names)
}

/// CreateTopics (any broker forwards it to the active controller). `replication` and
/// `partitions` of -1 take the broker's defaults.
pub async fn create(
    bootstrap: &str,
    name: &str,
    partitions: i32,
    replication: i16,
    configs: &[(String, String)],
) -> Result<(), AdminError> {
    use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
    use kafka_protocol::messages::{CreateTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let mut topic = CreatableTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.num_partitions = partitions;
    topic.replication_factor = replication;
    topic.configs = configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.clone());
            c.value = Some(StrBytes::from_string(v.clone()));
            c
        })
        .collect();
    let mut request = CreateTopicsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = TIMEOUT.as_millis() as i32;
    let response = conn.call(&request, TIMEOUT + Duration::from_secs(1)).await?;
    for t in &response.topics {
        refused(t.name.0.as_str(), t.error_code, t.error_message.as_ref().map(|m| m.as_str()))?;
    }
    Ok(())
}

/// DeleteTopics by name.
pub async fn delete(bootstrap: &str, names: &[String]) -> Result<(), AdminError> {
    use kafka_protocol::messages::{DeleteTopicsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let mut request = DeleteTopicsRequest::default();
    request.timeout_ms = TIMEOUT.as_millis() as i32;
    request.topic_names = names.iter().map(|n| TopicName(StrBytes::from_string(n.clone()))).collect();
    let response = conn.call(&request, TIMEOUT + Duration::from_secs(1)).await?;
    for r in &response.responses {
        let name = r.name.as_ref().map(|n| n.0.to_string()).unwrap_or_default();
        refused(&name, r.error_code, r.error_message.as_ref().map(|m| m.as_str()))?;
    }
    Ok(())
}

/// CreatePartitions: grows `name` to `total` partitions.
pub async fn add_partitions(bootstrap: &str, name: &str, total: i32) -> Result<(), AdminError> {
    use kafka_protocol::messages::create_partitions_request::CreatePartitionsTopic;
    use kafka_protocol::messages::{CreatePartitionsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let mut topic = CreatePartitionsTopic::default();
    topic.name = TopicName(StrBytes::from_string(name.to_string()));
    topic.count = total;
    topic.assignments = None;
    let mut request = CreatePartitionsRequest::default();
    request.topics = vec![topic];
    request.timeout_ms = TIMEOUT.as_millis() as i32;
    let response = conn.call(&request, TIMEOUT + Duration::from_secs(1)).await?;
    for r in &response.results {
        refused(r.name.0.as_str(), r.error_code, r.error_message.as_ref().map(|m| m.as_str()))?;
    }
    Ok(())
}

/// DeleteRecords on the partition's leader: records before `offset` (-1: the high
/// watermark) go. Returns the new low watermark.
pub async fn delete_records(bootstrap: &str, topic: &str, partition: i32, offset: i64) -> Result<i64, AdminError> {
    use kafka_protocol::messages::delete_records_request::{DeleteRecordsPartition, DeleteRecordsTopic};
    use kafka_protocol::messages::{DeleteRecordsRequest, TopicName};
    use kafka_protocol::protocol::StrBytes;
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let metadata = crate::client::read_metadata(&mut conn, Some(&[topic.to_string()]), TIMEOUT).await?;
    let (_, leader) = metadata.leader(topic, partition)?;
    let mut leader = Connection::connect(leader, CLIENT_ID, TIMEOUT).await?;
    let mut p = DeleteRecordsPartition::default();
    p.partition_index = partition;
    p.offset = offset;
    let mut t = DeleteRecordsTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.to_string()));
    t.partitions = vec![p];
    let mut request = DeleteRecordsRequest::default();
    request.topics = vec![t];
    request.timeout_ms = TIMEOUT.as_millis() as i32;
    let response = leader.call(&request, TIMEOUT + Duration::from_secs(1)).await?;
    let answer = response.topics.first().and_then(|t| t.partitions.first()).ok_or_else(|| AdminError::Refused {
        name: topic.into(),
        error: "an empty answer".into(),
        message: None,
    })?;
    refused(&format!("{topic}-{partition}"), answer.error_code, None)?;
    Ok(answer.low_watermark)
}
