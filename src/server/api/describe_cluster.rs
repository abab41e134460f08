//! DescribeCluster (key 60), v0-2: the cluster id, the controller clients should send
//! controller requests to (this broker, as in Metadata) and the brokers — live ones, or from v2 on
//! request every registered broker with whether it is fenced (KIP-1073). Endpoint type 2
//! (controllers, KIP-919) is refused: clients reach controllers through brokers here.

use std::rc::Rc;

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{ApiKey, BrokerId, DescribeClusterRequest, DescribeClusterResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::shard::Shard;

/// Kafka's endpoint types: brokers, controllers.
const ENDPOINT_BROKERS: i8 = 1;

/// With no authorizer, the cluster's operations are reported as "not requested".
const OPERATIONS_OMITTED: i32 = i32::MIN;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: DescribeClusterRequest) -> Reply {
    let image = shard.image();
    let config = &shard.config;
    let mut response = DescribeClusterResponse::default();
    response.endpoint_type = ENDPOINT_BROKERS;
    response.cluster_authorized_operations = OPERATIONS_OMITTED;
    response.cluster_id = StrBytes::from_string(config.cluster_id.clone().unwrap_or_default());
    if ctx.version >= 1 && request.endpoint_type != ENDPOINT_BROKERS {
        response.error_code = ResponseError::UnsupportedEndpointType.code();
        response.error_message = Some(StrBytes::from_static_str("only broker endpoints are described here"));
        return encode_frame(ApiKey::DescribeCluster, ctx.version, ctx.correlation_id, &response);
    }
    // As in Metadata: this broker, which forwards controller requests (KIP-590).
    response.controller_id = BrokerId(config.node_id);
    let all = ctx.version >= 2 && request.include_fenced_brokers;
    response.brokers = image
        .brokers
        .values()
        .filter(|b| all || !b.fenced)
        .map(|b| {
            let mut d = DescribeClusterBroker::default();
            d.broker_id = BrokerId(b.registration.id);
            d.host = StrBytes::from_string(b.registration.host.clone());
            d.port = i32::from(b.registration.port);
            d.rack = b.registration.rack.clone().map(StrBytes::from_string);
            d.is_fenced = b.fenced;
            d
        })
        .collect();
    encode_frame(ApiKey::DescribeCluster, ctx.version, ctx.correlation_id, &response)
}
