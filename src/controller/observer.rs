//! A broker-only node follows the committed metadata log as an observer (KRaft's way): it
//! fetches the entries after its offset from a voter — the leader it last heard of, else
//! each voter in turn — with Fetch of `__cluster_metadata` (a long poll), applies them to
//! its image exactly as a voter applies committed entries, and publishes the image to its
//! data shards. Entries compacted away are replaced by the voter's snapshot (FetchSnapshot).
//! It keeps the image it applied on disk (`checkpoint.rs`, at most once every
//! [`CHECKPOINT_INTERVAL`]), so a restart fetches only what was committed since.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_snapshot_request::{PartitionSnapshot, SnapshotId, TopicSnapshot};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchSnapshotRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::{info, warn};

use super::{checkpoint, Controller, METADATA_TOPIC};
use crate::client::{ClientError, Connection};

/// How long a fetch waits at the voter for new commits.
const LONG_POLL: Duration = Duration::from_millis(500);
/// Bytes of entries (or snapshot) one fetch asks for.
const FETCH_BYTES: i32 = 4 << 20;
/// Wait before trying the next voter after a failure.
const RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The most often the image is written to this node's checkpoint.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

pub async fn run(controller: Rc<Controller>) {
    let config = controller.config().clone();
    let timeout = Duration::from_millis(config.quorum_request_timeout_ms) + LONG_POLL;
    let mut connection: Option<(i32, Connection)> = None;
    let mut turn = 0usize;
    let mut failing = false;
    let mut caught_up_once = false;
    let mut checkpointed = (controller.image().offset, Instant::now());
    loop {
        let target = controller.observed_leader.get().unwrap_or_else(|| {
            turn += 1;
            config.voters[turn % config.voters.len()].node_id
        });
        if connection.as_ref().is_none_or(|(id, _)| *id != target) {
            let Some(voter) = config.voters.iter().find(|v| v.node_id == target) else {
                controller.observed_leader.set(None);
                continue;
            };
            let client_id = format!("weir-observer-{}", config.node_id);
            connection = match Connection::connect(&voter.addr(), &client_id, timeout).await {
                Ok(c) => Some((target, c)),
                Err(e) => {
                    if !failing {
                        warn!(voter = target, error = %e, "cannot reach a voter for metadata; trying the others");
                        failing = true;
                    }
                    controller.observed_leader.set(None);
                    glommio::timer::sleep(RETRY_BACKOFF).await;
                    continue;
                }
            };
        }
        let Some((_, conn)) = connection.as_mut() else { continue };
        match fetch_once(&controller, conn, timeout).await {
            Ok(caught_up) => {
                let offset = controller.image().offset;
                if offset != checkpointed.0 && checkpointed.1.elapsed() >= CHECKPOINT_INTERVAL {
                    checkpoint_image(&controller);
                    checkpointed = (offset, Instant::now());
                }
                if caught_up && !caught_up_once {
                    // Directories of topics deleted while this node was away go now, as a
                    // voter removes them at start.
                    caught_up_once = true;
                    super::remove_deleted_partition_dirs(&config.data_dir, &controller.image().removed);
                }
                if failing {
                    info!(voter = target, offset = controller.image().offset, "following the metadata log again");
                    failing = false;
                }
            }
            Err(e) => {
                if !failing {
                    warn!(voter = target, error = %e, "metadata fetch failed; trying the others");
                    failing = true;
                }
                connection = None;
                controller.observed_leader.set(None);
                glommio::timer::sleep(RETRY_BACKOFF).await;
            }
        }
    }
}

/// Writes the image to this node's checkpoint. A failure only costs a longer fetch at the
/// next start, so it is logged, not fatal.
fn checkpoint_image(controller: &Controller) {
    let image = controller.image();
    let records = super::encode_records(&image.to_records());
    if let Err(e) = checkpoint::save(&controller.config().data_dir, image.offset, &records) {
        warn!(error = %e, offset = image.offset, "cannot write the metadata checkpoint");
    }
}

impl Controller {
    /// An observer applies fetched entries (entries without metadata only advance the offset).
    pub(super) fn apply_fetched(&self, entries: Vec<(u64, Bytes)>) {
        let entries: Vec<raft::eraftpb::Entry> = entries
            .into_iter()
            .map(|(index, data)| raft::eraftpb::Entry { index, data, ..Default::default() })
            .collect();
        if entries.is_empty() {
            return;
        }
        self.apply(&entries);
        self.image_changed();
    }

    /// An observer installs a fetched snapshot.
    fn install_fetched_snapshot(&self, data: &[u8], index: u64) {
        self.install_snapshot(data, index);
        self.image_changed();
    }
}

