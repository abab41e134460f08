//! A data shard's own upkeep: applying a published metadata image (opening the partitions it
//! now owns, deleting those of deleted topics), the periodic jobs (sync, producer expiry,
//! compaction) and closing every partition at shutdown.

use std::rc::Rc;
use std::sync::Arc;

use futures::stream::StreamExt;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::message::{ControlRequest, IsrChange};
use super::Shard;
use crate::cluster::{MetadataImage, TopicMeta};
use crate::config::Config;
use crate::group::OFFSETS_TOPIC;
use crate::partition::replica::{Leadership, Role};
use crate::partition::{Partition, PartitionSettings};
use crate::storage::log::retention::Retention;
use crate::storage::{LogConfig, LogError};
use crate::txn::TRANSACTION_STATE_TOPIC;
use crate::types::{now_ms, TopicPartition};

/// Periodic syncs in flight at once on one shard.
const PERIODIC_SYNCS_AT_ONCE: usize = 8;

/// Partitions whose role changes are applied at once (each may sync an epoch checkpoint).
const ROLE_CHANGES_AT_ONCE: usize = 32;

/// Partitions a shard closes at once at shutdown.
const CLOSES_AT_ONCE: usize = 32;

/// Buffered bytes that start a background write.
const WRITE_CHUNK_BYTES: u64 = 256 << 10;

