//! OffsetFetch (key 9), v1-9: a group's committed offsets, for the partitions asked for or
//! (v2+, null topics) all of them; v8+ asks for several groups at once. A partition with
//! nothing committed answers offset -1.

use std::rc::Rc;

use futures::channel::oneshot;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{ApiKey, GroupId, OffsetFetchRequest, OffsetFetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Pending, Reply, RequestContext};
use crate::group::coordinator::{GroupCall, OffsetFound};
use crate::shard::Shard;

/// One group's answer: its offsets, or a group-level error.
type GroupOffsets = Result<Vec<OffsetFound>, ResponseError>;
/// A group and the partitions asked for (`None`: all it has).
type Ask = (GroupId, Option<Vec<(String, i32)>>);

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: OffsetFetchRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    // (group, partitions asked for; None = all)
    let asks: Vec<Ask> = if version >= 8 {
        request
            .groups
            .into_iter()
            .map(|g| {
                let wanted = g.topics.map(|ts| {
                    ts.into_iter()
                        .flat_map(|t| t.partition_indexes.into_iter().map(move |p| (t.name.0.to_string(), p)))
                        .collect()
                });
                (g.group_id, wanted)
            })
            .collect()
    } else {
        let wanted = request.topics.map(|ts| {
            ts.into_iter()
                .flat_map(|t| t.partition_indexes.into_iter().map(move |p| (t.name.0.to_string(), p)))
                .collect()
        });
        vec![(request.group_id, wanted)]
    };
    // v1 has no group-level error: an error goes on every partition asked for.
    let v1_partitions =
        if version < 2 { asks.first().and_then(|a| a.1.clone()).unwrap_or_default() } else { Vec::new() };
    let mut waits = Vec::with_capacity(asks.len());
    for (group, partitions) in asks {
        let (reply, rx) = oneshot::channel();
        if group.is_empty() {
            let _ = reply.send(Err(ResponseError::InvalidGroupId));
        } else {
            shard.route_group(GroupCall::FetchOffsets { group: group.to_string(), partitions, reply }).await;
        }
        waits.push((group, rx));
    }
    Box::pin(async move {
        let mut answers = Vec::with_capacity(waits.len());
        for (group, rx) in waits {
            answers.push((group, rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable))));
        }
        response(version, correlation_id, answers, v1_partitions)
    })
}

/// Offsets grouped by topic, in the order topics first appear.
fn by_topic(found: Vec<OffsetFound>) -> Vec<(String, Vec<OffsetFound>)> {
    let mut topics: Vec<(String, Vec<OffsetFound>)> = Vec::new();
    for f in found {
        match topics.iter_mut().find(|(t, _)| *t == f.0) {
            Some((_, v)) => v.push(f),
            None => topics.push((f.0.clone(), vec![f])),
        }
    }
    topics
}

fn response(
    version: i16,
    correlation_id: i32,
    answers: Vec<(GroupId, GroupOffsets)>,
    v1_partitions: Vec<(String, i32)>,
) -> Reply {
    let mut r = OffsetFetchResponse::default();
    if version >= 8 {
        r.groups = answers
            .into_iter()
            .map(|(group, answer)| {
                let mut g = OffsetFetchResponseGroup::default();
                g.group_id = group;
                match answer {
                    Err(e) => g.error_code = e.code(),
                    Ok(found) => {
                        g.topics = by_topic(found)
                            .into_iter()
                            .map(|(name, parts)| {
                                let mut t = OffsetFetchResponseTopics::default();
                                t.name = TopicName(StrBytes::from_string(name));
                                t.partitions = parts
                                    .into_iter()
                                    .map(|(_, p, v)| {
                                        let mut rp = OffsetFetchResponsePartitions::default();
                                        rp.partition_index = p;
                                        rp.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
                                        rp.committed_leader_epoch = v.as_ref().map_or(-1, |v| v.leader_epoch);
                                        rp.metadata =
                                            Some(StrBytes::from_string(v.map(|v| v.metadata).unwrap_or_default()));
                                        rp
                                    })
                                    .collect();
                                t
                            })
                            .collect();
                    }
                }
                g
            })
            .collect();
        return encode_frame(ApiKey::OffsetFetch, version, correlation_id, &r);
    }
    let Some((_, answer)) = answers.into_iter().next() else {
        return encode_frame(ApiKey::OffsetFetch, version, correlation_id, &r);
    };
    let (found, partition_error) = match answer {
        Err(e) if version >= 2 => {
            r.error_code = e.code();
            (Vec::new(), 0)
        }
        Err(e) => (v1_partitions.into_iter().map(|(t, p)| (t, p, None)).collect(), e.code()),
        Ok(found) => (found, 0),
    };
    r.topics = by_topic(found)
        .into_iter()
        .map(|(name, parts)| {
            let mut t = OffsetFetchResponseTopic::default();
            t.name = TopicName(StrBytes::from_string(name));
            t.partitions = parts
                .into_iter()
                .map(|(_, p, v)| {
                    let mut rp = OffsetFetchResponsePartition::default();
                    rp.partition_index = p;
                    rp.committed_offset = v.as_ref().map_or(-1, |v| v.offset);
                    rp.committed_leader_epoch =
                        if version >= 5 { v.as_ref().map_or(-1, |v| v.leader_epoch) } else { -1 };
                    rp.metadata = Some(StrBytes::from_string(v.map(|v| v.metadata).unwrap_or_default()));
                    rp.error_code = partition_error;
                    rp
                })
                .collect();
            t
        })
        .collect();
    encode_frame(ApiKey::OffsetFetch, version, correlation_id, &r)
}
