//! `weir groups GROUP --reset-offsets` and `--delete-offsets`, as
//! `kafka-consumer-groups.sh` does them: new committed offsets computed per partition (to
//! the earliest or latest offset, to the first record at or after a time, shifted by N, or
//! to a given offset — always within the partition's current range), shown as a plan, and
//! committed only with `--execute` and only while the group has no members (Kafka's rule:
//! a running consumer would overwrite them). Offsets are looked up at each partition's
//! leader, so this works on a cluster too.

use std::collections::BTreeMap;
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use kafka_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, GroupId, ListOffsetsRequest, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use serde::Serialize;

use crate::client::{check, find_coordinator, metadata_request, ClientError, Connection};

const TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "weir-cli";

/// Where the offsets go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record with a timestamp at or after this (ms since the epoch); the log end
    /// when there is none.
    Datetime(i64),
    /// The committed offset plus this (negative: back).
    ShiftBy(i64),
    Offset(i64),
}

/// Which partitions: a topic's (all of them, or those listed), or every partition the
/// group has committed offsets for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    Topics(Vec<(String, Option<Vec<i32>>)>),
    AllTopics,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ResetRow {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub new: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("offsets can only be reset or deleted while group {group} is inactive, but it is {state} with {members} member(s): stop its consumers first")]
    GroupActive { group: String, state: String, members: usize },
    #[error("{0}")]
    Usage(String),
    #[error("{topic}-{partition}: {error:?}")]
    Partition { topic: String, partition: i32, error: ResponseError },
}

