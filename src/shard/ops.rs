//! Partition operations on the owning data shard: append, read, list offsets, watch, and
//! applying a published metadata image (opening and removing partition logs).
//!
//! `produce` is split in two stages: the appends happen synchronously when it is called (so
//! appends keep the order of requests), and the returned future waits for durability.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::message::*;
use super::Shard;
use crate::cluster::{MetadataImage, TopicMeta};
use crate::group::OFFSETS_TOPIC;
use crate::partition::producer_state::Verdict;
use crate::partition::{producer_batch, Partition, Waiter};
use crate::protocol::batch::BatchHeader;
use crate::storage::{AppendInfo, Log, LogConfig, LogError};
use crate::types::{now_ms, Offset, TopicPartition};

/// Periodic syncs in flight at once on one shard.
const PERIODIC_SYNCS_AT_ONCE: usize = 8;

/// Buffered bytes that start a background write.
const WRITE_CHUNK_BYTES: u64 = 256 << 10;

fn storage_error_code(e: &LogError) -> i16 {
    match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange.code(),
        LogError::Io(_) | LogError::Corrupt(_) => ResponseError::KafkaStorageError.code(),
    }
}

impl Shard {
    /// Appends each item to its partition now; the future resolves when `acks` is met.
    pub fn produce_local(
        self: &Rc<Self>,
        acks: i16,
        timeout_ms: i32,
        items: Vec<ProduceItem>,
    ) -> impl Future<Output = Vec<ProduceOutcome>> + 'static {
        let image = self.image();
        let mut done = Vec::with_capacity(items.len());
        let mut waiting = Vec::with_capacity(items.len());
        let failed = |idx: usize, error: ResponseError| ProduceOutcome::failed(idx, error.code());
        for item in items {
            let Some(partition) = self.partition(&item.tp) else {
                done.push(failed(item.idx, ResponseError::UnknownTopicOrPartition));
                continue;
            };
            if partition.log.has_failed() {
                done.push(failed(item.idx, ResponseError::KafkaStorageError));
                continue;
            }
            let header = BatchHeader::new(&item.batch);
            if header.is_some_and(|h| h.is_transactional()) {
                // Transactions are not implemented: InitProducerId hands out no transactional ids.
                done.push(failed(item.idx, ResponseError::InvalidTxnState));
                continue;
            }
            let producer = header.as_ref().and_then(producer_batch);
            if let Some(batch) = &producer {
                let verdict = partition.producers.borrow().check(batch);
                match verdict {
                    Ok(Verdict::Append) => {}
                    Ok(Verdict::Duplicate { first_offset, last_offset }) => {
                        // A retry of a batch we have: its original offsets, nothing appended.
                        let info =
                            AppendInfo { base_offset: first_offset, last_offset, flush_due: false, rolled: false };
                        waiting.push((item.idx, partition, info, -1));
                        continue;
                    }
                    Err(e) => {
                        debug!(partition = %item.tp, producer_id = batch.producer_id, error = %e, "idempotent batch refused");
                        done.push(ProduceOutcome::failed(item.idx, e.error_code()));
                        continue;
                    }
                }
            }
            let append_time = log_append_time(&image, &item.tp, self.config.log_append_time).then(now_ms);
            let info = partition.log.append(BytesMut::from(&item.batch[..]), append_time);
            if info.rolled {
                // The state before this batch is the state at the new segment's base offset.
                let table = partition.producers.borrow().clone();
                let p = partition.clone();
                glommio::spawn_local(async move { p.write_snapshot(table, info.base_offset).await }).detach();
            }
            if let Some(batch) = &producer {
                partition.producers.borrow_mut().record(batch, info.base_offset);
            }
            // Consumers see the batch once it is written: acks=1/all write it before answering,
            // acks=0 (and large backlogs) get a background write now.
            if info.flush_due || acks == 0 {
                schedule_write(&partition);
            }
            waiting.push((item.idx, partition, info, append_time.unwrap_or(-1)));
        }
        async move {
            // All partitions wait at once under one deadline. Kafka's timeout bounds the wait
            // for acks=all; acks=0/1 are answered once written whatever the timeout.
            let deadline = Duration::from_millis(timeout_ms.max(0) as u64);
            let waits = waiting.into_iter().map(|(idx, partition, info, append_time)| async move {
                let durable = partition.durable(acks, info.last_offset);
                let result = if acks == -1 {
                    glommio::timer::timeout(deadline, async { Ok(durable.await) }).await
                } else {
                    Ok(durable.await)
                };
                let error_code = match result {
                    Ok(Ok(Ok(()))) => 0,
                    Ok(Ok(Err(e))) => storage_error_code(&e),
                    Ok(Err(_)) => ResponseError::KafkaStorageError.code(),
                    Err(_) => ResponseError::RequestTimedOut.code(),
                };
                ProduceOutcome {
                    idx,
                    error_code,
                    base_offset: info.base_offset,
                    log_append_time_ms: append_time,
                    log_start_offset: partition.log.log_start_offset(),
                }
            });
            done.extend(futures::future::join_all(waits).await);
            done
        }
    }

    /// Reads the items in request order against the response budget: once `budget` bytes
    /// are read, later partitions report their offsets but read nothing, so a request
    /// naming many partitions cannot make the shard hold more than one response's worth.
    pub async fn fetch_local(self: Rc<Self>, items: Vec<FetchItem>) -> Vec<FetchOutcome> {
        let mut out = Vec::with_capacity(items.len());
        let mut remaining = items.first().map(|i| i.budget).unwrap_or(0);
        let mut read_any = false;
        for item in items {
            let Some(partition) = self.partition(&item.tp) else {
                out.push(FetchOutcome {
                    idx: item.idx,
                    error_code: ResponseError::UnknownTopicOrPartition.code(),
                    high_watermark: -1,
                    log_start_offset: -1,
                    ..Default::default()
                });
                continue;
            };
            let high_watermark = partition.high_watermark();
            let log_start_offset = partition.log.log_start_offset();
            let limit = item.max_bytes.min(remaining);
            // Until something is read, one whole batch is returned whatever the limits (KIP-74).
            let read = if limit == 0 && read_any && item.offset <= high_watermark && item.offset >= log_start_offset {
                Ok(Default::default())
            } else {
                // The first batch is returned whole even past the limit (KIP-74).
                partition.log.read(item.offset, limit).await
            };
            let (error_code, records) = match read {
                // Only what is below the high watermark (written) goes out.
                Ok(r) => (0, crate::protocol::batch::below(r.records, high_watermark)),
                Err(e) => (storage_error_code(&e), Default::default()),
            };
            remaining = remaining.saturating_sub(records.len());
            read_any |= !records.is_empty();
            out.push(FetchOutcome { idx: item.idx, error_code, high_watermark, log_start_offset, records });
        }
        out
    }

    pub async fn list_offsets_local(self: Rc<Self>, items: Vec<ListOffsetsItem>) -> Vec<ListOffsetsOutcome> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(partition) = self.partition(&item.tp) else {
                out.push(ListOffsetsOutcome {
                    idx: item.idx,
                    error_code: ResponseError::UnknownTopicOrPartition.code(),
                    offset: -1,
                    timestamp: -1,
                });
                continue;
            };
            let log = &partition.log;
            let found: Result<Option<(Offset, i64)>, LogError> = match item.timestamp {
                -1 => Ok(Some((partition.high_watermark(), -1))),
                -2 => Ok(Some((log.log_start_offset(), -1))),
                -3 => log.max_timestamp_offset().await,
                ts if ts >= 0 => log.offset_for_timestamp(ts).await,
                _ => {
                    out.push(ListOffsetsOutcome {
                        idx: item.idx,
                        error_code: ResponseError::InvalidRequest.code(),
                        offset: -1,
                        timestamp: -1,
                    });
                    continue;
                }
            };
            out.push(match found {
                Ok(Some((offset, timestamp))) => ListOffsetsOutcome { idx: item.idx, error_code: 0, offset, timestamp },
                Ok(None) => ListOffsetsOutcome { idx: item.idx, error_code: 0, offset: -1, timestamp: -1 },
                Err(e) => {
                    ListOffsetsOutcome { idx: item.idx, error_code: storage_error_code(&e), offset: -1, timestamp: -1 }
                }
            });
        }
        out
    }

    /// Parks `reply` on each partition until its high watermark passes the one given
    /// (fires at once when the shard is stopping).
    pub fn watch_local(&self, items: Vec<(TopicPartition, Offset)>, reply: oneshot::Sender<()>) {
        let waiter: Waiter = Rc::new(std::cell::RefCell::new(Some(reply)));
        for (tp, seen) in items {
            match self.partition(&tp) {
                Some(p) => p.watch(seen, &waiter),
                None => {
                    // The partition went away (deleted or moved): let the fetch look again.
                    if let Some(s) = waiter.borrow_mut().take() {
                        let _ = s.send(());
                    }
                }
            }
        }
        if self.is_stopping() {
            if let Some(s) = waiter.borrow_mut().take() {
                let _ = s.send(());
            }
        }
    }

    /// Makes this data shard's partitions match `image`: opens logs it now owns, closes and
    /// deletes those whose topic is gone.
    pub async fn apply_image(self: &Rc<Self>, image: Arc<MetadataImage>) {
        let Some(me) = self.data_id() else { return };
        let wanted = image.partitions_of(me);
        let stale: Vec<TopicPartition> = self
            .partitions()
            .iter()
            .filter(|p| image.topic(&p.tp.topic).is_none_or(|t| t.id != p.topic_id || p.tp.partition >= t.partitions))
            .map(|p| p.tp.clone())
            .collect();
        self.set_image(image.clone());
        self.forget_deleted_topics(&image);
        for tp in stale {
            if tp.topic == OFFSETS_TOPIC {
                let total = image.topic(OFFSETS_TOPIC).map(|t| t.partitions).unwrap_or(0);
                self.unload_groups(tp.partition, total);
            }
            if let Some(p) = self.remove_partition(&tp) {
                p.notify();
                if let Err(e) = p.log.close().await {
                    warn!(partition = %tp, error = %e, "closing deleted partition failed");
                }
                let dir = p.log.dir().to_path_buf();
                glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(dir)).await.ok();
                info!(partition = %tp, "partition deleted");
            }
        }
        for (tp, meta) in wanted {
            if self.partition(&tp).is_some() {
                continue;
            }
            match self.open_partition(&tp, &meta).await {
                Ok(p) => {
                    let p = Rc::new(p);
                    self.insert_partition(p.clone());
                    if tp.topic == OFFSETS_TOPIC {
                        self.load_groups(p).await;
                    }
                }
                Err(e) => warn!(partition = %tp, error = %e, "cannot open partition; it stays offline"),
            }
        }
    }

    async fn open_partition(&self, tp: &TopicPartition, meta: &TopicMeta) -> Result<Partition, LogError> {
        let dir = self.config.data_dir.join(tp.dir_name());
        let id = meta.id;
        let dir2 = dir.clone();
        // A directory left by an older topic of the same name (crash during a delete) is stale.
        glommio::executor().spawn_blocking(move || prepare_partition_dir(&dir2, id)).await?;
        let config = LogConfig {
            segment_bytes: topic_setting(meta, "segment.bytes").unwrap_or(self.config.segment_bytes),
            segment_ms: topic_setting(meta, "segment.ms").unwrap_or(self.config.segment_ms),
            index_interval_bytes: topic_setting(meta, "index.interval.bytes")
                .unwrap_or(self.config.index_interval_bytes),
            tail_cache_bytes: self.config.tail_cache_bytes,
            write_chunk_bytes: WRITE_CHUNK_BYTES,
        };
        let log = Log::open(&dir, config, self.clean_start).await?;
        let partition = Partition::new(tp.clone(), meta.id, log);
        partition.recover_producers().await?;
        Ok(partition)
    }

    /// Syncs every partition with unsynced data (the periodic part of the flush policy).
    pub async fn sync_all(&self) {
        let dirty: Vec<Rc<Partition>> =
            self.partitions().into_iter().filter(|p| p.log.synced_offset() < p.log.next_offset()).collect();
        // A few at a time: a sync holds its partition's I/O permit until the device is done,
        // so a thousand queued at once would stall every partition's acks=1 writes behind
        // the whole batch instead of behind its own sync.
        use futures::stream::StreamExt;
        let mut syncs =
            futures::stream::iter(dirty.iter().map(|p| p.log.flush(true))).buffer_unordered(PERIODIC_SYNCS_AT_ONCE);
        while let Some(r) = syncs.next().await {
            if let Err(e) = r {
                warn!(error = %e, "periodic sync failed");
            }
        }
        for p in &dirty {
            p.notify();
        }
    }

    /// Compacts the sealed segments of partitions whose topic has `cleanup.policy=compact`
    /// and new sealed data, one partition at a time (the cleaner's pass).
    pub async fn compact_logs(&self) {
        let image = self.image();
        for p in self.partitions() {
            let Some(meta) = image.topic(&p.tp.topic) else { continue };
            let compacted =
                meta.configs.get("cleanup.policy").is_some_and(|v| v.split(',').any(|x| x.trim() == "compact"));
            if !compacted || !p.log.compaction_due() {
                continue;
            }
            let retention = topic_setting(meta, "delete.retention.ms").unwrap_or(self.config.delete_retention_ms);
            if let Err(e) = p.log.compact(now_ms(), retention).await {
                warn!(partition = %p.tp, error = %e, "compaction failed; the segments stay as they were");
            }
        }
    }

    /// The active producers of each partition, for DescribeProducers.
    pub fn describe_producers_local(&self, items: Vec<(usize, TopicPartition)>) -> Vec<ProducersOutcome> {
        items
            .into_iter()
            .map(|(idx, tp)| match self.partition(&tp) {
                None => ProducersOutcome {
                    idx,
                    error_code: ResponseError::UnknownTopicOrPartition.code(),
                    producers: Vec::new(),
                },
                Some(p) => {
                    let table = p.producers.borrow();
                    let mut producers: Vec<(i64, i16, i32, i64)> = table
                        .producers
                        .iter()
                        .map(|(id, e)| (*id, e.epoch, e.last_seq().unwrap_or(-1), e.last_timestamp))
                        .collect();
                    producers.sort_unstable();
                    ProducersOutcome { idx, error_code: 0, producers }
                }
            })
            .collect()
    }

    /// Forgets producers idle longer than `producer.id.expiration.ms`.
    pub fn expire_producers(&self) {
        let now = now_ms();
        for p in self.partitions() {
            let expired = p.producers.borrow_mut().expire(now, self.config.producer_id_expiration_ms);
            if expired > 0 {
                debug!(partition = %p.tp, expired, "producer ids expired");
            }
        }
    }

    /// Closes every log cleanly (sync, final index files). Returns whether all closed.
    pub async fn close_all(&self) -> bool {
        let mut ok = true;
        for p in self.partitions() {
            let table = p.producers.borrow().clone();
            if !table.producers.is_empty() {
                p.write_snapshot(table, p.log.next_offset()).await;
            }
            if let Err(e) = p.log.close().await {
                warn!(partition = %p.tp, error = %e, "close failed");
                ok = false;
            }
        }
        ok
    }
}

