//! Fetch (key 1) of `__cluster_metadata` on the controller listener: how a broker-only node
//! (an observer, as in KRaft) follows the committed metadata log. Any voter answers with
//! the committed entries after the fetch offset — `index u64 | length u32 | entry` each,
//! Weir's own framing in the records field, read only by Weir's observers — the commit
//! index as high watermark and the leader it knows; or, when those entries were compacted,
//! the snapshot to fetch first (`snapshot_id`, KIP-630). An empty answer waits up to
//! `max_wait_ms` for new commits.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::ResponseError;

use super::Call;
use crate::controller::{Controller, MetadataFetch, METADATA_TOPIC};
use crate::server::api::{encode_frame, Reply};

/// Longest long poll a fetch may ask for here.
const MAX_WAIT: Duration = Duration::from_secs(5);

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: FetchRequest) -> Reply {
    let mut response = FetchResponse::default();
    let cluster_ok = request.cluster_id.as_ref().is_none_or(|id| id.as_str() == controller.cluster_id());
    for topic in &request.topics {
        let mut t = FetchableTopicResponse::default();
        t.topic = topic.topic.clone();
        for p in &topic.partitions {
            let mut part = PartitionData::default();
            part.partition_index = p.partition;
            part.high_watermark = -1;
            part.last_stable_offset = -1;
            part.log_start_offset = -1;
            if !cluster_ok {
                part.error_code = ResponseError::InconsistentClusterId.code();
            } else if topic.topic.0.as_str() != METADATA_TOPIC || p.partition != 0 || p.fetch_offset < 1 {
                part.error_code = ResponseError::UnknownTopicOrPartition.code();
            } else {
                let after = (p.fetch_offset - 1) as u64;
                let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(MAX_WAIT);
                if matches!(controller.committed_after(after, 1), MetadataFetch::Entries { ref entries, .. } if entries.is_empty())
                {
                    controller.applied_past(after, Instant::now() + wait).await;
                }
                let max = usize::try_from(p.partition_max_bytes.max(1)).unwrap_or(1 << 20);
                fill(&mut part, controller.committed_after(after, max));
                let (leader, term) = controller.leader_and_term();
                part.current_leader.leader_id = BrokerId(leader.unwrap_or(-1));
                part.current_leader.leader_epoch = term.min(i32::MAX as u64) as i32;
            }
            t.partitions.push(part);
        }
        response.responses.push(t);
    }
    encode_frame(ApiKey::Fetch, call.version, call.correlation_id, &response)
}

fn fill(part: &mut PartitionData, fetched: MetadataFetch) {
    match fetched {
        MetadataFetch::Entries { entries, commit } => {
            part.high_watermark = commit as i64;
            let mut records = BytesMut::new();
            for (index, data) in entries {
                records.put_u64(index);
                records.put_u32(data.len() as u32);
                records.put_slice(&data);
            }
            part.records = Some(records.freeze());
        }
        MetadataFetch::Snapshot { index, term } => {
            part.snapshot_id.end_offset = index as i64;
            part.snapshot_id.epoch = term.min(i32::MAX as u64) as i32;
        }
    }
}
