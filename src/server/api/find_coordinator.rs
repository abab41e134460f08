//! FindCoordinator (key 10), v0-4 (v4: several keys at once, KIP-699). Every group's
//! coordinator is this broker; `__consumer_offsets` is created on the first request, as
//! Kafka does. Transaction coordinators are refused: transactions are not implemented.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{create_topics, encode_frame, Reply, RequestContext};
use crate::group::OFFSETS_TOPIC;
use crate::shard::Shard;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: FindCoordinatorRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let keys = if version >= 4 { request.coordinator_keys } else { vec![request.key] };
    if request.key_type == KEY_TYPE_GROUP && !keys.is_empty() && shard.image().topic(OFFSETS_TOPIC).is_none() {
        create_topics::create(shard, vec![create_topics::offsets_topic(&shard.config)], false).await;
    }
    let ready = shard.image().topic(OFFSETS_TOPIC).is_some();
    let config = &shard.config;
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            c.key = key;
            c.node_id = BrokerId(-1);
            c.port = -1;
            let refused = match request.key_type {
                KEY_TYPE_GROUP if ready => None,
                KEY_TYPE_GROUP => Some((ResponseError::CoordinatorNotAvailable, "__consumer_offsets is not available")),
                KEY_TYPE_TRANSACTION => Some((ResponseError::InvalidRequest, "transactions are not supported")),
                _ => Some((ResponseError::InvalidRequest, "unknown coordinator key type")),
            };
            match refused {
                None => {
                    c.node_id = BrokerId(config.node_id);
                    c.host = StrBytes::from_string(config.advertised.0.clone());
                    c.port = i32::from(config.advertised.1);
                }
                Some((error, message)) => {
                    c.error_code = error.code();
                    c.error_message = Some(StrBytes::from_static_str(message));
                }
            }
            c
        })
        .collect();
    let mut response = FindCoordinatorResponse::default();
    if version >= 4 {
        response.coordinators = coordinators;
    } else if let Some(c) = coordinators.into_iter().next() {
        response.error_code = c.error_code;
        response.error_message = if version >= 1 { c.error_message } else { None };
        response.node_id = c.node_id;
        response.host = c.host;
        response.port = c.port;
    }
    encode_frame(ApiKey::FindCoordinator, version, correlation_id, &response)
}
