//! `weir groups`: consumer groups and their lag, as `kafka-consumer-groups.sh --describe`
//! shows them: per partition the committed offset, the log end, the lag and the member
//! that holds it.
//!
//! Runs on the glommio executor the `weir` CLI starts for the command, over
//! [`crate::client`]. Every request waits at most 10 s. Log ends are asked of the bootstrap
//! broker, which is right for a single broker; on a cluster, partitions it does not lead
//! show `-`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest, ListOffsetsRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::{Decodable, StrBytes};
use kafka_protocol::ResponseError;

use crate::client::{check, find_coordinator, ClientError, Connection};

const TIMEOUT: Duration = Duration::from_secs(10);
/// The client id the command's requests carry.
const CLIENT_ID: &str = "weir-cli";

/// One listed group.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ListedGroup {
    pub group: String,
    pub state: String,
    pub protocol_type: String,
}

/// One row of the lag table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LagRow {
    pub topic: String,
    pub partition: i32,
    /// `None`: nothing committed.
    pub committed: Option<i64>,
    pub log_end: Option<i64>,
    /// Member id, client host, client id of the member that holds the partition.
    pub owner: Option<(String, String, String)>,
}

impl LagRow {
    pub fn lag(&self) -> Option<i64> {
        Some(self.log_end? - self.committed?)
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GroupReport {
    pub group: String,
    pub state: String,
    pub protocol: String,
    pub members: usize,
    pub rows: Vec<LagRow>,
}

pub async fn list(bootstrap: &str) -> Result<Vec<ListedGroup>, ClientError> {
    let mut client = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let response = client.call(&ListGroupsRequest::default(), TIMEOUT).await?;
    check(response.error_code, || "ListGroups".into())?;
    let mut groups: Vec<ListedGroup> = response
        .groups
        .into_iter()
        .map(|g| ListedGroup {
            group: g.group_id.to_string(),
            state: g.group_state.to_string(),
            protocol_type: g.protocol_type.to_string(),
        })
        .collect();
    groups.sort_by(|a, b| a.group.cmp(&b.group));
    Ok(groups)
}

pub async fn describe(bootstrap: &str, group: &str) -> Result<GroupReport, ClientError> {
    let mut client = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let address = find_coordinator(&mut client, group, TIMEOUT).await?.addr;
    let mut coordinator = Connection::connect(&address, CLIENT_ID, TIMEOUT).await?;
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let described = coordinator.call(&request, TIMEOUT).await?.groups.into_iter().next();
    let described = described.ok_or_else(|| ClientError::Broker {
        what: format!("DescribeGroups {group}: no answer"),
        error: ResponseError::UnknownServerError,
    })?;
    check(described.error_code, || format!("DescribeGroups {group}"))?;

    // Who holds which partition, from the consumer-protocol assignments.
    let mut owners: BTreeMap<(String, i32), (String, String, String)> = BTreeMap::new();
    for m in &described.members {
        for (topic, partition) in assigned_partitions(&m.member_assignment) {
            owners.insert(
                (topic, partition),
                (m.member_id.to_string(), m.client_host.to_string(), m.client_id.to_string()),
            );
        }
    }

    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_string()));
    request.topics = None;
    let fetched = coordinator.call(&request, TIMEOUT).await?;
    check(fetched.error_code, || format!("OffsetFetch {group}"))?;
    let mut committed: BTreeMap<(String, i32), Option<i64>> = BTreeMap::new();
    for t in &fetched.topics {
        for p in &t.partitions {
            committed.insert(
                (t.name.to_string(), p.partition_index),
                (p.committed_offset >= 0).then_some(p.committed_offset),
            );
        }
    }
    for key in owners.keys() {
        committed.entry(key.clone()).or_insert(None);
    }
    let log_ends = log_ends(&mut client, committed.keys()).await?;
    let rows = committed
        .into_iter()
        .map(|((topic, partition), committed)| LagRow {
            log_end: log_ends.get(&(topic.clone(), partition)).copied(),
            owner: owners.get(&(topic.clone(), partition)).cloned(),
            topic,
            partition,
            committed,
        })
        .collect();
    Ok(GroupReport {
        group: group.to_string(),
        state: described.group_state.to_string(),
        protocol: described.protocol_data.to_string(),
        members: described.members.len(),
        rows,
    })
}

