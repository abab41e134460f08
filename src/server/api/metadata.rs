//! Metadata (key 3), v0-12: the live (registered, unfenced) brokers, a controller id (this
//! broker, which forwards controller requests), topics
//! with each partition's leader, replicas and in-sync replicas (a partition whose leader is
//! fenced reports LEADER_NOT_AVAILABLE), and auto-creation of requested topics when both
//! the broker (`auto.create.topics.enable`) and the request (`allow_auto_topic_creation`,
//! implied before v4) allow it. Every broker answers from the same image.

use std::rc::Rc;

use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{ApiKey, BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{create_topics, encode_frame, Reply, RequestContext};
use crate::cluster::{MetadataImage, TopicMeta};
use crate::controller::valid_topic_name;
use crate::shard::Shard;
use crate::types::TopicPartition;

/// Topics Kafka marks internal (clients leave them out of pattern subscriptions).
pub(super) const INTERNAL_TOPICS: &[&str] = &["__consumer_offsets", "__transaction_state"];

/// Kafka's "authorized operations not requested" value.
const OPERATIONS_OMITTED: i32 = i32::MIN;

/// ACL operation codes (Kafka's `AclOperation`), as bits of the authorized-operations field.
const fn ops(codes: &[u8]) -> i32 {
    let mut bits = 0;
    let mut i = 0;
    while i < codes.len() {
        bits |= 1 << codes[i];
        i += 1;
    }
    bits
}
/// With no authorizer every supported operation is allowed, as Kafka reports: topics
/// support READ, WRITE, CREATE, DELETE, ALTER, DESCRIBE, DESCRIBE_CONFIGS, ALTER_CONFIGS.
pub(super) const TOPIC_OPERATIONS: i32 = ops(&[3, 4, 5, 6, 7, 8, 10, 11]);
/// The cluster: CREATE, ALTER, DESCRIBE, CLUSTER_ACTION, DESCRIBE_CONFIGS, ALTER_CONFIGS,
/// IDEMPOTENT_WRITE.
const CLUSTER_OPERATIONS: i32 = ops(&[5, 7, 8, 9, 10, 11, 12]);

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: MetadataRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let config = &shard.config;
    let allow_create = config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
    // v0: an empty list means every topic; v1+: null means every topic.
    let requested = match request.topics {
        Some(t) if !(version == 0 && t.is_empty()) => Some(t),
        _ => None,
    };
    let mut refused = std::collections::BTreeMap::new();
    if let Some(topics) = &requested {
        let missing: Vec<String> = topics
            .iter()
            .filter_map(|t| t.name.as_ref().map(|n| n.0.to_string()))
            .filter(|n| shard.image().topic(n).is_none() && valid_topic_name(n).is_ok())
            .collect();
        if allow_create && !missing.is_empty() {
            refused = create_topics::auto_create(shard, missing, ctx.origin()).await;
        }
    }
    let image = shard.image();
    let mut response = MetadataResponse::default();
    response.brokers = image
        .live_brokers()
        .map(|b| {
            let mut broker = MetadataResponseBroker::default();
            broker.node_id = BrokerId(b.registration.id);
            broker.host = StrBytes::from_string(b.registration.host.clone());
            broker.port = i32::from(b.registration.port);
            broker.rack = b.registration.rack.clone().map(StrBytes::from_string);
            broker
        })
        .collect();
    response.cluster_id = config.cluster_id.clone().map(StrBytes::from_string);
    // Clients send controller requests (CreateTopics, ...) to this id. Every broker forwards
    // them to the active controller, so, as Kafka's KRaft brokers do (KIP-590), name a live
    // broker rather than the quorum's leader — this one: a client never waits on a
    // controller that has just died. DescribeQuorum names the quorum's leader.
    response.controller_id = BrokerId(config.node_id);
    // Asked for from v8; the cluster field exists in v8-10 only.
    response.cluster_authorized_operations =
        if request.include_cluster_authorized_operations && (8..=10).contains(&version) {
            CLUSTER_OPERATIONS
        } else {
            OPERATIONS_OMITTED
        };
    let view = View {
        image: &image,
        operations: if request.include_topic_authorized_operations && version >= 8 {
            TOPIC_OPERATIONS
        } else {
            OPERATIONS_OMITTED
        },
        cut_off: shard.controller_lost().then_some(config.node_id),
        refused: &refused,
    };
    response.topics = match requested {
        None => image.topics.values().map(|t| view.topic_entry(t)).collect(),
        Some(topics) => topics
            .iter()
            .map(|t| match &t.name {
                Some(name) => view.by_name(name.0.as_str()),
                None => view.by_id(t.topic_id),
            })
            .collect(),
    };
    encode_frame(ApiKey::Metadata, version, correlation_id, &response)
}

