//! AlterPartition on the active controller: a partition's leader asks for a new ISR (a
//! follower fell behind, or caught up). Kafka's checks, then a partition change committed
//! through the quorum; the leader learns the outcome from the image like every broker.

use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::remote::Route;
use super::Controller;
use crate::cluster::election;
use crate::cluster::records::{MetadataRecord, PartitionChange};
use crate::shard::message::IsrChange;

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
