//! `weir cluster status`: the controller quorum (leader, epoch, each voter's log end and
//! lag behind the leader) and the brokers (id, listener, alive or fenced, partitions led),
//! from DescribeQuorum, DescribeCluster and Metadata asked of one bootstrap broker.
//!
//! Runs on the glommio executor the `weir` CLI starts for the command, over
//! [`crate::client`]; every request waits at most 10 s.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use kafka_protocol::messages::describe_quorum_request::{PartitionData, TopicData};
use kafka_protocol::messages::{ApiKey, DescribeClusterRequest, DescribeQuorumRequest, MetadataRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::client::{ClientError, Connection};

const TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "weir-cli";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Voter {
    pub id: i32,
    /// `None`: the leader did not say (an older broker, or no leader).
    pub log_end: Option<i64>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Quorum {
    pub leader: i32,
    pub epoch: i32,
    pub high_watermark: i64,
    pub voters: Vec<Voter>,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Broker {
    pub id: i32,
    pub addr: String,
    pub fenced: bool,
    pub leads: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    pub cluster_id: String,
    pub controller: i32,
    pub quorum: Result<Quorum, String>,
    pub brokers: Vec<Broker>,
    /// Partitions with no leader (their broker is fenced or gone).
    pub offline: usize,
}

pub async fn status(bootstrap: &str) -> Result<ClusterReport, ClientError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let quorum = describe_quorum(&mut conn).await;
    let mut describe = DescribeClusterRequest::default();
    describe.endpoint_type = 1;
    let version = conn.version(ApiKey::DescribeCluster)?;
    describe.include_fenced_brokers = version >= 2;
    let cluster = conn.call_version(&describe, version, TIMEOUT).await?;
    if let Some(e) = ResponseError::try_from_code(cluster.error_code) {
        return Err(ClientError::Protocol { addr: bootstrap.into(), message: format!("DescribeCluster: {e:?}") });
    }
    let mut all_topics = MetadataRequest::default();
    all_topics.topics = None;
    let metadata = conn.call(&all_topics, TIMEOUT).await?;
    let mut leads: BTreeMap<i32, usize> = BTreeMap::new();
    let mut offline = 0;
    for t in &metadata.topics {
        for p in &t.partitions {
            if p.leader_id.0 >= 0 {
                *leads.entry(p.leader_id.0).or_default() += 1;
            } else {
                offline += 1;
            }
        }
    }
    let brokers = cluster
        .brokers
        .iter()
        .map(|b| Broker {
            id: b.broker_id.0,
            addr: crate::client::broker_address(b.host.as_str(), b.port),
            fenced: b.is_fenced,
            leads: leads.get(&b.broker_id.0).copied().unwrap_or(0),
        })
        .collect();
    Ok(ClusterReport {
        cluster_id: cluster.cluster_id.to_string(),
        controller: cluster.controller_id.0,
        quorum,
        brokers,
        offline,
    })
}

async fn describe_quorum(conn: &mut Connection) -> Result<Quorum, String> {
    let mut partition = PartitionData::default();
    partition.partition_index = 0;
    let mut topic = TopicData::default();
    topic.topic_name = TopicName(StrBytes::from_static_str("__cluster_metadata"));
    topic.partitions = vec![partition];
    let mut request = DescribeQuorumRequest::default();
    request.topics = vec![topic];
    let response = conn.call(&request, TIMEOUT).await.map_err(|e| e.to_string())?;
    if let Some(e) = ResponseError::try_from_code(response.error_code) {
        let message = response.error_message.map(|m| m.to_string()).unwrap_or_default();
        return Err(format!("{e:?} {message}").trim().to_string());
    }
    let p = response
        .topics
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| "DescribeQuorum named no partition".to_string())?;
    if let Some(e) = ResponseError::try_from_code(p.error_code) {
        return Err(format!("{e:?}"));
    }
    Ok(Quorum {
        leader: p.leader_id.0,
        epoch: p.leader_epoch,
        high_watermark: p.high_watermark,
        voters: p
            .current_voters
            .iter()
            .map(|v| Voter { id: v.replica_id.0, log_end: (v.log_end_offset >= 0).then_some(v.log_end_offset) })
            .collect(),
    })
}

pub fn format_report(r: &ClusterReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Cluster {}  (controller for clients: {})", r.cluster_id, r.controller);
    match &r.quorum {
        Ok(q) => {
            let _ =
                writeln!(out, "\nQuorum: leader {}, epoch {}, high watermark {}", q.leader, q.epoch, q.high_watermark);
            let _ = writeln!(out, "  {:<6} {:<8} {:>12} {:>8}", "VOTER", "ROLE", "LOG-END", "LAG");
            let leader_end = q.voters.iter().find(|v| v.id == q.leader).and_then(|v| v.log_end);
            for v in &q.voters {
                let role = if v.id == q.leader { "leader" } else { "follower" };
                let end = v.log_end.map_or("-".to_string(), |e| e.to_string());
                let lag = match (leader_end, v.log_end) {
                    (Some(l), Some(e)) => (l - e).max(0).to_string(),
                    _ => "-".to_string(),
                };
                let _ = writeln!(out, "  {:<6} {:<8} {:>12} {:>8}", v.id, role, end, lag);
            }
        }
        Err(e) => {
            let _ = writeln!(out, "\nQuorum: unavailable ({e})");
        }
    }
    let _ = writeln!(out, "\n  {:<6} {:<22} {:<7} {:>15}", "BROKER", "LISTENER", "STATE", "PARTITIONS-LED");
    for b in &r.brokers {
        let state = if b.fenced { "fenced" } else { "alive" };
        let _ = writeln!(out, "  {:<6} {:<22} {:<7} {:>15}", b.id, b.addr, state, b.leads);
    }
    if r.offline > 0 {
        let _ = writeln!(out, "\n{} partition(s) have no leader (their broker is fenced or gone).", r.offline);
    }
    out
}