/// What a Metadata answer shows of the topics.
struct View<'a> {
    image: &'a MetadataImage,
    operations: i32,
    /// This broker, when it has lost the active controller for longer than its lease.
    cut_off: Option<i32>,
    /// Topics whose auto-creation the controller refused, with its error.
    refused: &'a std::collections::BTreeMap<String, ResponseError>,
}

impl View<'_> {
    fn by_name(&self, name: &str) -> MetadataResponseTopic {
        if let Some(meta) = self.image.topic(name) {
            return self.topic_entry(meta);
        }
        let error = if valid_topic_name(name).is_err() {
            ResponseError::InvalidTopicException
        } else if let Some(refused) = self.refused.get(name) {
            *refused
        } else {
            ResponseError::UnknownTopicOrPartition
        };
        let mut t = MetadataResponseTopic::default();
        t.error_code = error.code();
        t.name = Some(TopicName(StrBytes::from_string(name.to_string())));
        t.topic_authorized_operations = OPERATIONS_OMITTED;
        t
    }

    fn by_id(&self, id: uuid::Uuid) -> MetadataResponseTopic {
        if let Some(meta) = self.image.ids.get(&id).and_then(|n| self.image.topic(n)) {
            return self.topic_entry(meta);
        }
        let mut t = MetadataResponseTopic::default();
        t.error_code = ResponseError::UnknownTopicId.code();
        t.topic_id = id;
        t.topic_authorized_operations = OPERATIONS_OMITTED;
        t
    }

    fn topic_entry(&self, meta: &TopicMeta) -> MetadataResponseTopic {
        let (image, operations) = (self.image, self.operations);
        let mut t = MetadataResponseTopic::default();
        t.name = Some(TopicName(StrBytes::from_string(meta.name.clone())));
        t.topic_id = meta.id;
        t.is_internal = INTERNAL_TOPICS.contains(&meta.name.as_str());
        t.topic_authorized_operations = operations;
        t.partitions = (0..meta.partitions)
            .map(|p| {
                let replicas = meta.replicas_of(p);
                let state = meta.state_of(p);
                let leader = image.leader(&TopicPartition::new(meta.name.clone(), p));
                let leader = match (leader, self.cut_off, state) {
                    // This broker lost the controller: another in-sync replica may lead by now.
                    // Name the one the controller elects first; if it does not lead, it says who
                    // does (NOT_LEADER_OR_FOLLOWER with the current leader, or its Metadata).
                    (Some(l), Some(me), Some(s)) if l == me => {
                        replicas.iter().copied().find(|b| *b != me && s.isr.contains(b)).or(leader)
                    }
                    _ => leader,
                };
                let mut part = MetadataResponsePartition::default();
                part.partition_index = p;
                part.leader_id = BrokerId(leader.unwrap_or(-1));
                part.leader_epoch = state.map_or(-1, |s| s.leader_epoch.max(0));
                part.replica_nodes = replicas.iter().map(|b| BrokerId(*b)).collect();
                part.isr_nodes = state.map(|s| s.isr.iter().map(|b| BrokerId(*b)).collect()).unwrap_or_default();
                part.offline_replicas = replicas.iter().filter(|b| !image.is_live(**b)).map(|b| BrokerId(*b)).collect();
                if leader.is_none() {
                    part.error_code = ResponseError::LeaderNotAvailable.code();
                }
                part
            })
            .collect();
        t
    }
}