fn schedule_write(partition: &Rc<Partition>) {
    if partition.write_scheduled.replace(true) {
        return;
    }
    let p = partition.clone();
    glommio::spawn_local(async move {
        if let Err(e) = p.log.flush(false).await {
            warn!(partition = %p.tp, error = %e, "background write failed");
        }
        p.write_scheduled.set(false);
        p.notify();
    })
    .detach();
}

fn log_append_time(image: &MetadataImage, tp: &TopicPartition, broker_default: bool) -> bool {
    match image.topic(&tp.topic).and_then(|t| t.configs.get("message.timestamp.type")) {
        Some(v) => v == "LogAppendTime",
        None => broker_default,
    }
}

fn topic_setting<T: std::str::FromStr>(meta: &TopicMeta, key: &str) -> Option<T> {
    meta.configs.get(key).and_then(|v| v.parse().ok())
}

/// Creates the partition directory and its `partition.metadata` (topic id), wiping a
/// directory that belongs to another topic id.
fn prepare_partition_dir(dir: &std::path::Path, topic_id: uuid::Uuid) -> std::io::Result<()> {
    let meta_path = dir.join("partition.metadata");
    let expected = format!("version: 0\ntopic_id: {topic_id}\n");
    match std::fs::read_to_string(&meta_path) {
        Ok(found) if found == expected => return Ok(()),
        Ok(_) => {
            warn!(dir = %dir.display(), "partition directory belongs to an older topic; removing it");
            std::fs::remove_dir_all(dir)?;
        }
        Err(_) => {}
    }
    std::fs::create_dir_all(dir)?;
    std::fs::write(&meta_path, expected)?;
    std::fs::File::open(&meta_path)?.sync_all()?;
    std::fs::File::open(dir)?.sync_all()?;
    if let Some(parent) = dir.parent() {
        std::fs::File::open(parent)?.sync_all()?;
    }
    Ok(())
}