/// `TOPIC` or `TOPIC:P,Q,...`.
pub fn parse_topic(text: &str) -> Result<(String, Option<Vec<i32>>), OffsetsError> {
    match text.split_once(':') {
        None => Ok((text.to_string(), None)),
        Some((topic, parts)) => {
            let parts = parts
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .map_err(|_| OffsetsError::Usage(format!("--topic {text}: bad partition {p:?}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((topic.to_string(), Some(parts)))
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS[.mmm]` in UTC, with an optional `Z` or `+HH:MM`/`-HH:MM` offset, as ms
/// since the epoch.
pub fn parse_datetime(text: &str) -> Result<i64, OffsetsError> {
    let bad = || OffsetsError::Usage(format!("--to-datetime {text}: expected YYYY-MM-DDTHH:MM:SS[.mmm][Z|+HH:MM]"));
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let mut d = date.split('-').map(|n| n.parse::<i64>());
    let (Some(Ok(y)), Some(Ok(m)), Some(Ok(day)), None) = (d.next(), d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (time, offset_min) = if let Some(t) = rest.strip_suffix('Z') {
        (t, 0)
    } else if let Some(at) = rest.rfind(['+', '-']).filter(|at| *at >= 8) {
        let (t, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, mm) = zone[1..].split_once(':').ok_or_else(bad)?;
        (t, sign * (h.parse::<i64>().map_err(|_| bad())? * 60 + mm.parse::<i64>().map_err(|_| bad())?))
    } else {
        (rest, 0)
    };
    let (hms, millis) = time.split_once('.').map_or((time, "0"), |(a, b)| (a, b));
    let mut t = hms.split(':').map(|n| n.parse::<i64>());
    let (Some(Ok(h)), Some(Ok(min)), Some(Ok(s)), None) = (t.next(), t.next(), t.next(), t.next()) else {
        return Err(bad());
    };
    let millis: i64 = format!("{millis:0<3}")[..3].parse().map_err(|_| bad())?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || min > 59 || s > 60 {
        return Err(bad());
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Ok(((days * 86_400 + h * 3600 + min * 60 + s) - offset_min * 60) * 1000 + millis)
}

/// The group's coordinator, checked to be inactive.
async fn inactive_group(bootstrap: &mut Connection, group: &str) -> Result<Connection, OffsetsError> {
    let address = find_coordinator(bootstrap, group, TIMEOUT).await?.addr;
    let mut coordinator = Connection::connect(&address, CLIENT_ID, TIMEOUT).await?;
    let mut request = DescribeGroupsRequest::default();
    request.groups = vec![GroupId(StrBytes::from_string(group.to_string()))];
    let described = coordinator.call(&request, TIMEOUT).await?.groups.into_iter().next();
    if let Some(g) = described {
        check(g.error_code, || format!("DescribeGroups {group}"))?;
        if !g.members.is_empty() || !matches!(g.group_state.as_str(), "Empty" | "Dead") {
            return Err(OffsetsError::GroupActive {
                group: group.to_string(),
                state: g.group_state.to_string(),
                members: g.members.len(),
            });
        }
    }
    Ok(coordinator)
}

/// The group's committed offsets.
async fn committed(coordinator: &mut Connection, group: &str) -> Result<BTreeMap<(String, i32), i64>, ClientError> {
    let mut request = OffsetFetchRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_string()));
    request.topics = None;
    let fetched = coordinator.call(&request, TIMEOUT).await?;
    check(fetched.error_code, || format!("OffsetFetch {group}"))?;
    Ok(fetched
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions
                .iter()
                .filter(|p| p.committed_offset >= 0)
                .map(move |p| ((t.name.to_string(), p.partition_index), p.committed_offset))
        })
        .collect())
}

/// The partitions of `topics` (all of each, or those named), with each one's leader address.
async fn leaders(
    bootstrap: &mut Connection,
    topics: &[(String, Option<Vec<i32>>)],
) -> Result<BTreeMap<(String, i32), String>, OffsetsError> {
    let names: Vec<String> = topics.iter().map(|(t, _)| t.clone()).collect();
    let version = bootstrap.version(ApiKey::Metadata)?;
    let metadata = bootstrap.call_version(&metadata_request(Some(&names), version), version, TIMEOUT).await?;
    let brokers: BTreeMap<i32, String> =
        metadata.brokers.iter().map(|b| (b.node_id.0, format!("{}:{}", b.host.as_str(), b.port))).collect();
    let mut out = BTreeMap::new();
    for (name, wanted) in topics {
        let t = metadata.topics.iter().find(|t| t.name.as_ref().is_some_and(|n| n.as_str() == name));
        let Some(t) = t.filter(|t| t.error_code == 0) else {
            return Err(OffsetsError::Usage(format!(
                "topic {name} does not exist (`weir topics list` shows the topics)"
            )));
        };
        for p in &t.partitions {
            if wanted.as_ref().is_some_and(|w| !w.contains(&p.partition_index)) {
                continue;
            }
            let leader = brokers.get(&p.leader_id.0).cloned().unwrap_or_default();
            out.insert((name.clone(), p.partition_index), leader);
        }
        for w in wanted.iter().flatten() {
            if !t.partitions.iter().any(|p| p.partition_index == *w) {
                return Err(OffsetsError::Usage(format!("topic {name} has no partition {w}")));
            }
        }
    }
    Ok(out)
}

/// ListOffsets at `timestamp` (-2 earliest, -1 latest) for each partition, asked of its leader.
async fn offsets_at(
    partitions: &BTreeMap<(String, i32), String>,
    timestamp: i64,
) -> Result<BTreeMap<(String, i32), i64>, OffsetsError> {
    let mut by_leader: BTreeMap<&str, Vec<&(String, i32)>> = BTreeMap::new();
    for (tp, leader) in partitions {
        by_leader.entry(leader.as_str()).or_default().push(tp);
    }
    let mut out = BTreeMap::new();
    for (leader, tps) in by_leader {
        let mut conn = Connection::connect(leader, CLIENT_ID, TIMEOUT).await?;
        let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for (t, p) in tps {
            by_topic.entry(t).or_default().push(*p);
        }
        let mut request = ListOffsetsRequest::default();
        request.replica_id = (-1).into();
        request.topics = by_topic
            .into_iter()
            .map(|(t, parts)| {
                let mut topic = ListOffsetsTopic::default();
                topic.name = TopicName(StrBytes::from_string(t.to_string()));
                topic.partitions = parts
                    .into_iter()
                    .map(|p| {
                        let mut lp = ListOffsetsPartition::default();
                        lp.partition_index = p;
                        lp.timestamp = timestamp;
                        lp
                    })
                    .collect();
                topic
            })
            .collect();
        for t in conn.call(&request, TIMEOUT).await?.topics {
            for p in t.partitions {
                if let Some(error) = ResponseError::try_from_code(p.error_code) {
                    return Err(OffsetsError::Partition {
                        topic: t.name.to_string(),
                        partition: p.partition_index,
                        error,
                    });
                }
                out.insert((t.name.to_string(), p.partition_index), p.offset);
            }
        }
    }
    Ok(out)
}

/// The new offsets `to` gives `scope` of `group`: the plan, committed only by `execute`.
pub async fn reset(
    bootstrap: &str,
    group: &str,
    scope: &Scope,
    to: ResetTo,
    execute: bool,
) -> Result<Vec<ResetRow>, OffsetsError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let mut coordinator = inactive_group(&mut conn, group).await?;
    let current = committed(&mut coordinator, group).await?;
    let topics: Vec<(String, Option<Vec<i32>>)> = match scope {
        Scope::Topics(t) => t.clone(),
        Scope::AllTopics => {
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (t, p) in current.keys() {
                by_topic.entry(t.clone()).or_default().push(*p);
            }
            by_topic.into_iter().map(|(t, p)| (t, Some(p))).collect()
        }
    };
    if topics.is_empty() {
        return Err(OffsetsError::Usage(format!("group {group} has no committed offsets; name a --topic")));
    }
    let partitions = leaders(&mut conn, &topics).await?;
    let earliest = offsets_at(&partitions, -2).await?;
    let latest = offsets_at(&partitions, -1).await?;
    let at_time = match to {
        ResetTo::Datetime(ms) => Some(offsets_at(&partitions, ms).await?),
        _ => None,
    };
    let mut rows = Vec::new();
    for tp in partitions.keys() {
        let (low, high) = (earliest.get(tp).copied().unwrap_or(0), latest.get(tp).copied().unwrap_or(0));
        let now = current.get(tp).copied();
        let wanted = match to {
            ResetTo::Earliest => low,
            ResetTo::Latest => high,
            ResetTo::Datetime(_) => {
                at_time.as_ref().and_then(|m| m.get(tp)).copied().filter(|o| *o >= 0).unwrap_or(high)
            }
            ResetTo::ShiftBy(n) => now.unwrap_or(low).saturating_add(n),
            ResetTo::Offset(o) => o,
        };
        rows.push(ResetRow {
            topic: tp.0.clone(),
            partition: tp.1,
            current: now,
            new: wanted.clamp(low, high.max(low)),
        });
    }
    if execute {
        commit(&mut coordinator, group, &rows).await?;
    }
    Ok(rows)
}

async fn commit(coordinator: &mut Connection, group: &str, rows: &[ResetRow]) -> Result<(), OffsetsError> {
    let mut by_topic: BTreeMap<&str, Vec<&ResetRow>> = BTreeMap::new();
    for r in rows {
        by_topic.entry(r.topic.as_str()).or_default().push(r);
    }
    let mut request = OffsetCommitRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_string()));
    // A commit from outside the group: no generation, no member (what Kafka's tool sends).
    request.generation_id_or_member_epoch = -1;
    request.member_id = StrBytes::default();
    request.retention_time_ms = -1;
    request.topics = by_topic
        .into_iter()
        .map(|(t, rs)| {
            let mut topic = OffsetCommitRequestTopic::default();
            topic.name = TopicName(StrBytes::from_string(t.to_string()));
            topic.partitions = rs
                .into_iter()
                .map(|r| {
                    let mut p = OffsetCommitRequestPartition::default();
                    p.partition_index = r.partition;
                    p.committed_offset = r.new;
                    p.committed_leader_epoch = -1;
                    p
                })
                .collect();
            topic
        })
        .collect();
    for t in coordinator.call(&request, TIMEOUT).await?.topics {
        for p in t.partitions {
            if let Some(error) = ResponseError::try_from_code(p.error_code) {
                return Err(OffsetsError::Partition { topic: t.name.to_string(), partition: p.partition_index, error });
            }
        }
    }
    Ok(())
}

/// Deletes `group`'s committed offsets of `topics` (OffsetDelete); the partitions deleted.
pub async fn delete(
    bootstrap: &str,
    group: &str,
    topics: &[(String, Option<Vec<i32>>)],
) -> Result<Vec<(String, i32)>, OffsetsError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let address = find_coordinator(&mut conn, group, TIMEOUT).await?.addr;
    let mut coordinator = Connection::connect(&address, CLIENT_ID, TIMEOUT).await?;
    let partitions = leaders(&mut conn, topics).await?;
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in partitions.keys() {
        by_topic.entry(t.as_str()).or_default().push(*p);
    }
    let mut request = OffsetDeleteRequest::default();
    request.group_id = GroupId(StrBytes::from_string(group.to_string()));
    request.topics = by_topic
        .into_iter()
        .map(|(t, parts)| {
            let mut topic = OffsetDeleteRequestTopic::default();
            topic.name = TopicName(StrBytes::from_string(t.to_string()));
            topic.partitions = parts
                .into_iter()
                .map(|p| {
                    let mut dp = OffsetDeleteRequestPartition::default();
                    dp.partition_index = p;
                    dp
                })
                .collect();
            topic
        })
        .collect();
    let response = coordinator.call(&request, TIMEOUT).await?;
    check(response.error_code, || format!("OffsetDelete {group}"))?;
    let mut deleted = Vec::new();
    for t in response.topics {
        for p in t.partitions {
            if let Some(error) = ResponseError::try_from_code(p.error_code) {
                return Err(OffsetsError::Partition { topic: t.name.to_string(), partition: p.partition_index, error });
            }
            deleted.push((t.name.to_string(), p.partition_index));
        }
    }
    Ok(deleted)
}

/// The plan as a table.
pub fn format_plan(group: &str, rows: &[ResetRow], executed: bool) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let width = rows.iter().map(|r| r.topic.len()).max().unwrap_or(5).max(5);
    let _ = writeln!(out, "{:<width$}  {:>9}  {:>14}  {:>10}", "TOPIC", "PARTITION", "CURRENT-OFFSET", "NEW-OFFSET");
    for r in rows {
        let current = r.current.map_or("-".to_string(), |c| c.to_string());
        let _ = writeln!(out, "{:<width$}  {:>9}  {current:>14}  {:>10}", r.topic, r.partition, r.new);
    }
    if executed {
        let _ = writeln!(out, "Committed the new offsets of group {group}.");
    } else {
        let _ = writeln!(out, "Dry run: nothing committed. Add --execute to commit these offsets for group {group}.");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_and_topics_parse_as_kafka_tools_take_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00").ok(), Some(0));
        assert_eq!(parse_datetime("2026-11-29T16:00:00Z").ok(), Some(1_795_968_000_000));
        assert_eq!(parse_datetime("2026-11-29T17:00:00.5+01:00").ok(), Some(1_795_968_000_500));
        assert_eq!(parse_datetime("2000-02-29T12:00:00.123").ok(), Some(951_825_600_123));
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2026-13-01T00:00:00").is_err());
        assert_eq!(parse_topic("t").ok(), Some(("t".to_string(), None)));
        assert_eq!(parse_topic("t:0,2").ok(), Some(("t".to_string(), Some(vec![0, 2]))));
        assert!(parse_topic("t:x").is_err());
    }
}