impl Shard {
    /// The first of an image's two steps: makes this data shard's partitions match `image`
    /// (opens the logs of partitions this broker now holds, closes those it no longer holds,
    /// deletes those whose topic is gone, gives each its role), without answering from it
    /// yet. The second, [`Shard::show_image`], comes once every shard of the node has done
    /// this one: so a client never sees a leader here that is not ready to lead, and the
    /// node's shards start answering from the image together (one shard slow to open a
    /// partition does not leave the others showing a topic it does not).
    pub async fn prepare_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        if image.epoch < self.image.get().epoch {
            crate::invariant!(false, "image epoch {} published after {}", image.epoch, self.image.get().epoch);
            return;
        }
        let node = self.config.node_id;
        let broker_configs_changed = self.refresh_effective_config(&image);
        let config = self.effective_config();
        let wanted = image.partitions_of(node, self.id);
        {
            // A partition no longer here is not offline here either.
            let here: std::collections::HashSet<&TopicPartition> = wanted.iter().map(|(tp, _)| tp).collect();
            self.offline.borrow_mut().retain(|tp, _| here.contains(tp));
        }
        let floor = self.preallocate_floor(wanted.len());
        let mut deleted = Vec::new();
        let mut moved = Vec::new();
        for p in self.partitions() {
            let tp = p.tp();
            match image.topic(&tp.topic) {
                Some(t) if t.id == p.topic_id() && tp.partition < t.partitions => {
                    if !t.replicas_of(tp.partition).contains(&node) {
                        moved.push(tp.clone());
                    }
                }
                _ => deleted.push(tp.clone()),
            }
        }
        self.groups.forget_deleted_topics(&image);
        for (tp, delete) in deleted.into_iter().map(|tp| (tp, true)).chain(moved.into_iter().map(|tp| (tp, false))) {
            if tp.topic == OFFSETS_TOPIC {
                let total = image.topic(OFFSETS_TOPIC).map(|t| t.partitions).unwrap_or(0);
                self.groups.unload(tp.partition, total);
            }
            if tp.topic == TRANSACTION_STATE_TOPIC {
                let total = image.topic(TRANSACTION_STATE_TOPIC).map(|t| t.partitions).unwrap_or(0);
                self.txns.unload(tp.partition, total);
            }
            if let Some(p) = self.partitions.remove(&tp) {
                if delete {
                    p.delete().await;
                } else if let Err(e) = p.close().await {
                    warn!(partition = %tp, error = %e, "closing a partition this broker no longer holds failed");
                }
            }
        }
        let mut changes = Vec::new();
        for (tp, meta) in wanted {
            let partition = match self.partitions.get(&tp) {
                Some(p) => {
                    // Topic configs (or the broker defaults under them) changed: the running
                    // partition takes them now.
                    let before = self.image.get();
                    let topic_changed = before.topic(&tp.topic).is_none_or(|t| t.configs != meta.configs);
                    if topic_changed || broker_configs_changed {
                        p.update_settings(partition_settings(&meta, &config), log_config(&meta, &config, floor));
                    }
                    p
                }
                None => match self.open_partition(&tp, &meta, floor).await {
                    Ok(p) => {
                        if self.offline.borrow_mut().remove(&tp).is_some() {
                            info!(partition = %tp, "partition opened: it is online again");
                        }
                        self.partitions.insert(p.clone());
                        p
                    }
                    Err(e) => {
                        let error = e.to_string();
                        let said = self.offline.borrow_mut().insert(tp.clone(), error.clone());
                        if said.as_ref() != Some(&error) {
                            warn!(partition = %tp, %error, "cannot open partition; it stays offline (clients get KAFKA_STORAGE_ERROR) and is tried again at the next metadata change");
                        }
                        continue;
                    }
                },
            };
            let role = role_of(&image, &tp, node);
            if !partition.has_role(&role) {
                changes.push((partition, role, meta.partitions));
            }
        }
        // Taking the lead syncs the partition's epoch checkpoint (as Kafka does). The syncs run
        // one after another on the shard's blocking thread; starting them together saves
        // the round trip between one and the next.
        let changed: Vec<_> = futures::stream::iter(changes.into_iter().map(|(partition, role, total)| async move {
            let was_leading = partition.leader_epoch();
            match partition.set_role(role).await {
                Ok(()) => Some((partition, was_leading, total)),
                Err(e) => {
                    warn!(partition = %partition.tp(), error = %e, "cannot take the partition's new role");
                    None
                }
            }
        }))
        .buffer_unordered(ROLE_CHANGES_AT_ONCE)
        .collect()
        .await;
        let mut to_load = Vec::new();
        for (partition, was_leading, total) in changed.into_iter().flatten() {
            // The coordinators live with their partitions' leaders: they load the groups and
            // transactions from the (replicated) log when this broker takes the lead.
            let now_leading = partition.leader_epoch();
            if was_leading == now_leading {
                continue;
            }
            match partition.tp().topic.as_str() {
                OFFSETS_TOPIC => self.groups.unload(partition.tp().partition, total),
                TRANSACTION_STATE_TOPIC => self.txns.unload(partition.tp().partition, total),
                _ => continue,
            }
            if now_leading.is_some() {
                to_load.push(partition);
            }
        }
        *self.coordinators_to_load.borrow_mut() = to_load;
    }

    /// The second step: the shard answers from `image`, and loads the groups and
    /// transactions of the `__consumer_offsets` and `__transaction_state` partitions it now leads.
    pub async fn show_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        self.image.set(image);
        let to_load = std::mem::take(&mut *self.coordinators_to_load.borrow_mut());
        for partition in to_load {
            if partition.tp().topic == OFFSETS_TOPIC {
                self.groups.load(partition).await;
            } else {
                self.txns.load(partition, self.marker_writer()).await;
            }
        }
    }

    async fn open_partition(
        &self,
        tp: &TopicPartition,
        meta: &TopicMeta,
        floor: u64,
    ) -> Result<Rc<Partition>, LogError> {
        let dir = self.config.data_dir.join(tp.dir_name());
        let config = self.effective_config();
        let settings = partition_settings(meta, &config);
        Partition::open(tp.clone(), meta.id, &dir, log_config(meta, &config, floor), settings, self.clean_start).await
    }

    /// The reservation a segment of one of this shard's `partitions` starts with: the
    /// broker's preallocation budget shared by every partition it holds (this shard's
    /// share, by the partitions it has now), within 64 KiB..1 MiB. Few partitions keep the
    /// 1 MiB that spares a low-rate partition repeated growth (each `fallocate` changes the
    /// file's extents, which the next fdatasync commits to the journal); many share what
    /// the budget allows, so 10,000 partitions written once do not hold 10 GB.
    fn preallocate_floor(&self, partitions: usize) -> u64 {
        let share = self.config.preallocate_budget_bytes / self.data_shards().max(1) as u64;
        (share / partitions.max(1) as u64)
            .clamp(crate::storage::PREALLOCATE_FLOOR_MIN_BYTES, crate::storage::PREALLOCATE_FLOOR_MAX_BYTES)
    }

    /// Asks the controller for the ISR changes this shard's leaders want: followers that
    /// lag out, followers that caught up in (Kafka's AlterPartition; `replica.lag.time.max.ms`).
    /// First, leaders that may have been replaced while this broker could not reach the
    /// controller stop taking writes (`Partition::check_deposed`).
    pub fn check_isr(self: &Rc<Self>) {
        let now = now_ms();
        self.check_deposed(now);
        let image = self.image();
        let live = |b: i32| image.is_live(b);
        for p in self.partitions() {
            let Some((leadership, isr, again)) = p.isr_change_wanted(now, self.config.replica_lag_time_max_ms, live)
            else {
                continue;
            };
            let change = IsrChange {
                topic_id: p.topic_id(),
                partition: p.tp().partition,
                leader_epoch: leadership.epoch,
                partition_epoch: leadership.partition_epoch,
                isr: isr.clone(),
            };
            if again {
                debug!(partition = %p.tp(), from = ?leadership.isr, to = ?isr, "asking the controller again to change the ISR");
            } else {
                info!(partition = %p.tp(), from = ?leadership.isr, to = ?isr, "asking the controller to change the ISR");
            }
            let shard = self.clone();
            glommio::spawn_local(async move {
                let (reply, rx) = futures::channel::oneshot::channel();
                let sent = shard.send_control(ControlRequest::AlterPartition { change, reply }).await;
                let outcome = match sent {
                    Ok(()) => rx.await.unwrap_or(Err(ResponseError::NotController)),
                    Err(_) => Err(ResponseError::NotController),
                };
                if let Err(e) = outcome {
                    if p.isr_change_failed() == 1 {
                        warn!(partition = %p.tp(), error = ?e, "ISR change refused; asking again every second or two");
                    } else {
                        debug!(partition = %p.tp(), error = ?e, "ISR change refused again");
                    }
                }
            })
            .detach();
        }
    }

    /// The controller fences a broker `broker.session.timeout.ms` after the last heartbeat
    /// it received; this broker counts its lease from the *sending* of the last heartbeat
    /// answered, one heartbeat interval shorter, so it stops before the controller could
    /// have elected anyone else.
    fn check_deposed(&self, now: i64) {
        let session = self.config.broker_session_timeout_ms;
        let lease = session.saturating_sub(self.config.broker_heartbeat_interval_ms).max(session / 2);
        let silent_for = self.controller_contact.get().map(|t| t.elapsed());
        let lost = silent_for.is_some_and(|d| d.as_millis() > u128::from(lease));
        let lease_ms = i64::try_from(lease).unwrap_or(i64::MAX);
        let mut deposed = 0usize;
        let mut changed = false;
        for p in self.partitions() {
            match p.check_deposed(lost, now, lease_ms) {
                Some(true) => {
                    changed = true;
                    deposed += 1;
                    debug!(partition = %p.tp(), "another replica may lead now: refusing writes");
                }
                Some(false) => changed = true,
                None => {}
            }
        }
        if lost != self.controller_lost.get() {
            self.controller_lost.set(lost);
            if lost {
                warn!(
                    shard = self.id.0,
                    silent_ms = silent_for.map_or(0, |d| d.as_millis()),
                    lease_ms,
                    deposed,
                    "no contact with the active controller for longer than the broker lease: partitions whose possible successors stopped fetching refuse writes"
                );
            } else {
                info!(shard = self.id.0, "the active controller answers again: leaders take writes");
            }
        } else if changed && lost && deposed > 0 {
            warn!(shard = self.id.0, deposed, "more partitions refuse writes: a possible successor stopped fetching");
        }
    }

    /// Syncs every partition with unsynced data (the periodic part of the flush policy).
    pub async fn sync_all(&self) {
        let dirty: Vec<Rc<Partition>> = self.partitions().into_iter().filter(|p| p.needs_sync()).collect();
        // A few at a time: a thousand syncs queued at once would put every partition's
        // acks=1 writes behind the whole batch in the device's queue instead of behind one.
        let mut syncs = futures::stream::iter(dirty.iter().map(|p| async move { (p, p.sync().await) }))
            .buffer_unordered(PERIODIC_SYNCS_AT_ONCE);
        while let Some((p, r)) = syncs.next().await {
            match r {
                // Retried here every flush interval; the log said so once when it began.
                Err(_) if p.is_write_blocked() => {}
                Err(e) => warn!(partition = %p.tp(), error = %e, "periodic sync failed"),
                Ok(()) => {}
            }
        }
    }

    /// Removes what retention no longer keeps, one partition at a time.
    pub async fn apply_retention(&self) {
        for p in self.partitions() {
            if let Err(e) = p.apply_retention().await {
                warn!(partition = %p.tp(), error = %e, "retention failed; the segments stay");
            }
        }
    }

    /// Compacts the partitions of compacted topics that have new sealed data, one partition
    /// at a time (the cleaner's pass).
    pub async fn compact_logs(&self) {
        for p in self.partitions() {
            if let Err(e) = p.compact_if_due().await {
                warn!(partition = %p.tp(), error = %e, "compaction failed; the segments stay as they were");
            }
        }
    }

    /// Forgets producers idle longer than `producer.id.expiration.ms`.
    pub fn expire_producers(&self) {
        let now = now_ms();
        let expiration_ms = self.effective_config().producer_id_expiration_ms;
        for p in self.partitions() {
            let expired = p.expire_producers(now, expiration_ms);
            if expired > 0 {
                debug!(partition = %p.tp(), expired, "producer ids expired");
            }
        }
    }

    /// Closes every log cleanly (sync, final index files), a bounded number at once: each
    /// close waits on a few small synced writes, so one at a time makes a broker with many
    /// partitions take seconds to stop. Returns whether all closed.
    pub async fn close_all(&self) -> bool {
        let partitions = self.partitions();
        let mut closes = futures::stream::iter(partitions.iter().map(|p| async move { (p, p.close().await) }))
            .buffer_unordered(CLOSES_AT_ONCE);
        let mut ok = true;
        while let Some((p, closed)) = closes.next().await {
            if let Err(e) = closed {
                warn!(partition = %p.tp(), error = %e, "close failed");
                ok = false;
            }
        }
        ok
    }
}

