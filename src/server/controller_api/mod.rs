//! The APIs the controller listener serves: Kafka's broker-to-controller RPCs, one file per
//! API, in a registry like the client listener's (`server::api`) — what ApiVersions
//! advertises here is exactly what dispatch accepts. Handlers run on the control shard.

pub mod allocate_producer_ids;
pub mod alter_configs;
pub mod alter_partition;
pub mod api_versions;
pub mod broker_heartbeat;
pub mod broker_registration;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_topics;
pub mod describe_quorum;
pub mod elect_leaders;
pub mod envelope;
pub mod fetch;
pub mod fetch_snapshot;
pub mod incremental_alter_configs;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::Bytes;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::Decodable;

use super::api::{Reply, RequestError};
use crate::controller::Controller;

/// One request on the controller listener.
pub struct Call {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
}

impl Call {
    pub fn decode<R: Decodable>(&self, body: &mut Bytes) -> Result<R, RequestError> {
        R::decode(body, self.version).map_err(|e| RequestError::Malformed {
            api: self.api,
            version: self.version,
            reason: e.to_string(),
        })
    }
}

pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Reply, RequestError>> + 'a>>;
pub type Handler = for<'a> fn(&'a Rc<Controller>, &'a Call, Bytes) -> HandlerFuture<'a>;

#[derive(Clone, Copy)]
pub struct ControllerApi {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub handler: Handler,
}

macro_rules! api {
    ($key:ident, $min:literal..=$max:literal, $module:ident) => {
        ControllerApi {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            handler: |controller, call, mut body| {
                Box::pin(async move { Ok($module::handle(controller, call, call.decode(&mut body)?).await) })
            },
        }
    };
}

pub const REGISTRY: &[ControllerApi] = &[
    ControllerApi { key: ApiKey::ApiVersions, min: 0, max: 3, handler: api_versions::handler },
    api!(BrokerRegistration, 0..=4, broker_registration),
    api!(BrokerHeartbeat, 0..=1, broker_heartbeat),
    api!(CreateTopics, 2..=7, create_topics),
    api!(DeleteTopics, 1..=6, delete_topics),
    api!(CreatePartitions, 0..=3, create_partitions),
    api!(AllocateProducerIds, 0..=0, allocate_producer_ids),
    // v2: topic ids; v3 adds broker epochs per ISR member (KIP-903), not needed here.
    api!(AlterPartition, 2..=2, alter_partition),
    api!(DescribeQuorum, 0..=2, describe_quorum),
    api!(ElectLeaders, 0..=2, elect_leaders),
    // v12: topics by name, cluster id, snapshot ids (KIP-630); observers ask exactly v12.
    api!(Fetch, 12..=12, fetch),
    api!(FetchSnapshot, 0..=1, fetch_snapshot),
    api!(AlterConfigs, 0..=2, alter_configs),
    api!(IncrementalAlterConfigs, 0..=1, incremental_alter_configs),
    // A client's topic or config change forwarded by a broker with the client's identity.
    api!(Envelope, 0..=0, envelope),
];

pub fn supported(key: ApiKey) -> Option<&'static ControllerApi> {
    REGISTRY.iter().find(|a| a.key == key)
}
