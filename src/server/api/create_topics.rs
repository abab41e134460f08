//! CreateTopics (key 19), v2-7: forwarded by the control shard to the active controller,
//! which validates with Kafka's rules (names, partition counts, replication factor,
//! assignments, configs, `validate_only`), places the partitions and commits; answered
//! once this node's image has the topics, or at the request's timeout.

use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use kafka_protocol::messages::{ApiKey, CreateTopicsRequest, CreateTopicsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{encode_frame, Reply, RequestContext};
use crate::cluster::configs::describe_topic;
use crate::config::Config;
use crate::group::OFFSETS_TOPIC;
use crate::protocol::envelope::ClientOrigin;
use crate::shard::message::{ControlRequest, NewTopic, TopicOutcome};
use crate::shard::Shard;
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::types::wire_code;

/// Kafka's config source for a config set on the topic.
const CONFIG_SOURCE_TOPIC: i8 = 1;

/// How long a request that gives no timeout (0 or less) may wait for the controller.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A request's `timeout_ms`, or [`DEFAULT_TIMEOUT`] when it gives none.
pub fn request_timeout(timeout_ms: i32) -> Duration {
    u64::try_from(timeout_ms).ok().filter(|ms| *ms > 0).map_or(DEFAULT_TIMEOUT, Duration::from_millis)
}

/// Asks the control shard to create topics (it forwards them to the active controller, in
/// an envelope from `origin` when a client asked); an empty answer means it is not running.
pub async fn create(
    shard: &Rc<Shard>,
    topics: Vec<NewTopic>,
    validate_only: bool,
    timeout: Duration,
    origin: Option<ClientOrigin>,
) -> Vec<TopicOutcome> {
    let (reply, rx) = oneshot::channel();
    let asked = ControlRequest::CreateTopics { topics, origin, validate_only, timeout, reply };
    if shard.send_control(asked).await.is_err() {
        return Vec::new();
    }
    rx.await.unwrap_or_default()
}

/// How often one topic's refused auto-creation is logged (clients retry Metadata often).
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

thread_local! {
    static REFUSALS_LOGGED: std::cell::RefCell<std::collections::HashMap<String, std::time::Instant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Creates topics with the broker defaults (auto-creation by Metadata or Produce);
/// `__consumer_offsets` and `__transaction_state` get their own settings. Returns the topics the controller refused
/// (a limit, a bad default) with the error, which Metadata reports for them; the reason
/// goes to the log, since Metadata has no field for it. Forwarded with the identity of the
/// client whose request named the topics (`origin`), as Kafka does.
pub async fn auto_create(
    shard: &Rc<Shard>,
    names: Vec<String>,
    origin: Option<ClientOrigin>,
) -> BTreeMap<String, ResponseError> {
    let topics = names
        .into_iter()
        .map(|name| {
            if name == OFFSETS_TOPIC {
                return offsets_topic(&shard.config, shard.image().live_brokers().count());
            }
            if name == TRANSACTION_STATE_TOPIC {
                return transaction_state_topic(&shard.config, shard.image().live_brokers().count());
            }
            NewTopic { name, num_partitions: -1, replication_factor: -1, assignments: Vec::new(), configs: Vec::new() }
        })
        .collect();
    let timeout = Duration::from_millis(shard.config.quorum_request_timeout_ms);
    let mut refused = BTreeMap::new();
    for outcome in create(shard, topics, false, timeout, origin).await {
        let Some(error) = outcome.error.filter(|e| *e != ResponseError::TopicAlreadyExists) else { continue };
        let now = std::time::Instant::now();
        let log = REFUSALS_LOGGED.with(|l| {
            let mut l = l.borrow_mut();
            l.retain(|_, at| now.duration_since(*at) < REFUSAL_LOG_INTERVAL);
            l.insert(outcome.name.clone(), now).is_none()
        });
        if log {
            tracing::warn!(topic = %outcome.name, ?error, message = outcome.error_message.as_deref().unwrap_or(""), "auto-creation refused");
        }
        refused.insert(outcome.name, error);
    }
    refused
}

/// `__consumer_offsets` as Kafka creates it: `offsets.topic.num.partitions` partitions,
/// compacted, with `offsets.topic.segment.bytes` segments, and
/// `offsets.topic.replication.factor` replicas (at most the `live_brokers` there are).
pub fn offsets_topic(config: &Config, live_brokers: usize) -> NewTopic {
    let replicas = (config.offsets_replication_factor.max(1) as usize).min(live_brokers.max(1));
    NewTopic {
        name: OFFSETS_TOPIC.to_string(),
        num_partitions: config.offsets_partitions,
        replication_factor: replicas as i16,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("segment.bytes".into(), Some(config.offsets_segment_bytes.to_string())),
        ],
    }
}

/// `__transaction_state` as Kafka creates it at the first transactional FindCoordinator:
/// compacted, `transaction.state.log.*` partitions, replicas and segment size.
pub fn transaction_state_topic(config: &Config, live_brokers: usize) -> NewTopic {
    let replicas = (config.txn_replication_factor.max(1) as usize).min(live_brokers.max(1));
    NewTopic {
        name: TRANSACTION_STATE_TOPIC.to_string(),
        num_partitions: config.txn_partitions,
        replication_factor: replicas as i16,
        assignments: Vec::new(),
        configs: vec![
            ("cleanup.policy".into(), Some("compact".into())),
            ("segment.bytes".into(), Some(config.txn_segment_bytes.to_string())),
        ],
    }
}

/// Topics only the broker itself creates (Kafka: "Creation of internal topic ... is
/// prohibited."): a client that made one would get an offsets topic with the wrong layout.
const INTERNAL_TOPICS: &[&str] = &[OFFSETS_TOPIC, TRANSACTION_STATE_TOPIC, "__cluster_metadata"];

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, request: CreateTopicsRequest) -> Reply {
    let (version, correlation_id) = (ctx.version, ctx.correlation_id);
    let names: Vec<String> = request.topics.iter().map(|t| t.name.0.to_string()).collect();
    let topics: Vec<NewTopic> =
        request.topics.into_iter().filter(|t| !INTERNAL_TOPICS.contains(&t.name.0.as_str())).map(new_topic).collect();
    let asked = topics.len();
    let timeout = request_timeout(request.timeout_ms);
    let mut created =
        if asked == 0 { Vec::new() } else { create(shard, topics, request.validate_only, timeout, ctx.origin()).await };
    if created.len() != asked {
        created = Vec::new();
    }
    let mut created = created.into_iter();
    let outcomes = names.into_iter().map(|name| {
        if INTERNAL_TOPICS.contains(&name.as_str()) {
            let message = format!("Creation of internal topic {name} is prohibited.");
            return TopicOutcome {
                name,
                error: Some(ResponseError::InvalidRequest),
                error_message: Some(message),
                num_partitions: -1,
                replication_factor: -1,
                ..Default::default()
            };
        }
        created.next().unwrap_or_else(|| TopicOutcome {
            name,
            error: Some(ResponseError::NotController),
            ..Default::default()
        })
    });
    let mut response = CreateTopicsResponse::default();
    let image = shard.image();
    response.topics = outcomes
        .map(|o| {
            let given: BTreeMap<String, String> = o.configs.iter().cloned().collect();
            let mut r = result(version, o);
            // From v5 Kafka answers with every config of the new topic and its source.
            if let Some(configs) = r.configs.as_mut() {
                *configs = describe_topic(&image, &shard.config, shard.config.node_id, &given, None)
                    .into_iter()
                    .map(|d| {
                        let mut c = CreatableTopicConfigs::default();
                        c.name = StrBytes::from_static_str(d.name);
                        c.value = d.value.map(StrBytes::from_string);
                        c.read_only = d.read_only;
                        c.config_source = d.source as i8;
                        c
                    })
                    .collect();
            }
            r
        })
        .collect();
    encode_frame(ApiKey::CreateTopics, version, correlation_id, &response)
}