/// One fetch: entries applied, or a snapshot installed. `true` when there was nothing
/// new (this node has every committed entry the voter had).
async fn fetch_once(controller: &Controller, conn: &mut Connection, timeout: Duration) -> Result<bool, ClientError> {
    let offset = controller.image().offset;
    let mut partition = FetchPartition::default();
    partition.partition = 0;
    partition.fetch_offset = offset as i64 + 1;
    partition.partition_max_bytes = FETCH_BYTES;
    let mut topic = FetchTopic::default();
    topic.topic = TopicName(StrBytes::from_static_str(METADATA_TOPIC));
    topic.partitions = vec![partition];
    let mut request = FetchRequest::default();
    request.cluster_id = Some(StrBytes::from_string(controller.cluster_id().to_string()));
    request.replica_id = BrokerId(controller.config().node_id);
    request.max_wait_ms = LONG_POLL.as_millis() as i32;
    request.min_bytes = 1;
    request.max_bytes = FETCH_BYTES;
    request.session_epoch = -1;
    request.topics = vec![topic];
    let response = conn.call_version(&request, 12, timeout).await?;
    let protocol = |message: String| ClientError::Protocol { addr: conn.addr().to_string(), message };
    let part = response
        .responses
        .first()
        .and_then(|t| t.partitions.first())
        .ok_or_else(|| protocol("metadata fetch answered no partition".into()))?;
    if let Some(e) = ResponseError::try_from_code(part.error_code) {
        return Err(protocol(format!("metadata fetch refused: {e:?}")));
    }
    let leader = part.current_leader.leader_id.0;
    controller.observed_leader.set((leader >= 0).then_some(leader));
    if part.snapshot_id.end_offset >= 0 {
        let snapshot =
            fetch_snapshot(controller, conn, part.snapshot_id.end_offset, part.snapshot_id.epoch, timeout).await?;
        info!(index = part.snapshot_id.end_offset, bytes = snapshot.len(), "metadata snapshot installed");
        controller.install_fetched_snapshot(&snapshot, part.snapshot_id.end_offset as u64);
        return Ok(false);
    }
    let entries = decode_entries(part.records.clone().unwrap_or_default()).map_err(protocol)?;
    let caught_up = entries.is_empty();
    controller.apply_fetched(entries);
    Ok(caught_up)
}

async fn fetch_snapshot(
    controller: &Controller,
    conn: &mut Connection,
    end_offset: i64,
    epoch: i32,
    timeout: Duration,
) -> Result<Bytes, ClientError> {
    let mut data = BytesMut::new();
    loop {
        let mut id = SnapshotId::default();
        id.end_offset = end_offset;
        id.epoch = epoch;
        let mut partition = PartitionSnapshot::default();
        partition.partition = 0;
        partition.snapshot_id = id;
        partition.position = data.len() as i64;
        let mut topic = TopicSnapshot::default();
        topic.name = TopicName(StrBytes::from_static_str(METADATA_TOPIC));
        topic.partitions = vec![partition];
        let mut request = FetchSnapshotRequest::default();
        request.cluster_id = Some(StrBytes::from_string(controller.cluster_id().to_string()));
        request.replica_id = BrokerId(controller.config().node_id);
        request.max_bytes = FETCH_BYTES;
        request.topics = vec![topic];
        let response = conn.call(&request, timeout).await?;
        let protocol = |message: String| ClientError::Protocol { addr: conn.addr().to_string(), message };
        let part = response
            .topics
            .first()
            .and_then(|t| t.partitions.first())
            .ok_or_else(|| protocol("snapshot fetch answered no partition".into()))?;
        if let Some(e) = ResponseError::try_from_code(part.error_code) {
            return Err(protocol(format!("snapshot fetch refused: {e:?}")));
        }
        if part.unaligned_records.is_empty() && (data.len() as i64) < part.size {
            return Err(protocol("snapshot fetch made no progress".into()));
        }
        data.extend_from_slice(&part.unaligned_records);
        if data.len() as i64 >= part.size {
            return Ok(data.freeze());
        }
    }
}

/// `index u64 | length u32 | entry` each (see `server/controller_api/fetch.rs`).
fn decode_entries(mut records: Bytes) -> Result<Vec<(u64, Bytes)>, String> {
    let mut out = Vec::new();
    while records.has_remaining() {
        if records.remaining() < 12 {
            return Err("truncated metadata entry header".into());
        }
        let index = records.get_u64();
        let len = records.get_u32() as usize;
        if records.remaining() < len {
            return Err("truncated metadata entry".into());
        }
        out.push((index, records.split_to(len)));
    }
    Ok(out)
}
