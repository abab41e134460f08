//! Bootstrap for a run: connect with bounded retries, create the workload's topics when they
//! are missing, wait until every partition has a leader, and read the end offsets the
//! consumers start from.
//!
//! Runs once, on the short-lived setup executor, before the load starts. Metadata, leader
//! lookup and the connections themselves are `weir::client`'s; this file holds only what is
//! particular to a workload.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use tracing::{debug, info, warn};
use weir::client::{read_metadata, resolve, ClientError, ClusterMetadata, Connection, LeaderError};

use crate::errors::kafka_error_name;
use crate::workload::Workload;

/// The client id of every connection the load generator opens.
pub const CLIENT_ID: &str = "weir-loadgen";
/// Timeout of one connect attempt and of admin requests.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Connect attempts before giving up on a broker.
pub const CONNECT_ATTEMPTS: u32 = 3;
/// How long to wait for new topics to have leaders for every partition.
const LEADER_WAIT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot reach {addr} after {attempts} attempts: {last}")]
    Unreachable { addr: String, attempts: u32, last: ClientError },
    #[error("creating topic {topic} failed: {code}{}", message.as_deref().map(|m| format!(" ({m})")).unwrap_or_default())]
    CreateTopic { topic: String, code: String, message: Option<String> },
    #[error("topic {topic}: {message}")]
    Topic { topic: String, message: String },
    #[error(transparent)]
    Leader(#[from] LeaderError),
    #[error("ListOffsets for {topic}-{partition} failed: {code}")]
    ListOffsets { topic: String, partition: i32, code: String },
}

/// A partition of the workload: where to send it and where consumers start.
#[derive(Debug, Clone)]
pub struct PartitionInfo {
    pub topic: u32,
    pub partition: i32,
    pub leader: i32,
    /// End offset before the run started (consumers start here).
    pub start_offset: i64,
}

#[derive(Debug, Clone)]
pub struct TopicInfo {
    pub name: String,
    pub name_wire: TopicName,
    /// Index of this topic's partition 0 in [`Cluster::partitions`].
    pub first: usize,
    pub partitions: u32,
}

/// The cluster as the run sees it.
#[derive(Debug, Clone, Default)]
pub struct Cluster {
    /// node id -> "host:port"
    pub brokers: HashMap<i32, String>,
    pub topics: Vec<TopicInfo>,
    /// Every partition of every topic, topic by topic.
    pub partitions: Vec<PartitionInfo>,
}

impl Cluster {
    pub fn broker_addr(&self, node: i32) -> Option<&str> {
        self.brokers.get(&node).map(String::as_str)
    }

    /// Global index of (topic index, partition).
    pub fn index(&self, topic: u32, partition: i32) -> Option<usize> {
        let t = self.topics.get(topic as usize)?;
        (partition >= 0 && (partition as u32) < t.partitions).then(|| t.first + partition as usize)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<u32> {
        self.topics.iter().position(|t| t.name == name).map(|i| i as u32)
    }
}

/// The APIs a run cannot do without (CreateTopics is needed only for missing topics).
const REQUIRED_APIS: [ApiKey; 4] = [ApiKey::Produce, ApiKey::Fetch, ApiKey::ListOffsets, ApiKey::Metadata];

/// Connects to `addr` and negotiates versions, within [`CONNECT_TIMEOUT`]; `Unsupported`
/// when the broker lacks a version of an API the run needs, so a run fails at its start.
pub async fn connect(addr: &str) -> Result<Connection, ClientError> {
    let conn = Connection::connect(addr, CLIENT_ID, CONNECT_TIMEOUT).await?;
    for api in REQUIRED_APIS {
        conn.version(api)?;
    }
    Ok(conn)
}

/// Connects with up to [`CONNECT_ATTEMPTS`] attempts, backing off between them.
pub async fn connect_retrying(addr: &str) -> Result<Connection, SetupError> {
    let mut backoff = Duration::from_millis(200);
    let mut last = None;
    for attempt in 1..=CONNECT_ATTEMPTS {
        match connect(addr).await {
            Ok(c) => return Ok(c),
            // An unsupported protocol will not change by retrying.
            Err(e @ ClientError::Unsupported { .. }) => return Err(e.into()),
            Err(e) => {
                warn!(addr, attempt, error = %e, "connect failed");
                last = Some(e);
            }
        }
        if attempt < CONNECT_ATTEMPTS {
            glommio::timer::sleep(backoff).await;
            backoff *= 2;
        }
    }
    let last = last.unwrap_or_else(|| ClientError::Connect {
        addr: addr.to_string(),
        source: std::io::Error::other("no attempt made"),
    });
    Err(SetupError::Unreachable { addr: addr.to_string(), attempts: CONNECT_ATTEMPTS, last })
}

fn topic_name(name: &str) -> TopicName {
    TopicName(StrBytes::from_string(name.to_string()))
}

/// Whether Metadata shows `name` ready: no error, partitions, and a leader for each.
fn has_leaders(seen: &ClusterMetadata, name: &str) -> bool {
    seen.topics.get(name).is_some_and(|t| {
        t.error_code == 0 && !t.partitions.is_empty() && t.partitions.iter().all(|p| p.leader().is_some())
    })
}

/// Makes sure the workload's topics exist with leaders and returns the cluster layout with
/// every partition's current end offset.
pub async fn setup(bootstrap: &str, w: &Workload) -> Result<Cluster, SetupError> {
    let mut conn = connect_retrying(bootstrap).await?;
    info!(bootstrap, versions = ?conn.broker_versions().negotiated(), "connected");
    let names: Vec<String> = (0..w.topics.count).map(|i| w.topic_name(i)).collect();
    let seen = read_metadata(&mut conn, Some(&names), ADMIN_TIMEOUT).await?;
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| seen.topics.get(*n).is_none_or(|t| t.error_code != 0 || t.partitions.is_empty()))
        .collect();
    if !missing.is_empty() {
        create_topics(&mut conn, &seen, &missing, w).await?;
    }

