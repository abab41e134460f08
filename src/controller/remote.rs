//! Calls to the active controller from this node: topic changes and producer-id blocks
//! forwarded for the data shards, and the broker's registration and heartbeats. When the
//! active controller is this node, the caller is told to act in place ([`Route::Here`]);
//! otherwise the request goes over the controller listener as Kafka's own RPC
//! (CreateTopics, CreatePartitions, DeleteTopics, AlterConfigs, AllocateProducerIds,
//! AlterPartition, ElectLeaders), on one cached connection, retried while the leader is
//! unknown, unreachable or answers NOT_CONTROLLER, until the caller's deadline. A change a
//! client asked for travels in an Envelope with the client's principal, address and client
//! id (KIP-590), as Kafka forwards it; the broker's own changes (auto-created internal topics
//! without a client, producer ids, ISR changes) go bare.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::create_partitions_request::{CreatePartitionsAssignment, CreatePartitionsTopic};
use kafka_protocol::messages::create_topics_request::{
    CreatableReplicaAssignment, CreatableTopic, CreatableTopicConfig,
};
use kafka_protocol::messages::{
    alter_configs_request, alter_partition_request, elect_leaders_request, incremental_alter_configs_request,
};
use kafka_protocol::messages::{
    AllocateProducerIdsRequest, AlterPartitionRequest, BrokerId, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, ElectLeadersRequest, TopicName,
};
use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest, IncrementalAlterConfigsResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;
use tracing::{debug, warn};

use super::configs::ConfigOutcome;
use super::CommitError;
use crate::client::{ClientError, Connection};
use crate::cluster::configs::{ConfigChange, ConfigOp};
use crate::cluster::election::ElectionType;
use crate::config::Config;
use crate::protocol::envelope::{self, ClientOrigin, EnvelopeError};
use crate::shard::message::{ElectionResult, IsrChange, NewPartitions, NewTopic, TopicOutcome};

/// Why one call to a controller failed.
#[derive(Debug, thiserror::Error)]
enum CallError {
    /// Unreachable, timed out, or a connection out of step: worth asking again.
    #[error(transparent)]
    Client(ClientError),
    #[error(transparent)]
    Envelope(EnvelopeError),
}

/// Wait before asking again when the leader is unknown or just changed.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// Where a call goes.
pub enum Route<T> {
    /// This node is the active controller: act in place.
    Here,
    /// The active controller elsewhere answered.
    There(T),
}

pub struct RemoteController {
    config: Arc<Config>,
    /// The connection to the last active controller reached, by its node id.
    connection: RefCell<Option<(i32, Connection)>>,
}

impl RemoteController {
    pub fn new(config: Arc<Config>) -> RemoteController {
        RemoteController { config, connection: RefCell::new(None) }
    }

