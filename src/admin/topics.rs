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

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    pub partition: i32,
    pub leader: i32,
    pub leader_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub offline: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
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
