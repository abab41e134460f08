//! FetchSnapshot (key 59, KIP-630) of `__cluster_metadata` on the controller listener: the
//! latest metadata snapshot, from `position`, at most `max_bytes` at a time, for an
//! observer whose fetch offset was compacted away. A snapshot other than the latest gets
//! SNAPSHOT_NOT_FOUND (the observer fetches again and learns the new one).

use std::rc::Rc;

use kafka_protocol::messages::fetch_snapshot_response::{PartitionSnapshot, TopicSnapshot};
use kafka_protocol::messages::{ApiKey, FetchSnapshotRequest, FetchSnapshotResponse};
use kafka_protocol::ResponseError;

use super::Call;
use crate::controller::{Controller, METADATA_TOPIC};
use crate::server::api::{encode_frame, Reply};

pub async fn handle(controller: &Rc<Controller>, call: &Call, request: FetchSnapshotRequest) -> Reply {
    let mut response = FetchSnapshotResponse::default();
    let snapshot = controller.metadata_snapshot();
    for topic in &request.topics {
        let mut t = TopicSnapshot::default();
        t.name = topic.name.clone();
        for p in &topic.partitions {
            let mut part = PartitionSnapshot::default();
            part.index = p.partition;
            part.snapshot_id.end_offset = p.snapshot_id.end_offset;
            part.snapshot_id.epoch = p.snapshot_id.epoch;
            match &snapshot {
                _ if topic.name.0.as_str() != METADATA_TOPIC || p.partition != 0 => {
                    part.error_code = ResponseError::UnknownTopicOrPartition.code();
                }
                Some((index, _, data)) if *index as i64 == p.snapshot_id.end_offset => {
                    let start = usize::try_from(p.position).unwrap_or(usize::MAX).min(data.len());
                    let len = usize::try_from(request.max_bytes.max(1)).unwrap_or(1).min(data.len() - start);
                    part.size = data.len() as i64;
                    part.position = start as i64;
                    part.unaligned_records = data.slice(start..start + len);
                }
                _ => part.error_code = ResponseError::SnapshotNotFound.code(),
            }
            t.partitions.push(part);
        }
        response.topics.push(t);
    }
    encode_frame(ApiKey::FetchSnapshot, call.version, call.correlation_id, &response)
}