/// A topic of the request, as the controller takes it.
pub fn new_topic(t: CreatableTopic) -> NewTopic {
    NewTopic {
        name: t.name.0.to_string(),
        num_partitions: t.num_partitions,
        replication_factor: t.replication_factor,
        assignments: t
            .assignments
            .into_iter()
            .map(|a| (a.partition_index, a.broker_ids.into_iter().map(|b| b.0).collect()))
            .collect(),
        configs: t.configs.into_iter().map(|c| (c.name.to_string(), c.value.map(|v| v.to_string()))).collect(),
    }
}

/// One topic's answer, at `version`.
pub fn result(version: i16, o: TopicOutcome) -> CreatableTopicResult {
    let mut r = CreatableTopicResult::default();
    r.name = TopicName(StrBytes::from_string(o.name));
    r.error_code = wire_code(o.error);
    r.error_message = o.error_message.map(StrBytes::from_string);
    r.num_partitions = o.num_partitions;
    r.replication_factor = o.replication_factor;
    if o.error.is_none() {
        r.topic_id = o.topic_id;
        if version >= 5 {
            r.configs = Some(
                o.configs
                    .into_iter()
                    .map(|(k, v)| {
                        let mut c = CreatableTopicConfigs::default();
                        c.name = StrBytes::from_string(k);
                        c.value = Some(StrBytes::from_string(v));
                        c.config_source = CONFIG_SOURCE_TOPIC;
                        c
                    })
                    .collect(),
            );
        }
    }
    r
}