/// The log settings of a partition: its topic's configs over the broker's defaults.
fn log_config(meta: &TopicMeta, config: &Config, preallocate_min_bytes: u64) -> LogConfig {
    LogConfig {
        segment_bytes: topic_setting(meta, "segment.bytes").unwrap_or(config.segment_bytes),
        segment_ms: topic_setting(meta, "segment.ms").unwrap_or(config.segment_ms),
        index_interval_bytes: topic_setting(meta, "index.interval.bytes").unwrap_or(config.index_interval_bytes),
        tail_cache_bytes: config.tail_cache_bytes,
        max_compaction_lag_ms: compacted(meta, config)
            .then(|| topic_setting(meta, "max.compaction.lag.ms").unwrap_or(config.max_compaction_lag_ms))
            .filter(|lag| *lag < i64::MAX),
        write_chunk_bytes: WRITE_CHUNK_BYTES,
        preallocate_min_bytes,
        flush_interval_bytes: config.flush_interval_bytes,
    }
}

/// The settings a partition acts on: its topic's configs over the broker's defaults.
fn partition_settings(meta: &TopicMeta, config: &Config) -> PartitionSettings {
    let policy = meta.configs.get("cleanup.policy").unwrap_or(&config.cleanup_policy);
    PartitionSettings {
        log_append_time: match meta.configs.get("message.timestamp.type") {
            Some(v) => v == "LogAppendTime",
            None => config.log_append_time,
        },
        compact: compacted(meta, config),
        min_compaction_lag_ms: topic_setting(meta, "min.compaction.lag.ms").unwrap_or(config.min_compaction_lag_ms),
        delete_retention_ms: topic_setting(meta, "delete.retention.ms").unwrap_or(config.delete_retention_ms),
        min_insync_replicas: topic_setting(meta, "min.insync.replicas").unwrap_or(config.min_insync_replicas),
        retention: policy.split(',').any(|x| x.trim() == "delete").then(|| Retention {
            ms: topic_setting(meta, "retention.ms").unwrap_or(config.log_retention_ms()),
            bytes: topic_setting(meta, "retention.bytes").unwrap_or(config.log_retention_bytes),
            file_delete_delay_ms: topic_setting(meta, "file.delete.delay.ms").unwrap_or(config.file_delete_delay_ms),
        }),
        unclean_leader_election: meta
            .configs
            .get("unclean.leader.election.enable")
            .map_or(config.unclean_leader_election, |v| v == "true"),
    }
}

/// What the image makes broker `node` for a partition it holds a replica of.
fn role_of(image: &MetadataImage, tp: &TopicPartition, node: i32) -> Role {
    let Some((meta, state)) = image.topic(&tp.topic).and_then(|t| Some((t, t.state_of(tp.partition)?))) else {
        return Role::Follower { leader: -1, epoch: -1 };
    };
    if state.leader == node {
        Role::Leader(Leadership {
            node,
            epoch: state.leader_epoch,
            partition_epoch: state.partition_epoch,
            replicas: meta.replicas_of(tp.partition).to_vec(),
            isr: state.isr.clone(),
        })
    } else {
        Role::Follower { leader: state.leader, epoch: state.leader_epoch }
    }
}

/// `cleanup.policy` (or the broker's `log.cleanup.policy`) includes `compact`.
fn compacted(meta: &TopicMeta, config: &Config) -> bool {
    let policy = meta.configs.get("cleanup.policy").unwrap_or(&config.cleanup_policy);
    policy.split(',').any(|x| x.trim() == "compact")
}

fn topic_setting<T: std::str::FromStr>(meta: &TopicMeta, key: &str) -> Option<T> {
    meta.configs.get(key).and_then(|v| v.parse().ok())
}
