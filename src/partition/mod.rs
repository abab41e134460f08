//! A partition on its owning data shard: Kafka's meaning on top of a [`Log`]. It owns the
//! append (with the idempotent-producer check and state update as one synchronous step),
//! durability by `acks`, the high watermark, reads, offset look-ups, the long-poll fetches
//! parked on it, background writes, and producer-state snapshots.
//!
//! Runs on the owning data shard only (`Rc`, `RefCell`/`Cell` borrowed in short
//! synchronous sections, never across an `.await`). The leader epoch, the ISR and the last
//! stable offset belong here when replication and transactions arrive.
//!
//! Waiters: a parked fetch is a one-shot sender shared by every partition it watches; a
//! write that moves the high watermark fires them all at once, so a long poll wakes on the
//! data, not on its timeout. Waiters whose fetch gave up are pruned when a new one parks.
//!
//! I/O never runs in a caller's future: writes and syncs run to completion in their own
//! task, so a caller that gives up (a produce timeout, a closed connection) never cancels a
//! write half way (an O_DIRECT write cancelled mid-flight could land after a newer one).

pub mod internal_topic;
pub mod producer_state;
pub mod snapshot;
pub mod table;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use self::producer_state::{ProducerBatch, ProducerStateTable, Verdict};
use crate::protocol::batch::{self, BatchHeader};
use crate::storage::{Log, LogConfig, LogError};
use crate::types::{now_ms, Acks, Offset, OffsetSpec, TopicPartition};

pub use table::PartitionTable;

/// Buffered bytes per partition beyond which even acks=0 produce waits for the disk.
const WRITE_BACKLOG_BYTES_MAX: u64 = 32 << 20;

/// A parked fetch, shared by every partition it watches; fired once.
pub type Waiter = Rc<RefCell<Option<oneshot::Sender<()>>>>;