    /// Sends `request` to the active controller (`leader()` names it), in an envelope from
    /// `origin` when given, until it answers and `retry` does not ask for another try, or
    /// `deadline` passes. An envelope the controller refuses (but for NOT_CONTROLLER) fails
    /// at once: asking again would not change the answer.
    pub async fn call<R: Request>(
        &self,
        leader: impl Fn() -> Option<i32>,
        request: &R,
        origin: Option<&ClientOrigin>,
        deadline: Instant,
        retry: impl Fn(&R::Response) -> bool,
    ) -> Result<Route<R::Response>, CommitError> {
        let me = self.config.node_id;
        let total = deadline.saturating_duration_since(Instant::now());
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(CommitError::Unanswered(total));
            }
            match leader() {
                Some(id) if id == me => return Ok(Route::Here),
                Some(id) => match self.call_once(id, request, origin, left).await {
                    Ok(response) if !retry(&response) => return Ok(Route::There(response)),
                    Ok(_) | Err(CallError::Envelope(EnvelopeError::Refused(ResponseError::NotController))) => {
                        debug!(controller = id, "not the active controller any more; asking again")
                    }
                    Err(CallError::Envelope(e)) => {
                        warn!(controller = id, error = %e, "forwarding to the active controller failed");
                        return Err(CommitError::Failed(format!("forwarding to the active controller failed: {e}")));
                    }
                    Err(CallError::Client(e)) => {
                        debug!(controller = id, error = %e, "controller call failed; asking again")
                    }
                },
                None => {}
            }
            let pause = RETRY_BACKOFF.min(deadline.saturating_duration_since(Instant::now()));
            glommio::timer::sleep(pause).await;
        }
    }

    async fn call_once<R: Request>(
        &self,
        id: i32,
        request: &R,
        origin: Option<&ClientOrigin>,
        timeout: Duration,
    ) -> Result<R::Response, CallError> {
        let cached = self.connection.borrow_mut().take().filter(|(node, _)| *node == id);
        let mut connection = match cached {
            Some((_, c)) => c,
            None => {
                let Some(voter) = self.config.voters.iter().find(|v| v.node_id == id) else {
                    return Err(CallError::Client(ClientError::Protocol {
                        addr: format!("node {id}"),
                        message: "not among controller.quorum.voters".into(),
                    }));
                };
                let client_id = format!("weir-broker-{}", self.config.node_id);
                Connection::connect(&voter.addr(), &client_id, timeout).await.map_err(CallError::Client)?
            }
        };
        let response = match origin {
            None => connection.call(request, timeout).await.map_err(CallError::Client),
            Some(origin) => Self::forward(&mut connection, request, origin, timeout).await,
        };
        // An envelope's refusal came in a whole response: the connection stays usable.
        if matches!(response, Ok(_) | Err(CallError::Envelope(_))) {
            *self.connection.borrow_mut() = Some((id, connection));
        }
        response
    }

    /// `request` in an envelope from `origin`, at the highest version both sides speak; bare
    /// to a controller that does not take envelopes (an older node during an upgrade).
    async fn forward<R: Request>(
        connection: &mut Connection,
        request: &R,
        origin: &ClientOrigin,
        timeout: Duration,
    ) -> Result<R::Response, CallError> {
        if connection.broker_versions().range(kafka_protocol::messages::ApiKey::Envelope).is_none() {
            return connection.call(request, timeout).await.map_err(CallError::Client);
        }
        let api = kafka_protocol::messages::ApiKey::try_from(R::KEY)
            .map_err(|_| CallError::Envelope(EnvelopeError::BadRequest(format!("unknown API key {}", R::KEY))))?;
        let version = connection.version(api).map_err(CallError::Client)?;
        let wrapped = envelope::wrap(origin, version, request).map_err(CallError::Envelope)?;
        let answer = connection.call(&wrapped, timeout).await.map_err(CallError::Client)?;
        envelope::open_response::<R>(answer, origin, version).map_err(CallError::Envelope)
    }

    pub async fn create_topics(
        &self,
        leader: impl Fn() -> Option<i32>,
        topics: &[NewTopic],
        validate_only: bool,
        deadline: Instant,
        origin: Option<&ClientOrigin>,
    ) -> Result<Route<Vec<TopicOutcome>>, CommitError> {
        let mut request = CreateTopicsRequest::default();
        request.validate_only = validate_only;
        request.timeout_ms =
            deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        request.topics = topics.iter().map(creatable).collect();
        let not_controller = |r: &kafka_protocol::messages::CreateTopicsResponse| {
            r.topics.iter().any(|t| t.error_code == ResponseError::NotController.code())
        };
        Ok(match self.call(leader, &request, origin, deadline, not_controller).await? {
            Route::Here => Route::Here,
            Route::There(response) => Route::There(
                response
                    .topics
                    .into_iter()
                    .map(|t| TopicOutcome {
                        name: t.name.0.to_string(),
                        topic_id: t.topic_id,
                        error: ResponseError::try_from_code(t.error_code),
                        error_message: t.error_message.map(|m| m.to_string()),
                        num_partitions: t.num_partitions,
                        replication_factor: t.replication_factor,
                        configs: t
                            .configs
                            .unwrap_or_default()
                            .into_iter()
                            .filter_map(|c| Some((c.name.to_string(), c.value?.to_string())))
                            .collect(),
                    })
                    .collect(),
            ),
        })
    }

    pub async fn create_partitions(
        &self,
        leader: impl Fn() -> Option<i32>,
        topics: &[NewPartitions],
        validate_only: bool,
        deadline: Instant,
        origin: Option<&ClientOrigin>,
    ) -> Result<Route<Vec<TopicOutcome>>, CommitError> {
        let mut request = CreatePartitionsRequest::default();
        request.validate_only = validate_only;
        request.timeout_ms =
            deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        request.topics = topics
            .iter()
            .map(|t| {
                let mut topic = CreatePartitionsTopic::default();
                topic.name = TopicName(StrBytes::from_string(t.name.clone()));
                topic.count = t.count;
                topic.assignments = t.assignments.as_ref().map(|a| {
                    a.iter()
                        .map(|brokers| {
                            let mut assignment = CreatePartitionsAssignment::default();
                            assignment.broker_ids = brokers.iter().map(|b| BrokerId(*b)).collect();
                            assignment
                        })
                        .collect()
                });
                topic
            })
            .collect();
        let not_controller = |r: &kafka_protocol::messages::CreatePartitionsResponse| {
            r.results.iter().any(|t| t.error_code == ResponseError::NotController.code())
        };
        Ok(match self.call(leader, &request, origin, deadline, not_controller).await? {
            Route::Here => Route::Here,
            Route::There(response) => Route::There(
                response
                    .results
                    .into_iter()
                    .map(|t| TopicOutcome {
                        name: t.name.0.to_string(),
                        error: ResponseError::try_from_code(t.error_code),
                        error_message: t.error_message.map(|m| m.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
    }

    /// Alters configs: IncrementalAlterConfigs, or AlterConfigs when the changes replace
    /// whole config sets (a request is one or the other).
    pub async fn alter_configs(
        &self,
        leader: impl Fn() -> Option<i32>,
        changes: &[ConfigChange],
        validate_only: bool,
        deadline: Instant,
        origin: Option<&ClientOrigin>,
    ) -> Result<Route<Vec<ConfigOutcome>>, CommitError> {
        let outcome = |code: i16, message: Option<StrBytes>| match ResponseError::try_from_code(code) {
            None => Ok(()),
            Some(e) => Err((e, message.map(|m| m.to_string()).unwrap_or_default())),
        };
        let not_controller = ResponseError::NotController.code();
        if changes.iter().any(|c| c.replace) {
            let mut request = AlterConfigsRequest::default();
            request.validate_only = validate_only;
            request.resources = changes
                .iter()
                .map(|c| {
                    let mut r = alter_configs_request::AlterConfigsResource::default();
                    r.resource_type = c.resource.wire_type();
                    r.resource_name = StrBytes::from_string(c.resource.wire_name());
                    r.configs = c
                        .ops
                        .iter()
                        .map(|(name, op)| {
                            let mut entry = alter_configs_request::AlterableConfig::default();
                            entry.name = StrBytes::from_string(name.clone());
                            entry.value = match op {
                                ConfigOp::Set(v) => Some(StrBytes::from_string(v.clone())),
                                _ => None,
                            };
                            entry
                        })
                        .collect();
                    r
                })
                .collect();
            let retry = |r: &AlterConfigsResponse| r.responses.iter().any(|x| x.error_code == not_controller);
            return Ok(match self.call(leader, &request, origin, deadline, retry).await? {
                Route::Here => Route::Here,
                Route::There(r) => {
                    Route::There(r.responses.into_iter().map(|x| outcome(x.error_code, x.error_message)).collect())
                }
            });
        }
        let mut request = IncrementalAlterConfigsRequest::default();
        request.validate_only = validate_only;
        request.resources = changes
            .iter()
            .map(|c| {
                let mut r = incremental_alter_configs_request::AlterConfigsResource::default();
                r.resource_type = c.resource.wire_type();
                r.resource_name = StrBytes::from_string(c.resource.wire_name());
                r.configs = c
                    .ops
                    .iter()
                    .map(|(name, op)| {
                        let mut entry = incremental_alter_configs_request::AlterableConfig::default();
                        entry.name = StrBytes::from_string(name.clone());
                        let (code, value) = match op {
                            ConfigOp::Set(v) => (0, Some(v)),
                            ConfigOp::Delete => (1, None),
                            ConfigOp::Append(v) => (2, Some(v)),
                            ConfigOp::Subtract(v) => (3, Some(v)),
                        };
                        entry.config_operation = code;
                        entry.value = value.map(|v| StrBytes::from_string(v.clone()));
                        entry
                    })
                    .collect();
                r
            })
            .collect();
        let retry = |r: &IncrementalAlterConfigsResponse| r.responses.iter().any(|x| x.error_code == not_controller);
        Ok(match self.call(leader, &request, origin, deadline, retry).await? {
            Route::Here => Route::Here,
            Route::There(r) => {
                Route::There(r.responses.into_iter().map(|x| outcome(x.error_code, x.error_message)).collect())
            }
        })
    }

    /// Deletes topics by name (the caller resolved ids with its own image).
    pub async fn delete_topics(
        &self,
        leader: impl Fn() -> Option<i32>,
        names: &[String],
        deadline: Instant,
        origin: Option<&ClientOrigin>,
    ) -> Result<Route<Vec<TopicOutcome>>, CommitError> {
        let mut request = DeleteTopicsRequest::default();
        request.timeout_ms =
            deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        request.topic_names = names.iter().map(|n| TopicName(StrBytes::from_string(n.clone()))).collect();
        let not_controller = |r: &kafka_protocol::messages::DeleteTopicsResponse| {
            r.responses.iter().any(|t| t.error_code == ResponseError::NotController.code())
        };
        Ok(match self.call(leader, &request, origin, deadline, not_controller).await? {
            Route::Here => Route::Here,
            Route::There(response) => Route::There(
                response
                    .responses
                    .into_iter()
                    .map(|t| TopicOutcome {
                        name: t.name.map(|n| n.0.to_string()).unwrap_or_default(),
                        error: ResponseError::try_from_code(t.error_code),
                        error_message: t.error_message.map(|m| m.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
    }

    pub async fn allocate_producer_ids(
        &self,
        leader: impl Fn() -> Option<i32>,
        broker_epoch: i64,
        deadline: Instant,
    ) -> Result<Route<Result<(i64, i64), CommitError>>, CommitError> {
        let mut request = AllocateProducerIdsRequest::default();
        request.broker_id = BrokerId(self.config.node_id);
        request.broker_epoch = broker_epoch;
        let not_controller = |r: &kafka_protocol::messages::AllocateProducerIdsResponse| {
            r.error_code == ResponseError::NotController.code()
        };
        Ok(match self.call(leader, &request, None, deadline, not_controller).await? {
            Route::Here => Route::Here,
            Route::There(r) => Route::There(match ResponseError::try_from_code(r.error_code) {
                None => Ok((r.producer_id_start.0, r.producer_id_start.0 + i64::from(r.producer_id_len))),
                Some(e) => Err(CommitError::Failed(format!("the active controller refused producer ids: {e:?}"))),
            }),
        })
    }
}

impl RemoteController {
    /// AlterPartition (v2, topic ids) for one partition this broker leads.
    pub async fn alter_partition(
        &self,
        leader: impl Fn() -> Option<i32>,
        broker_epoch: i64,
        change: &IsrChange,
        deadline: Instant,
    ) -> Result<Route<Result<(), ResponseError>>, CommitError> {
        let mut partition = alter_partition_request::PartitionData::default();
        partition.partition_index = change.partition;
        partition.leader_epoch = change.leader_epoch;
        partition.partition_epoch = change.partition_epoch;
        partition.new_isr = change.isr.iter().map(|b| BrokerId(*b)).collect();
        let mut topic = alter_partition_request::TopicData::default();
        topic.topic_id = change.topic_id;
        topic.partitions = vec![partition];
        let mut request = AlterPartitionRequest::default();
        request.broker_id = BrokerId(self.config.node_id);
        request.broker_epoch = broker_epoch;
        request.topics = vec![topic];
        let not_controller =
            |r: &kafka_protocol::messages::AlterPartitionResponse| r.error_code == ResponseError::NotController.code();
        Ok(match self.call(leader, &request, None, deadline, not_controller).await? {
            Route::Here => Route::Here,
            Route::There(r) => Route::There(match ResponseError::try_from_code(r.error_code) {
                Some(e) => Err(e),
                None => {
                    let code = r.topics.first().and_then(|t| t.partitions.first()).map_or(0, |p| p.error_code);
                    ResponseError::try_from_code(code).map_or(Ok(()), Err)
                }
            }),
        })
    }
}

impl RemoteController {
    /// ElectLeaders (v2) at the active controller.
    pub async fn elect_leaders(
        &self,
        leader: impl Fn() -> Option<i32>,
        kind: ElectionType,
        partitions: Option<&[(String, i32)]>,
        deadline: Instant,
    ) -> Result<Route<Result<Vec<ElectionResult>, ResponseError>>, CommitError> {
        let mut request = ElectLeadersRequest::default();
        request.election_type = match kind {
            ElectionType::Preferred => 0,
            ElectionType::Unclean => 1,
        };
        request.timeout_ms =
            deadline.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32;
        request.topic_partitions = partitions.map(|ps| {
            let mut by_topic: std::collections::BTreeMap<&str, Vec<i32>> = Default::default();
            for (t, p) in ps {
                by_topic.entry(t.as_str()).or_default().push(*p);
            }
            by_topic
                .into_iter()
                .map(|(t, partitions)| {
                    let mut tp = elect_leaders_request::TopicPartitions::default();
                    tp.topic = TopicName(StrBytes::from_string(t.to_string()));
                    tp.partitions = partitions;
                    tp
                })
                .collect()
        });
        let not_controller =
            |r: &kafka_protocol::messages::ElectLeadersResponse| r.error_code == ResponseError::NotController.code();
        Ok(match self.call(leader, &request, None, deadline, not_controller).await? {
            Route::Here => Route::Here,
            Route::There(r) => Route::There(match ResponseError::try_from_code(r.error_code) {
                Some(e) => Err(e),
                None => Ok(r
                    .replica_election_results
                    .into_iter()
                    .flat_map(|t| {
                        let topic = t.topic.0.to_string();
                        t.partition_result.into_iter().map(move |p| ElectionResult {
                            topic: topic.clone(),
                            partition: p.partition_id,
                            error: ResponseError::try_from_code(p.error_code),
                            message: p.error_message.map(|m| m.to_string()),
                        })
                    })
                    .collect()),
            }),
        })
    }
}

fn creatable(topic: &NewTopic) -> CreatableTopic {
    let mut t = CreatableTopic::default();
    t.name = TopicName(StrBytes::from_string(topic.name.clone()));
    t.num_partitions = topic.num_partitions;
    t.replication_factor = topic.replication_factor;
    t.assignments = topic
        .assignments
        .iter()
        .map(|(p, brokers)| {
            let mut a = CreatableReplicaAssignment::default();
            a.partition_index = *p;
            a.broker_ids = brokers.iter().map(|b| BrokerId(*b)).collect();
            a
        })
        .collect();
    t.configs = topic
        .configs
        .iter()
        .map(|(k, v)| {
            let mut c = CreatableTopicConfig::default();
            c.name = StrBytes::from_string(k.clone());
            c.value = v.clone().map(StrBytes::from_string);
            c
        })
        .collect();
    t
}
