//! Topic changes on the active controller: CreateTopics, CreatePartitions and DeleteTopics
//! validated with Kafka's rules and error codes, placed over the live brokers, committed
//! through the quorum.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::Controller;
use crate::cluster::placement;
use crate::cluster::records::MetadataRecord;
use crate::cluster::MetadataImage;
use crate::shard::message::{NewPartitions, NewTopic, TopicOutcome, TopicRef};

/// Longest topic name Kafka accepts.
pub const TOPIC_NAME_BYTES_MAX: usize = 249;

pub fn valid_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".into());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".into());
    }
    if name.len() > TOPIC_NAME_BYTES_MAX {
        return Err(format!(
            "Topic name is illegal, it can't be longer than {TOPIC_NAME_BYTES_MAX} characters, topic name: {name}"
        ));
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-') {
        return Err(format!("Topic name \"{name}\" is illegal, it contains a character other than ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

/// A topic config CreateTopics may set, checked as Kafka checks it.
fn validate_config(key: &str, value: &str) -> Result<(), String> {
    match crate::config::topic_config(key) {
        Some(def) => def.check(value),
        None => Err(format!("Unknown topic config name: {key}")),
    }
}

/// A topic that passed validation: what to record.
struct Checked {
    partitions: i32,
    replicas: Vec<Vec<i32>>,
    configs: BTreeMap<String, String>,
}

impl Controller {
    /// Validates and (unless `validate_only`) commits new topics. Runs on the active controller.
    pub(super) async fn create_topics_here(
        &self,
        topics: Vec<NewTopic>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else { return Vec::new() };
        let image = self.image.get();
        let mut partitions_total = image.partition_count();
        let mut load = image.replicas_per_broker();
        let names: Vec<&str> = topics.iter().map(|t| t.name.as_str()).collect();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        for topic in &topics {
            let mut outcome = TopicOutcome {
                name: topic.name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                ..Default::default()
            };
            let duplicate = names.iter().filter(|n| **n == topic.name).count() > 1;
            let checked = if duplicate {
                Err((
                    ResponseError::InvalidRequest,
                    format!("Create topics request from client contains duplicate topic {}", topic.name),
                ))
            } else {
                self.check_new_topic(&image, topic, partitions_total)
                    .and_then(|c| self.check_broker_load(&mut load, &c.replicas).map(|()| c))
            };
            match checked {
                Ok(checked) => {
                    partitions_total += checked.partitions as usize;
                    outcome.topic_id = uuid::Uuid::new_v4();
                    outcome.num_partitions = checked.partitions;
                    outcome.replication_factor = checked.replicas.first().map_or(1, |r| r.len() as i16);
                    outcome.configs = checked.configs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    if !validate_only {
                        records.push(MetadataRecord::Topic {
                            name: topic.name.clone(),
                            id: outcome.topic_id,
                            partitions: checked.partitions,
                            configs: checked.configs,
                            replicas: checked.replicas,
                        });
                    }
                }
                Err((error, message)) => {
                    outcome.error = Some(error);
                    outcome.error_message = Some(message);
                }
            }
            outcomes.push(outcome);
        }
        if self.commit_for(records, &mut outcomes, timeout).await {
            for o in outcomes.iter().filter(|o| o.error.is_none() && !validate_only) {
                info!(topic = %o.name, partitions = o.num_partitions, "topic created");
            }
        }
        outcomes
    }

    fn check_new_topic(
        &self,
        image: &MetadataImage,
        topic: &NewTopic,
        partitions_total: usize,
    ) -> Result<Checked, (ResponseError, String)> {
        let config = &self.config;
        valid_topic_name(&topic.name).map_err(|m| (ResponseError::InvalidTopicException, m))?;
        if image.topic(&topic.name).is_some() {
            return Err((ResponseError::TopicAlreadyExists, format!("Topic '{}' already exists.", topic.name)));
        }
        let live: Vec<i32> = image.live_brokers().map(|b| b.registration.id).collect();
        let replicas = if topic.assignments.is_empty() {
            let partitions = match topic.num_partitions {
                -1 => config.num_partitions,
                n if n >= 1 => n,
                n => {
                    return Err((
                        ResponseError::InvalidPartitions,
                        format!("Number of partitions was set to an invalid non-positive value: {n}"),
                    ))
                }
            };
            let replication = match topic.replication_factor {
                -1 => config.default_replication_factor,
                r if r < 1 => {
                    return Err((
                        ResponseError::InvalidReplicationFactor,
                        "Replication factor must be larger than 0, or -1 to use the default value.".to_string(),
                    ))
                }
                r => r,
            };
            check_replication(replication as usize, live.len())?;
            check_partition_budget(partitions, partitions_total, config.partitions_max)?;
            let draw = uuid::Uuid::new_v4().as_u64_pair();
            placement::assign(&live, partitions, replication as usize, draw.0 as usize, draw.1 as usize)
        } else {
            if topic.num_partitions != -1 || topic.replication_factor != -1 {
                return Err((ResponseError::InvalidRequest, "Both numPartitions or replicationFactor and replicasAssignments were set. Both cannot be used at the same time.".into()));
            }
            let mut assignments = topic.assignments.clone();
            assignments.sort_by_key(|(p, _)| *p);
            if assignments.iter().enumerate().any(|(i, (p, _))| *p != i as i32) {
                return Err((
                    ResponseError::InvalidReplicaAssignment,
                    "Partitions should be a consecutive 0-based integer sequence".into(),
                ));
            }
            let replicas: Vec<Vec<i32>> = assignments.into_iter().map(|(_, r)| r).collect();
            placement::check_assignment(&replicas, &live).map_err(|m| (ResponseError::InvalidReplicaAssignment, m))?;
            check_replication(replicas[0].len(), live.len())?;
            check_partition_budget(replicas.len() as i32, partitions_total, config.partitions_max)?;
            replicas
        };
        let mut configs = BTreeMap::new();
        for (key, value) in &topic.configs {
            let Some(value) = value else { continue };
            validate_config(key, value).map_err(|m| (ResponseError::InvalidConfig, m))?;
            configs.insert(key.clone(), value.clone());
        }
        Ok(Checked { partitions: replicas.len() as i32, replicas, configs })
    }

    /// Commits the deletion of topics. Runs on the active controller.
    pub(super) async fn delete_topics_here(&self, topics: Vec<TopicRef>, timeout: Duration) -> Vec<TopicOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else { return Vec::new() };
        let image = self.image.get();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        for t in topics {
            let found = match &t {
                TopicRef::Name(n) => image.topic(n).cloned(),
                TopicRef::Id(id) => image.ids.get(id).and_then(|n| image.topic(n)).cloned(),
            };
            let mut outcome = TopicOutcome::default();
            match (found, t) {
                (Some(meta), _) => {
                    outcome.name = meta.name.clone();
                    outcome.topic_id = meta.id;
                    if !records.contains(&MetadataRecord::RemoveTopic { id: meta.id }) {
                        records.push(MetadataRecord::RemoveTopic { id: meta.id });
                    }
                }
                (None, TopicRef::Name(n)) => {
                    outcome.name = n;
                    outcome.error = Some(ResponseError::UnknownTopicOrPartition);
                    outcome.error_message = Some("This server does not host this topic-partition.".into());
                }
                (None, TopicRef::Id(id)) => {
                    outcome.topic_id = id;
                    outcome.error = Some(ResponseError::UnknownTopicId);
                    outcome.error_message = Some("This server does not host this topic ID.".into());
                }
            }
            outcomes.push(outcome);
        }
        if self.commit_for(records, &mut outcomes, timeout).await {
            for o in outcomes.iter().filter(|o| o.error.is_none()) {
                info!(topic = %o.name, "topic deleted");
            }
        }
        outcomes
    }

    /// Validates and (unless `validate_only`) commits more partitions for existing topics,
    /// with Kafka's rules: the count only grows, explicit assignments name one new
    /// partition each with the topic's replication factor, over live brokers. New
    /// partitions continue the topic's round-robin. Runs on the active controller.
    pub(super) async fn create_partitions_here(
        &self,
        topics: Vec<NewPartitions>,
        validate_only: bool,
        timeout: Duration,
    ) -> Vec<TopicOutcome> {
        let Ok(_permit) = self.lock.acquire_permit(1).await else { return Vec::new() };
        let image = self.image.get();
        let mut partitions_total = image.partition_count();
        let mut load = image.replicas_per_broker();
        let mut outcomes = Vec::with_capacity(topics.len());
        let mut records = Vec::new();
        for topic in &topics {
            let mut outcome = TopicOutcome { name: topic.name.clone(), ..Default::default() };
            let duplicate = topics.iter().filter(|t| t.name == topic.name).count() > 1;
            let checked = if duplicate {
                Err((ResponseError::InvalidRequest, "Duplicate topic name.".to_string()))
            } else {
                self.check_new_partitions(&image, topic, partitions_total).and_then(|record| {
                    if let MetadataRecord::Topic { replicas, .. } = &record {
                        let current = image.topic(&topic.name).map_or(0, |t| t.replicas.len());
                        self.check_broker_load(&mut load, &replicas[current.min(replicas.len())..])?;
                    }
                    Ok(record)
                })
            };
            match checked {
                Ok(record) => {
                    if let MetadataRecord::Topic { partitions, .. } = &record {
                        partitions_total +=
                            (*partitions - image.topic(&topic.name).map_or(0, |t| t.partitions)) as usize;
                    }
                    if !validate_only {
                        records.push(record);
                    }
                }
                Err((error, message)) => {
                    outcome.error = Some(error);
                    outcome.error_message = Some(message);
                }
            }
            outcomes.push(outcome);
        }
        if self.commit_for(records, &mut outcomes, timeout).await {
            for (o, t) in outcomes.iter().zip(&topics).filter(|(o, _)| o.error.is_none() && !validate_only) {
                info!(topic = %o.name, partitions = t.count, "partitions added");
            }
        }
        outcomes
    }

    fn check_new_partitions(
        &self,
        image: &MetadataImage,
        topic: &NewPartitions,
        partitions_total: usize,
    ) -> Result<MetadataRecord, (ResponseError, String)> {
        let Some(meta) = image.topic(&topic.name) else {
            return Err((
                ResponseError::UnknownTopicOrPartition,
                format!("The topic '{}' does not exist.", topic.name),
            ));
        };
        if topic.name == crate::group::OFFSETS_TOPIC {
            return Err((
                ResponseError::InvalidPartitions,
                format!("The partition count of {} is fixed: it maps consumer groups to partitions", topic.name),
            ));
        }
        let current = meta.partitions;
        if topic.count < current {
            return Err((
                ResponseError::InvalidPartitions,
                format!(
                    "Topic currently has {current} partitions, which is higher than the requested {}.",
                    topic.count
                ),
            ));
        }
        if topic.count == current {
            return Err((ResponseError::InvalidPartitions, format!("Topic already has {current} partitions.")));
        }
        let adding = (topic.count - current) as usize;
        let live: Vec<i32> = image.live_brokers().map(|b| b.registration.id).collect();
        let rf = meta.replicas.first().map_or(1, Vec::len);
        let added = match &topic.assignments {
            Some(assignments) => {
                if assignments.len() != adding {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!(
                            "Increasing the number of partitions by {adding} but {} assignments provided.",
                            assignments.len()
                        ),
                    ));
                }
                placement::check_assignment(assignments, &live)
                    .map_err(|m| (ResponseError::InvalidReplicaAssignment, m))?;
                if assignments[0].len() != rf {
                    return Err((
                        ResponseError::InvalidReplicaAssignment,
                        format!("The replication factor of the new partitions must be the topic's, {rf}."),
                    ));
                }
                assignments.clone()
            }
            None => {
                check_replication(rf, live.len())?;
                // Continue the round-robin where partition 0's leader put it.
                let mut sorted = live.clone();
                sorted.sort_unstable();
                let first = meta.replicas_of(0).first().and_then(|b| sorted.iter().position(|l| l == b)).unwrap_or(0);
                let shift = uuid::Uuid::new_v4().as_u64_pair().0 as usize;
                placement::assign(&live, topic.count, rf, first, shift).split_off(current as usize)
            }
        };
        check_partition_budget(adding as i32, partitions_total, self.config.partitions_max)?;
        let mut replicas = meta.replicas.clone();
        replicas.extend(added);
        Ok(MetadataRecord::Topic {
            name: meta.name.clone(),
            id: meta.id,
            partitions: topic.count,
            configs: meta.configs.clone(),
            replicas,
        })
    }

    /// Commits the records of a topic change; when that fails, every topic that passed
    /// validation gets the failure. Returns whether anything was committed.
    async fn commit_for(&self, records: Vec<MetadataRecord>, outcomes: &mut [TopicOutcome], timeout: Duration) -> bool {
        if records.is_empty() {
            return false;
        }
        match self.commit(records, timeout).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "topic change not committed");
                for o in outcomes.iter_mut().filter(|o| o.error.is_none()) {
                    o.error = Some(e.code());
                    o.error_message = Some(e.to_string());
                }
                false
            }
        }
    }

    /// Places topics recorded before the cluster existed (a single node's data directory)
    /// on this node, the only broker they can be on.
    pub(super) async fn place_unplaced_topics(&self) {
        let image = self.image.get();
        let records: Vec<MetadataRecord> = image
            .topics
            .values()
            .filter(|t| t.unplaced())
            .map(|t| MetadataRecord::Topic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions,
                configs: t.configs.clone(),
                replicas: (0..t.partitions).map(|_| vec![self.config.node_id]).collect(),
            })
            .collect();
        if records.is_empty() {
            return;
        }
        let count = records.len();
        match self.commit(records, Duration::from_secs(30)).await {
            Ok(()) => {
                info!(topics = count, node = self.config.node_id, "topics from before the cluster placed on this node")
            }
            Err(e) => warn!(error = %e, "cannot place topics from before the cluster"),
        }
    }
}

