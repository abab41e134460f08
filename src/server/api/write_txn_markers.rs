//! WriteTxnMarkers (key 27), v1: another broker's transaction coordinator has the markers
//! of a decided transaction written to the partitions this broker leads. Taken only from a
//! broker (its client id, `shard::brokers::BROKER_CLIENT_ID_PREFIX`); anyone else
//! gets CLUSTER_AUTHORIZATION_FAILED, as Kafka answers a client without ClusterAction.

use std::rc::Rc;

use kafka_protocol::messages::write_txn_markers_response::{
    WritableTxnMarkerPartitionResult, WritableTxnMarkerResult, WritableTxnMarkerTopicResult,
};
use kafka_protocol::messages::{ApiKey, WriteTxnMarkersRequest, WriteTxnMarkersResponse};
use kafka_protocol::ResponseError;

use super::{encode_frame, Pending, RequestContext};
use crate::shard::Shard;
use crate::txn::coordinator::MarkerRequest;
use crate::types::{wire_code, TopicPartition};

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: WriteTxnMarkersRequest) -> Pending {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let from_broker = crate::shard::brokers::from_broker(ctx.client_id.as_str());
    if !from_broker {
        tracing::warn!(peer = ?ctx.peer, client_id = %ctx.client_id.as_str(), "WriteTxnMarkers refused: only brokers write transaction markers");
    }
    let shard = shard.clone();
    Box::pin(async move {
        let mut r = WriteTxnMarkersResponse::default();
        for marker in request.markers {
            let partitions: Vec<TopicPartition> = marker
                .topics
                .iter()
                .flat_map(|t| t.partition_indexes.iter().map(move |p| TopicPartition::new(t.name.0.as_str(), *p)))
                .collect();
            let results = if from_broker {
                shard
                    .route_markers(MarkerRequest {
                        producer_id: marker.producer_id.0,
                        producer_epoch: marker.producer_epoch,
                        coordinator_epoch: marker.coordinator_epoch,
                        commit: marker.transaction_result,
                        partitions,
                    })
                    .await
            } else {
                partitions.into_iter().map(|tp| (tp, Some(ResponseError::ClusterAuthorizationFailed))).collect()
            };
            let mut result = WritableTxnMarkerResult::default();
            result.producer_id = marker.producer_id;
            result.topics = marker
                .topics
                .iter()
                .map(|t| {
                    let mut rt = WritableTxnMarkerTopicResult::default();
                    rt.name = t.name.clone();
                    rt.partitions = t
                        .partition_indexes
                        .iter()
                        .map(|p| {
                            let mut rp = WritableTxnMarkerPartitionResult::default();
                            rp.partition_index = *p;
                            let error = results
                                .iter()
                                .find(|(tp, _)| tp.topic == t.name.0.as_str() && tp.partition == *p)
                                .map_or(Some(ResponseError::UnknownServerError), |(_, e)| *e);
                            rp.error_code = wire_code(error);
                            rp
                        })
                        .collect();
                    rt
                })
                .collect();
            r.markers.push(result);
        }
        encode_frame(ApiKey::WriteTxnMarkers, version, correlation_id, &r)
    })
}
