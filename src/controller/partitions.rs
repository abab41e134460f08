//! AlterPartition on the active controller: a partition's leader asks for a new ISR (a
//! follower fell behind, or caught up). Kafka's checks, then a partition change committed
//! through the quorum; the leader learns the outcome from the image like every broker.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::remote::Route;
use super::Controller;
use crate::cluster::election::{self, ElectionRefused, ElectionType};
use crate::cluster::records::{MetadataRecord, PartitionChange};
use crate::shard::message::{ElectionResult, IsrChange};

impl Controller {
    /// A data shard's ISR change for a partition this broker leads: here when this node is
    /// the active controller, else sent there as AlterPartition.
    pub async fn alter_partition(&self, change: IsrChange) -> Result<(), ResponseError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.quorum_request_timeout_ms);
        let leader = || self.call_target();
        let epoch = self.broker_epoch.get();
        match self.remote.alter_partition(leader, epoch, &change, deadline).await {
            Ok(Route::Here) => self.alter_partition_here(self.config.node_id, epoch, change).await,
            Ok(Route::There(result)) => result,
            Err(e) => Err(e.code()),
        }
    }

    /// Validates and commits an ISR change from broker `broker` (in registration `epoch`),
    /// as Kafka's controller does: only the partition's leader, in its current leader and
    /// partition epochs, may change it; the new ISR holds the leader, only replicas, and
    /// adds only live brokers. Runs on the active controller.
    pub async fn alter_partition_here(&self, broker: i32, epoch: i64, change: IsrChange) -> Result<(), ResponseError> {
        if !self.is_active() {
            return Err(ResponseError::NotController);
        }
        let timeout = Duration::from_millis(self.config.quorum_request_timeout_ms);
        let _permit = self.lock.acquire_permit(1).await.map_err(|_| ResponseError::NotController)?;
        let image = self.image.get();
        if image.brokers.get(&broker).map(|b| b.registration.epoch) != Some(epoch) {
            return Err(ResponseError::StaleBrokerEpoch);
        }
        let topic =
            image.ids.get(&change.topic_id).and_then(|n| image.topic(n)).ok_or(ResponseError::UnknownTopicId)?;
        let state = topic.state_of(change.partition).ok_or(ResponseError::UnknownTopicOrPartition)?;
        let replicas = topic.replicas_of(change.partition);
        if state.leader != broker {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        if change.leader_epoch != state.leader_epoch {
            return Err(ResponseError::FencedLeaderEpoch);
        }
        if change.partition_epoch != state.partition_epoch {
            return Err(ResponseError::InvalidUpdateVersion);
        }
        let mut isr = change.isr.clone();
        isr.dedup();
        let valid = isr.contains(&broker)
            && isr.iter().all(|b| replicas.contains(b))
            && isr.iter().filter(|b| !state.isr.contains(b)).all(|b| image.is_live(*b));
        if !valid {
            return Err(ResponseError::IneligibleReplica);
        }
        let Some(next) = election::change(state, state.leader, isr) else { return Ok(()) };
        let (name, from) = (topic.name.clone(), state.isr.clone());
        let record = MetadataRecord::PartitionChange(PartitionChange {
            topic_id: change.topic_id,
            partition: change.partition,
            leader: next.leader,
            leader_epoch: next.leader_epoch,
            partition_epoch: next.partition_epoch,
            isr: next.isr.clone(),
        });
        match self.commit(vec![record], timeout).await {
            Ok(()) => {
                info!(topic = %name, partition = change.partition, from = ?from, to = ?next.isr, "ISR changed");
                Ok(())
            }
            Err(e) => {
                warn!(topic = %name, partition = change.partition, error = %e, "ISR change not committed");
                Err(e.code())
            }
        }
    }
}

impl Controller {
    /// ElectLeaders for a client: here when this node is the active controller, else
    /// forwarded there; answered once this node's image has the new leaders.
    pub async fn elect_leaders(
        &self,
        kind: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
        timeout: Duration,
    ) -> Result<Vec<ElectionResult>, ResponseError> {
        let deadline = Instant::now() + timeout;
        let leader = || self.call_target();
        let before = self.image.get();
        let outcomes = match self.remote.elect_leaders(leader, kind, partitions.as_deref(), deadline).await {
            Ok(Route::Here) => return self.elect_leaders_here(kind, partitions, timeout).await,
            Ok(Route::There(outcomes)) => outcomes?,
            Err(e) => return Err(e.code()),
        };
        // Answered once this node's image has every new leader (a newer leader epoch).
        let elected: Vec<(String, i32, i32)> = outcomes
            .iter()
            .filter(|o| o.error.is_none())
            .map(|o| {
                let tp = crate::types::TopicPartition::new(o.topic.clone(), o.partition);
                (o.topic.clone(), o.partition, before.partition_state(&tp).map_or(-1, |s| s.leader_epoch))
            })
            .collect();
        let ready = |image: &crate::cluster::MetadataImage| {
            elected.iter().all(|(t, p, epoch)| {
                let tp = crate::types::TopicPartition::new(t.clone(), *p);
                image.partition_state(&tp).is_some_and(|s| s.leader_epoch > *epoch)
            })
        };
        self.published_where(ready, deadline).await;
        Ok(outcomes)
    }

