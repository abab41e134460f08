//! FindCoordinator (key 10), v0-4 (v4: several keys at once, KIP-699). A group's
//! coordinator is the broker leading its `__consumer_offsets` partition, a transactional
//! id's the one leading its `__transaction_state` partition; each topic is created on the
//! first request that needs it, as Kafka does.

use std::rc::Rc;

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{create_topics, encode_frame, Reply, RequestContext};
use crate::group::coordinator::offsets_partition;
use crate::group::OFFSETS_TOPIC;
use crate::shard::Shard;
use crate::txn::coordinator::txn_partition;
use crate::txn::TRANSACTION_STATE_TOPIC;

const KEY_TYPE_GROUP: i8 = 0;
const KEY_TYPE_TRANSACTION: i8 = 1;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: FindCoordinatorRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let keys = if version >= 4 { request.coordinator_keys } else { vec![request.key] };
    let internal = match request.key_type {
        KEY_TYPE_GROUP => Some(OFFSETS_TOPIC),
        KEY_TYPE_TRANSACTION => Some(TRANSACTION_STATE_TOPIC),
        _ => None,
    };
    if let Some(topic) = internal.filter(|t| !keys.is_empty() && shard.image().topic(t).is_none()) {
        let timeout = std::time::Duration::from_millis(shard.config.quorum_request_timeout_ms);
        let live = shard.image().live_brokers().count();
        let new_topic = if topic == OFFSETS_TOPIC {
            create_topics::offsets_topic(&shard.config, live)
        } else {
            create_topics::transaction_state_topic(&shard.config, live)
        };
        create_topics::create(shard, vec![new_topic], false, timeout, ctx.origin()).await;
    }
    let image = shard.image();
    let coordinators: Vec<Coordinator> = keys
        .into_iter()
        .map(|key| {
            let mut c = Coordinator::default();
            c.node_id = BrokerId(-1);
            c.port = -1;
            let partition = match request.key_type {
                KEY_TYPE_GROUP => offsets_partition(&image, key.as_str()),
                KEY_TYPE_TRANSACTION => txn_partition(&image, key.as_str()),
                _ => None,
            };
            let leader = partition.and_then(|tp| image.leader(&tp)).and_then(|id| image.brokers.get(&id));
            c.key = key;
            let refused = match request.key_type {
                KEY_TYPE_GROUP | KEY_TYPE_TRANSACTION if leader.is_some() => None,
                KEY_TYPE_GROUP => Some((ResponseError::CoordinatorNotAvailable, "__consumer_offsets is not available")),
                KEY_TYPE_TRANSACTION => {
                    Some((ResponseError::CoordinatorNotAvailable, "__transaction_state is not available"))
                }
                _ => Some((ResponseError::InvalidRequest, "unknown coordinator key type")),
            };
            match (refused, leader) {
                (None, Some(broker)) => {
                    c.node_id = BrokerId(broker.registration.id);
                    c.host = StrBytes::from_string(broker.registration.host.clone());
                    c.port = i32::from(broker.registration.port);
                }
                (None, None) => unreachable!("a coordinator is found when nothing refused"),
                (Some((error, message)), _) => {
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