    // Wait for leaders everywhere (new topics may take a moment on a real cluster).
    let deadline = std::time::Instant::now() + LEADER_WAIT;
    let seen = loop {
        let seen = read_metadata(&mut conn, Some(&names), ADMIN_TIMEOUT).await?;
        let mut waiting = None;
        for n in &names {
            match seen.topics.get(n) {
                Some(_) if has_leaders(&seen, n) => {}
                Some(t) if t.error_code != 0 && !is_transient_topic_error(t.error_code) => {
                    return Err(SetupError::Topic { topic: n.clone(), message: kafka_error_name(t.error_code) });
                }
                Some(t) => waiting = Some((n.clone(), kafka_error_name(t.error_code))),
                None => waiting = Some((n.clone(), "not in metadata".into())),
            }
        }
        match waiting {
            None => break seen,
            Some((topic, why)) if std::time::Instant::now() >= deadline => {
                return Err(SetupError::Topic {
                    topic,
                    message: format!("no leader for every partition after {LEADER_WAIT:?} ({why})"),
                })
            }
            Some((topic, why)) => {
                debug!(topic, why, "waiting for leaders");
                glommio::timer::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    let mut cluster = Cluster { brokers: seen.brokers.clone(), ..Default::default() };
    for (ti, n) in names.iter().enumerate() {
        let parts = seen.topics.get(n).map(|t| t.partitions.as_slice()).unwrap_or_default();
        if parts.len() as u32 != w.topics.partitions {
            warn!(topic = %n, has = parts.len(), workload = w.topics.partitions, "topic exists with another partition count; using the topic's");
        }
        cluster.topics.push(TopicInfo {
            name: n.clone(),
            name_wire: topic_name(n),
            first: cluster.partitions.len(),
            partitions: parts.len() as u32,
        });
        for p in parts {
            let (leader, _) = seen.leader(n, p.partition)?;
            cluster.partitions.push(PartitionInfo {
                topic: ti as u32,
                partition: p.partition,
                leader,
                start_offset: 0,
            });
        }
    }
    read_start_offsets(&mut cluster, conn).await?;
    Ok(cluster)
}

fn is_transient_topic_error(code: i16) -> bool {
    // UNKNOWN_TOPIC_OR_PARTITION right after creation, LEADER_NOT_AVAILABLE during election.
    code == 3 || code == 5
}

async fn create_topics(
    conn: &mut Connection,
    seen: &ClusterMetadata,
    missing: &[&String],
    w: &Workload,
) -> Result<(), SetupError> {
    // CreateTopics goes to the controller; brokers that forward it accept it anywhere.
    let mut controller_conn = match seen.controller() {
        Some((_, addr)) if addr != conn.addr() => match connect(addr).await {
            Ok(c) => Some(c),
            Err(e) => {
                debug!(addr, error = %e, "controller unreachable; creating through the bootstrap broker");
                None
            }
        },
        _ => None,
    };
    let target = controller_conn.as_mut().unwrap_or(conn);
    let mut req = CreateTopicsRequest::default();
    req.timeout_ms = ADMIN_TIMEOUT.as_millis() as i32;
    req.topics = missing
        .iter()
        .map(|n| {
            let mut t = CreatableTopic::default();
            t.name = topic_name(n);
            t.num_partitions = w.topics.partitions as i32;
            t.replication_factor = w.topics.replication_factor;
            t
        })
        .collect();
    let resp = target.call(&req, ADMIN_TIMEOUT).await?;
    for t in &resp.topics {
        match t.error_code {
            0 => info!(topic = %t.name.0.as_str(), partitions = w.topics.partitions, "created topic"),
            36 => debug!(topic = %t.name.0.as_str(), "topic already exists"),
            code => {
                return Err(SetupError::CreateTopic {
                    topic: t.name.0.to_string(),
                    code: kafka_error_name(code),
                    message: t.error_message.as_ref().map(|m| m.to_string()),
                })
            }
        }
    }
    Ok(())
}

/// Latest offsets of every partition, asked of each partition's leader.
async fn read_start_offsets(cluster: &mut Cluster, bootstrap_conn: Connection) -> Result<(), SetupError> {
    let mut by_leader: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, p) in cluster.partitions.iter().enumerate() {
        by_leader.entry(p.leader).or_default().push(i);
    }
    let mut spare = Some(bootstrap_conn);
    for (leader, idxs) in by_leader {
        let addr = cluster.brokers[&leader].clone();
        let mut conn = match spare.take() {
            Some(c) if addr_matches(c.addr(), &addr) => c,
            other => {
                spare = other;
                connect_retrying(&addr).await?
            }
        };
        // A topic just created may not be on every broker yet (Kafka's brokers learn it from
        // the controller a moment later): the retriable errors are asked again.
        let mut tries = 0;
        let offsets = loop {
            match list_latest(&mut conn, cluster, &idxs).await {
                Err(SetupError::ListOffsets { code, .. })
                    if tries < 50
                        && matches!(
                            code.as_str(),
                            "UNKNOWN_TOPIC_OR_PARTITION" | "LEADER_NOT_AVAILABLE" | "NOT_LEADER_OR_FOLLOWER"
                        ) =>
                {
                    tries += 1;
                    glommio::timer::sleep(std::time::Duration::from_millis(200)).await;
                }
                other => break other?,
            }
        };
        for (i, off) in idxs.iter().zip(offsets) {
            cluster.partitions[*i].start_offset = off;
        }
    }
    Ok(())
}

fn addr_matches(a: &str, b: &str) -> bool {
    a == b || resolve(a).ok() == resolve(b).ok()
}

/// ListOffsets(latest) for `idxs` (all led by `conn`'s broker), in `idxs` order.
pub async fn list_latest(conn: &mut Connection, cluster: &Cluster, idxs: &[usize]) -> Result<Vec<i64>, SetupError> {
    let mut topics: Vec<ListOffsetsTopic> = Vec::new();
    for &i in idxs {
        let p = &cluster.partitions[i];
        let name = &cluster.topics[p.topic as usize].name_wire;
        let mut lp = ListOffsetsPartition::default();
        lp.partition_index = p.partition;
        lp.timestamp = -1;
        lp.current_leader_epoch = -1;
        match topics.iter_mut().find(|t| &t.name == name) {
            Some(t) => t.partitions.push(lp),
            None => {
                let mut t = ListOffsetsTopic::default();
                t.name = name.clone();
                t.partitions = vec![lp];
                topics.push(t);
            }
        }
    }
    let mut req = ListOffsetsRequest::default();
    req.replica_id = (-1).into();
    req.topics = topics;
    let resp = conn.call(&req, ADMIN_TIMEOUT).await?;
    let mut found: HashMap<(String, i32), i64> = HashMap::new();
    for t in &resp.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(SetupError::ListOffsets {
                    topic: t.name.0.to_string(),
                    partition: p.partition_index,
                    code: kafka_error_name(p.error_code),
                });
            }
            found.insert((t.name.0.to_string(), p.partition_index), p.offset);
        }
    }
    idxs.iter()
        .map(|&i| {
            let p = &cluster.partitions[i];
            let topic = cluster.topics[p.topic as usize].name.clone();
            found.get(&(topic.clone(), p.partition)).copied().ok_or(SetupError::ListOffsets {
                topic,
                partition: p.partition,
                code: "MISSING_FROM_RESPONSE".into(),
            })
        })
        .collect()
}