    /// Runs an election on the active controller: for each partition asked (every partition
    /// when `None`), the new leader Kafka's rules give, committed in one entry.
    pub async fn elect_leaders_here(
        &self,
        kind: ElectionType,
        partitions: Option<Vec<(String, i32)>>,
        timeout: Duration,
    ) -> Result<Vec<ElectionResult>, ResponseError> {
        if !self.is_active() {
            return Err(ResponseError::NotController);
        }
        let _permit = self.lock.acquire_permit(1).await.map_err(|_| ResponseError::NotController)?;
        let image = self.image.get();
        let all = partitions.is_none();
        let asked: Vec<(String, i32)> = partitions.unwrap_or_else(|| {
            image.topics.values().flat_map(|t| (0..t.partitions).map(|p| (t.name.clone(), p))).collect()
        });
        let mut outcomes = Vec::new();
        let mut records = Vec::new();
        for (topic, partition) in asked {
            let found = image.topic(&topic).and_then(|t| Some((t, t.state_of(partition)?)));
            let Some((meta, state)) = found else {
                outcomes.push(ElectionResult {
                    topic,
                    partition,
                    error: Some(ResponseError::UnknownTopicOrPartition),
                    message: Some("The partition does not exist.".into()),
                });
                continue;
            };
            match election::elect(kind, state, meta.replicas_of(partition), |b| image.is_live(b)) {
                Ok(next) => {
                    if kind == ElectionType::Unclean && !state.isr.contains(&next.leader) {
                        warn!(topic = %topic, partition, leader = next.leader, "unclean leader election asked for: records only the old in-sync replicas had are lost");
                    }
                    records.push(MetadataRecord::PartitionChange(PartitionChange {
                        topic_id: meta.id,
                        partition,
                        leader: next.leader,
                        leader_epoch: next.leader_epoch,
                        partition_epoch: next.partition_epoch,
                        isr: next.isr,
                    }));
                    outcomes.push(ElectionResult { topic, partition, error: None, message: None });
                }
                // Asked for every partition: the ones that need nothing are not reported.
                Err(ElectionRefused::NotNeeded) if all => {}
                Err(refused) => {
                    let (error, message) = match refused {
                        ElectionRefused::NotNeeded => {
                            (ResponseError::ElectionNotNeeded, "Leader election not needed for topic partition.")
                        }
                        ElectionRefused::PreferredNotAvailable => (
                            ResponseError::PreferredLeaderNotAvailable,
                            "The preferred leader is not live or not in sync.",
                        ),
                        ElectionRefused::NoEligibleLeader => {
                            (ResponseError::EligibleLeadersNotAvailable, "No live replica can lead.")
                        }
                    };
                    outcomes.push(ElectionResult {
                        topic,
                        partition,
                        error: Some(error),
                        message: Some(message.into()),
                    });
                }
            }
        }
        if !records.is_empty() {
            let moved = records.len();
            if let Err(e) = self.commit(records, timeout).await {
                for o in outcomes.iter_mut().filter(|o| o.error.is_none()) {
                    o.error = Some(e.code());
                    o.message = Some(e.to_string());
                }
            } else {
                info!(elected = moved, kind = ?kind, "leaders elected");
            }
        }
        Ok(outcomes)
    }

    /// Hands leadership back to preferred replicas when a broker leads too few of the
    /// partitions it should (`auto.leader.rebalance.enable`; active controller, on its timer).
    pub async fn rebalance_leaders(&self) {
        let ratio = self.config.leader_imbalance_per_broker_percentage as f64 / 100.0;
        let moves = election::imbalanced(&self.image.get(), ratio);
        if moves.is_empty() {
            return;
        }
        info!(
            partitions = moves.len(),
            "leader imbalance above leader.imbalance.per.broker.percentage: electing preferred leaders"
        );
        let timeout = Duration::from_millis(self.config.quorum_request_timeout_ms);
        if let Err(e) = self.elect_leaders_here(ElectionType::Preferred, Some(moves), timeout).await {
            warn!(error = ?e, "preferred leader election failed");
        }
    }
}