fn check_replication(replication: usize, live: usize) -> Result<(), (ResponseError, String)> {
    if replication > live {
        return Err((
            ResponseError::InvalidReplicationFactor,
            format!("Unable to replicate the partition {replication} time(s): The target replication factor of {replication} cannot be reached because only {live} broker(s) are registered."),
        ));
    }
    Ok(())
}

impl Controller {
    /// `max.broker.partitions`: no broker may come to hold more partition replicas than it
    /// can keep a segment file open for (its descriptor limit; see `config::descriptors`).
    /// Counts `new` into `load` when they fit.
    fn check_broker_load(
        &self,
        load: &mut HashMap<i32, usize>,
        new: &[Vec<i32>],
    ) -> Result<(), (ResponseError, String)> {
        let limit = self.config.descriptors.broker_partitions;
        let mut added: HashMap<i32, usize> = HashMap::new();
        for broker in new.iter().flatten() {
            *added.entry(*broker).or_insert(0) += 1;
        }
        let mut brokers: Vec<(i32, usize)> = added.iter().map(|(b, n)| (*b, *n)).collect();
        brokers.sort_unstable();
        for (broker, adding) in &brokers {
            let holds = load.get(broker).copied().unwrap_or(0);
            if holds + adding > limit {
                let plan = &self.config.descriptors;
                return Err((
                    ResponseError::PolicyViolation,
                    format!(
                        "Broker {broker} holds {holds} partition replicas and may hold at most {limit} (max.broker.partitions): \
                         {adding} more would pass it. The limit follows from the broker's file-descriptor limit \
                         (ulimit -n {}) and weir.open.files.max: raise them, or set max.broker.partitions.",
                        plan.limit
                    ),
                ));
            }
        }
        for (broker, adding) in brokers {
            *load.entry(broker).or_insert(0) += adding;
        }
        Ok(())
    }
}

fn check_partition_budget(partitions: i32, total: usize, max: usize) -> Result<(), (ResponseError, String)> {
    if total + partitions.max(0) as usize > max {
        return Err((
            ResponseError::PolicyViolation,
            format!("Creating {partitions} partitions would exceed max.partitions ({max})"),
        ));
    }
    Ok(())
}