/// `(topic, partition)` pairs of a consumer-protocol assignment; none if it is not one.
fn assigned_partitions(bytes: &Bytes) -> Vec<(String, i32)> {
    if bytes.len() < 2 {
        return Vec::new();
    }
    let version = i16::from_be_bytes([bytes[0], bytes[1]]);
    let mut body = bytes.slice(2..);
    match ConsumerProtocolAssignment::decode(&mut body, version.clamp(0, 3)) {
        Ok(a) => a
            .assigned_partitions
            .into_iter()
            .flat_map(|t| {
                let topic = t.topic.to_string();
                t.partitions.into_iter().map(move |p| (topic.clone(), p))
            })
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The log end offset of each partition (ListOffsets, latest).
async fn log_ends<'a>(
    client: &mut Connection,
    partitions: impl Iterator<Item = &'a (String, i32)>,
) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut request = ListOffsetsRequest::default();
    request.replica_id = (-1).into();
    request.topics = by_topic
        .into_iter()
        .map(|(topic, parts)| {
            let mut t = ListOffsetsTopic::default();
            t.name = TopicName(StrBytes::from_string(topic.to_string()));
            t.partitions = parts
                .into_iter()
                .map(|p| {
                    let mut lp = ListOffsetsPartition::default();
                    lp.partition_index = p;
                    lp.timestamp = -1;
                    lp
                })
                .collect();
            t
        })
        .collect();
    if request.topics.is_empty() {
        return Ok(BTreeMap::new());
    }
    let response = client.call(&request, TIMEOUT).await?;
    let mut ends = BTreeMap::new();
    for t in response.topics {
        for p in t.partitions {
            if p.error_code == 0 {
                ends.insert((t.name.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(ends)
}

/// Whether the group does not exist (Kafka describes an unknown group as Dead, with nothing).
pub fn is_missing(report: &GroupReport) -> bool {
    report.state == "Dead" && report.rows.is_empty()
}

/// The report as a table, one row per partition.
pub fn format_report(report: &GroupReport) -> String {
    let mut out = String::new();
    if is_missing(report) {
        let _ = writeln!(out, "Group {} does not exist.", report.group);
        return out;
    }
    let protocol = if report.protocol.is_empty() { String::new() } else { format!(", assignor {}", report.protocol) };
    let members = if report.members == 1 { "1 member".to_string() } else { format!("{} members", report.members) };
    let _ = writeln!(out, "Group {} ({}, {members}{protocol})", report.group, report.state);
    let dash = |v: Option<i64>| v.map_or("-".to_string(), |v| v.to_string());
    let mut rows = vec![[
        "TOPIC".to_string(),
        "PARTITION".into(),
        "CURRENT-OFFSET".into(),
        "LOG-END-OFFSET".into(),
        "LAG".into(),
        "CONSUMER-ID".into(),
        "HOST".into(),
        "CLIENT-ID".into(),
    ]];
    for r in &report.rows {
        let (member, host, client) = r.owner.clone().unwrap_or_else(|| ("-".into(), "-".into(), "-".into()));
        rows.push([
            r.topic.clone(),
            r.partition.to_string(),
            dash(r.committed),
            dash(r.log_end),
            dash(r.lag()),
            member,
            host,
            client,
        ]);
    }
    let mut widths = [0usize; 8];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    for row in &rows {
        let line: Vec<String> = row.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_shows_lag_and_dashes() {
        let report = GroupReport {
            group: "g".into(),
            state: "Stable".into(),
            protocol: "range".into(),
            members: 1,
            rows: vec![
                LagRow {
                    topic: "t".into(),
                    partition: 0,
                    committed: Some(5),
                    log_end: Some(12),
                    owner: Some(("m-1".into(), "/127.0.0.1".into(), "c".into())),
                },
                LagRow { topic: "t".into(), partition: 1, committed: None, log_end: Some(3), owner: None },
            ],
        };
        let text = format_report(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "Group g (Stable, 1 member, assignor range)");
        assert!(lines[1].starts_with("TOPIC  PARTITION  CURRENT-OFFSET"));
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells, vec!["t", "0", "5", "12", "7", "m-1", "/127.0.0.1", "c"]);
        let cells: Vec<&str> = lines[3].split_whitespace().collect();
        assert_eq!(cells, vec!["t", "1", "-", "3", "-", "-", "-", "-"]);
    }
}