/// Topic settings a partition acts on (from its topic's configs and the broker defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSettings {
    /// `message.timestamp.type=LogAppendTime`: the broker stamps the append time.
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`.
    pub compact: bool,
    /// `delete.retention.ms`: how long compaction keeps tombstones.
    pub delete_retention_ms: i64,
}

/// A batch the partition took (or recognised as a retry), and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The time stamped on the batch with LogAppendTime; -1 otherwise.
    pub log_append_time_ms: i64,
}

/// Batches read for a fetch, with the partition's offsets at the time of the read.
#[derive(Debug, Clone, Default)]
pub struct FetchRead {
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub records: Bytes,
}

/// One active idempotent producer (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
}

/// The Kafka error for a storage failure.
pub fn storage_error(e: &LogError) -> ResponseError {
    match e {
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io(_) | LogError::Corrupt(_) => ResponseError::KafkaStorageError,
    }
}

pub struct Partition {
    tp: TopicPartition,
    topic_id: uuid::Uuid,
    log: Log,
    settings: PartitionSettings,
    waiters: RefCell<Vec<Waiter>>,
    /// A background write is queued (see `schedule_write`).
    write_scheduled: Cell<bool>,
    /// Idempotent producers writing to this partition.
    producers: RefCell<ProducerStateTable>,
}

impl Partition {
    /// Opens (recovers) the partition's log in `dir` and rebuilds its producer state. A
    /// directory left by an older topic of the same name (a crash during a delete) is wiped.
    pub async fn open(
        tp: TopicPartition,
        topic_id: uuid::Uuid,
        dir: &Path,
        log_config: LogConfig,
        settings: PartitionSettings,
        clean_start: bool,
    ) -> Result<Rc<Partition>, LogError> {
        let dir_owned = dir.to_path_buf();
        glommio::executor().spawn_blocking(move || prepare_partition_dir(&dir_owned, topic_id)).await?;
        let log = Log::open(dir, log_config, clean_start).await?;
        let partition = Partition {
            tp,
            topic_id,
            log,
            settings,
            waiters: RefCell::new(Vec::new()),
            write_scheduled: Cell::new(false),
            producers: RefCell::new(ProducerStateTable::default()),
        };
        partition.recover_producers().await?;
        Ok(Rc::new(partition))
    }

    pub fn tp(&self) -> &TopicPartition {
        &self.tp
    }

    pub fn topic_id(&self) -> uuid::Uuid {
        self.topic_id
    }

    pub fn log_start_offset(&self) -> Offset {
        self.log.log_start_offset()
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> Offset {
        self.log.next_offset()
    }

    /// Offsets below this are visible to consumers: what has reached the segment files, so
    /// a consumer never sees (nor commits past) a record that a broker crash could take back.
    /// (Kafka's single-node equivalent is the log end in the page cache.)
    pub fn high_watermark(&self) -> Offset {
        self.log.written_offset()
    }

    /// Appends `batch` now, in one synchronous step with the idempotent-producer check and
    /// state update (so concurrent requests cannot interleave between them), and returns a
    /// future that resolves once `acks` is met (`acks=all` bounded by `timeout`). A retry
    /// of one of a producer's last batches appends nothing and gets its original offsets.
    pub fn produce(
        self: &Rc<Self>,
        batch: &Bytes,
        acks: Acks,
        timeout: Duration,
    ) -> Result<impl std::future::Future<Output = Result<Appended, ResponseError>> + 'static, ResponseError> {
        let appended = self.append(batch, acks)?;
        let partition = self.clone();
        Ok(async move {
            let durable = partition.durable(acks, appended.last_offset);
            let waited = match acks {
                // Kafka's timeout bounds the wait for acks=all; acks=0/1 are answered once
                // written whatever the timeout.
                Acks::All => glommio::timer::timeout(timeout, async { Ok(durable.await) }).await,
                Acks::Leader | Acks::None => Ok(durable.await),
            };
            match waited {
                Ok(Ok(Ok(()))) => Ok(appended),
                Ok(Ok(Err(e))) => Err(storage_error(&e)),
                Ok(Err(_)) => Err(ResponseError::KafkaStorageError),
                Err(_) => Err(ResponseError::RequestTimedOut),
            }
        })
    }

    fn append(self: &Rc<Self>, batch: &Bytes, acks: Acks) -> Result<Appended, ResponseError> {
        if self.log.has_failed() {
            return Err(ResponseError::KafkaStorageError);
        }
        let header = BatchHeader::new(batch);
        if header.as_ref().is_some_and(|h| h.is_transactional()) {
            // Transactions are not implemented: InitProducerId hands out no transactional ids.
            return Err(ResponseError::InvalidTxnState);
        }
        let producer = header.as_ref().and_then(producer_batch);
        if let Some(b) = &producer {
            let verdict = self.producers.borrow().check(b);
            match verdict {
                Ok(Verdict::Append) => {}
                Ok(Verdict::Duplicate { first_offset, last_offset }) => {
                    return Ok(Appended { base_offset: first_offset, last_offset, log_append_time_ms: -1 });
                }
                Err(e) => {
                    debug!(partition = %self.tp, producer_id = b.producer_id, error = %e, "idempotent batch refused");
                    return Err(e.error());
                }
            }
        }
        let append_time = self.settings.log_append_time.then(now_ms);
        let end_before = self.log.next_offset();
        let info = self.log.append(BytesMut::from(&batch[..]), append_time);
        if !crate::invariant!(
            info.base_offset == end_before && info.last_offset >= info.base_offset,
            "append to {} at {} gave offsets {}..={}",
            self.tp,
            end_before,
            info.base_offset,
            info.last_offset
        ) {
            return Err(ResponseError::KafkaStorageError);
        }
        if info.rolled {
            // The state before this batch is the state at the new segment's base offset.
            let table = self.producers.borrow().clone();
            let p = self.clone();
            glommio::spawn_local(async move { p.write_snapshot(table, info.base_offset).await }).detach();
        }
        if let Some(b) = &producer {
            self.producers.borrow_mut().record(b, info.base_offset);
        }
        // Consumers see the batch once it is written: acks=1/all write it before answering,
        // acks=0 (and large backlogs) get a background write now.
        if info.flush_due || acks == Acks::None {
            self.schedule_write();
        }
        Ok(Appended {
            base_offset: info.base_offset,
            last_offset: info.last_offset,
            log_append_time_ms: append_time.unwrap_or(-1),
        })
    }

    /// Waits until `last_offset` meets `acks` (all: synced; leader: written; none: written
    /// only if the partition is backlogged). The I/O runs in its own task.
    fn durable(self: &Rc<Self>, acks: Acks, last_offset: Offset) -> oneshot::Receiver<Result<(), LogError>> {
        let (tx, rx) = oneshot::channel();
        let p = self.clone();
        glommio::spawn_local(async move {
            let log = &p.log;
            let result = match acks {
                Acks::All => log.sync_to(last_offset).await,
                Acks::Leader => log.write_to(last_offset).await,
                Acks::None if log.unwritten_bytes() > WRITE_BACKLOG_BYTES_MAX => log.write_to(last_offset).await,
                Acks::None => Ok(()),
            };
            // Written data is visible now: wake the parked fetches.
            p.notify();
            let _ = tx.send(result);
        })
        .detach();
        rx
    }

    /// Starts a background write of what is buffered, unless one is queued already.
    fn schedule_write(self: &Rc<Self>) {
        if self.write_scheduled.replace(true) {
            return;
        }
        let p = self.clone();
        glommio::spawn_local(async move {
            if let Err(e) = p.log.flush(false).await {
                warn!(partition = %p.tp, error = %e, "background write failed");
            }
            p.write_scheduled.set(false);
            p.notify();
        })
        .detach();
    }

    /// Reads whole batches from `offset`, at most `limit` bytes, except that the first batch
    /// found is returned whole (KIP-74). `skip_when_empty_limit`: with a zero limit, read
    /// nothing (another partition of the response already returned data). Only what is
    /// below the high watermark goes out.
    pub async fn read(
        &self,
        offset: Offset,
        limit: usize,
        skip_when_empty_limit: bool,
    ) -> Result<FetchRead, ResponseError> {
        let high_watermark = self.high_watermark();
        let log_start_offset = self.log.log_start_offset();
        let in_range = offset >= log_start_offset && offset <= high_watermark;
        let records = if limit == 0 && skip_when_empty_limit && in_range {
            Bytes::new()
        } else {
            let read = self.log.read(offset, limit).await.map_err(|e| storage_error(&e))?;
            batch::below(read.records, high_watermark)
        };
        Ok(FetchRead { high_watermark, log_start_offset, records })
    }

    /// Reads stored batches from `offset` up to the log end, whatever the high watermark:
    /// for an internal topic's owner replaying its own partition.
    pub async fn read_stored(&self, offset: Offset, max_bytes: usize) -> Result<Bytes, LogError> {
        Ok(self.log.read(offset, max_bytes).await?.records)
    }

    /// The offset (and its timestamp, or -1) that `spec` names; `None` when no record
    /// matches (a timestamp after every record's).
    pub async fn list_offset(&self, spec: OffsetSpec) -> Result<Option<(Offset, i64)>, ResponseError> {
        let found = match spec {
            OffsetSpec::Latest => Ok(Some((self.high_watermark(), -1))),
            OffsetSpec::Earliest => Ok(Some((self.log.log_start_offset(), -1))),
            OffsetSpec::MaxTimestamp => self.log.max_timestamp_offset().await,
            OffsetSpec::AtTime(ts) => self.log.offset_for_timestamp(ts).await,
        };
        found.map_err(|e| storage_error(&e))
    }

    /// Parks `waiter` until the high watermark passes `offset`; fires it now if it already has.
    pub fn watch(&self, offset: Offset, waiter: &Waiter) {
        if self.high_watermark() > offset {
            fire(waiter);
            return;
        }
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| w.borrow().as_ref().is_some_and(|s| !s.is_canceled()));
        waiters.push(waiter.clone());
    }

    /// Wakes every parked fetch (after a write, or when the partition goes away).
    pub fn notify(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in &waiters {
            fire(w);
        }
    }

    /// Whether data is appended but not yet synced.
    pub fn needs_sync(&self) -> bool {
        self.log.synced_offset() < self.log.next_offset()
    }

    /// Syncs everything appended so far (the periodic part of the flush policy).
    pub async fn sync(&self) -> Result<(), LogError> {
        let synced = self.log.flush(true).await;
        self.notify();
        synced
    }

    /// Compacts the sealed segments when the topic is compacted and there is new sealed data
    /// (the cleaner's pass).
    pub async fn compact_if_due(&self) -> Result<(), LogError> {
        if self.settings.compact && self.log.compaction_due() {
            self.log.compact(now_ms(), self.settings.delete_retention_ms).await?;
        }
        Ok(())
    }

    /// The active idempotent producers, by producer id.
    pub fn producers(&self) -> Vec<ProducerSummary> {
        let table = self.producers.borrow();
        let mut out: Vec<ProducerSummary> = table
            .producers
            .iter()
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_timestamp: e.last_timestamp,
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Forgets producers idle longer than `expiration_ms`; returns how many.
    pub fn expire_producers(&self, now: i64, expiration_ms: i64) -> usize {
        self.producers.borrow_mut().expire(now, expiration_ms)
    }

    /// Closes the log cleanly (producer snapshot, sync, final index files).
    pub async fn close(&self) -> Result<(), LogError> {
        let table = self.producers.borrow().clone();
        if !table.producers.is_empty() {
            self.write_snapshot(table, self.log.next_offset()).await;
        }
        self.log.close().await
    }

    /// Closes the log and removes the partition's directory (its topic was deleted).
    pub async fn delete(&self) {
        self.notify();
        if let Err(e) = self.log.close().await {
            warn!(partition = %self.tp, error = %e, "closing deleted partition failed");
        }
        let dir = self.log.dir().to_path_buf();
        if let Err(e) = glommio::executor().spawn_blocking(move || std::fs::remove_dir_all(dir)).await {
            warn!(partition = %self.tp, error = %e, "cannot remove the deleted partition's directory");
        }
        info!(partition = %self.tp, "partition deleted");
    }

    /// Rebuilds producer state: the newest snapshot, then the batches after it.
    async fn recover_producers(&self) -> Result<(), LogError> {
        let dir = self.log.dir().to_path_buf();
        let end = self.log.next_offset();
        let (mut table, from) = glommio::executor().spawn_blocking(move || snapshot::load_latest(&dir, end)).await;
        self.log
            .for_each_batch(from, |h| {
                if let Some(batch) = producer_batch(h) {
                    table.record(&batch, h.base_offset());
                }
            })
            .await?;
        *self.producers.borrow_mut() = table;
        Ok(())
    }

    /// Writes a snapshot of `table` (the state below `offset`) without blocking the shard.
    async fn write_snapshot(&self, table: ProducerStateTable, offset: Offset) {
        let dir = self.log.dir().to_path_buf();
        let written = glommio::executor().spawn_blocking(move || snapshot::write(&dir, &table, offset)).await;
        if let Err(e) = written {
            warn!(partition = %self.tp, error = %e, "producer snapshot not written; recovery will replay more log");
        }
    }
}

/// Fires `waiter` if nobody has yet.
pub fn fire(waiter: &Waiter) {
    if let Some(sender) = waiter.borrow_mut().take() {
        let _ = sender.send(());
    }
}

/// The producer fields of an idempotent data batch; `None` for other batches.
pub fn producer_batch(h: &BatchHeader<'_>) -> Option<ProducerBatch> {
    (h.producer_id() >= 0 && !h.is_control()).then(|| ProducerBatch {
        producer_id: h.producer_id(),
        epoch: h.producer_epoch(),
        first_seq: h.base_sequence(),
        offset_delta: h.last_offset_delta(),
        max_timestamp: h.max_timestamp(),
    })
}

/// Creates the partition directory and its `partition.metadata` (topic id), wiping a
/// directory that belongs to another topic id.
fn prepare_partition_dir(dir: &Path, topic_id: uuid::Uuid) -> std::io::Result<()> {
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
