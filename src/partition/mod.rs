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
//! Listeners are the lasting kind: a fetch session's interest, told on every such change
//! for as long as it lives, so its fetches read only the partitions that changed.
//!
//! I/O never runs in a caller's future: writes and syncs run to completion in their own
//! task, so a caller that gives up (a produce timeout, a closed connection) never cancels a
//! write half way (an O_DIRECT write cancelled mid-flight could land after a newer one).

pub mod internal_topic;
pub mod producer_state;
pub mod replica;
pub mod snapshot;
pub mod table;
pub mod transactions;

use std::cell::{Cell, RefCell};
use std::path::Path;
use std::rc::{Rc, Weak};
use std::time::Duration;

use bytes::Bytes;
use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use self::producer_state::{ProducerBatch, ProducerStateTable, Verdict};
use self::replica::{LeaderState, Role};
use self::transactions::{AbortedTxn, PartitionTxns};
use crate::protocol::batch::{self, BatchHeader, ControlType};
use crate::storage::log::retention::{Removed, Retention};
use crate::storage::{Log, LogConfig, LogError};
use crate::types::{now_ms, Acks, Offset, OffsetSpec, TopicPartition};

pub use table::PartitionTable;

/// Buffered bytes per partition beyond which even acks=0 produce waits for the disk.
const WRITE_BACKLOG_BYTES_MAX: u64 = 32 << 20;
/// Kafka's message for a keyless record sent to a compacted topic.
const KEYLESS_IN_COMPACTED: &str = "Compacted topic cannot accept message without key.";
/// Bytes read at once while a coordinator replays its internal topic's partition.
const REPLAY_READ_BYTES: usize = 1 << 20;
/// How often a DeleteRecords looks whether the followers' log starts caught up.
const LOW_WATERMARK_POLL: Duration = Duration::from_millis(20);

/// Answers an acks=all produce waiting for replication: `Ok` once the high watermark passed
/// its batch, the error when leadership was lost first.
type ReplicatedSender = oneshot::Sender<Result<(), ResponseError>>;

/// A parked fetch, shared by every partition it watches; fired once.
pub type Waiter = Rc<RefCell<Option<oneshot::Sender<()>>>>;

/// Told whenever what a fetch of the partition would answer may have changed (a write or
/// sync moved the high watermark, the partition went away, the broker is stopping), by
/// the `slot` it gave when it started listening. Runs inside the change: it must only take
/// note (and wake a task), never call back into the partition.
pub trait ChangeListener {
    fn changed(&self, slot: u32);
}

/// Topic settings a partition acts on (from its topic's configs and the broker defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionSettings {
    /// `message.timestamp.type=LogAppendTime`: the broker stamps the append time.
    pub log_append_time: bool,
    /// `cleanup.policy` includes `compact`.
    pub compact: bool,
    /// `delete.retention.ms`: how long compaction keeps tombstones.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: a segment is compacted only once all its records are this old.
    pub min_compaction_lag_ms: i64,
    /// `min.insync.replicas`: acks=all needs an ISR at least this large.
    pub min_insync_replicas: usize,
    /// `unclean.leader.election.enable`: any replica, not only an in-sync one, may be elected.
    pub unclean_leader_election: bool,
    /// `retention.ms`, `retention.bytes`, `file.delete.delay.ms`; `None` when
    /// `cleanup.policy` does not include `delete`.
    pub retention: Option<Retention>,
}

/// A batch refused for what its records hold: the error, the refused records' indexes in
/// the batch and Kafka's message (KIP-467).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordsRefused {
    pub error: ResponseError,
    pub records: Vec<i32>,
    pub message: Option<&'static str>,
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
    pub last_stable_offset: Offset,
    pub log_start_offset: Offset,
    pub records: Bytes,
    /// For a read_committed fetch: the aborted transactions the records overlap.
    pub aborted: Vec<AbortedTxn>,
}

/// Kafka's isolation level of a fetch or an offset lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Everything below the high watermark.
    #[default]
    ReadUncommitted,
    /// Only below the last stable offset; aborted transactions are named for skipping.
    ReadCommitted,
}

impl Isolation {
    pub fn from_wire(level: i8) -> Self {
        if level == 1 {
            Isolation::ReadCommitted
        } else {
            Isolation::ReadUncommitted
        }
    }
}

/// Batches read for a follower's fetch (up to the log end, not the high watermark).
#[derive(Debug, Clone, Default)]
pub struct ReplicaRead {
    pub high_watermark: Offset,
    pub log_start_offset: Offset,
    pub records: Bytes,
    /// The follower's log diverged: the epoch and end offset it must truncate to (KIP-595's
    /// diverging epoch); no records then.
    pub diverging: Option<(i32, Offset)>,
}

/// Where a follower's log stands: what it fetches from next, with its newest leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerPosition {
    pub log_end: Offset,
    pub last_epoch: i32,
    pub log_start: Offset,
}

/// Producer state to persist at an offset (see `Partition::persist_producer_state`).
struct ProducerStateAt {
    table: ProducerStateTable,
    open: snapshot::OpenTxns,
    /// The segment whose aborted-transaction index goes with it, and that index.
    segment_base: Offset,
    aborted: Vec<AbortedTxn>,
    offset: Offset,
}

/// This broker's role for a partition, with the leader's bookkeeping.
enum Replication {
    Leader(LeaderState),
    Follower { leader: i32, epoch: i32 },
}

/// One active idempotent producer (DescribeProducers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ProducerSummary {
    pub producer_id: i64,
    pub epoch: i16,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    /// The first offset of its transaction open here; -1: none.
    pub current_txn_start_offset: Offset,
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
    settings: Cell<PartitionSettings>,
    waiters: RefCell<Vec<Waiter>>,
    /// A background write is queued (see `schedule_write`).
    write_scheduled: Cell<bool>,
    /// A background sync is queued (see `sync_if_due`).
    sync_scheduled: Cell<bool>,
    /// Idempotent producers writing to this partition.
    producers: RefCell<ProducerStateTable>,
    /// Open transactions, the last stable offset, aborted transactions.
    txns: RefCell<PartitionTxns>,
    /// The log end the newest producer snapshot on disk was taken at: a close with the log
    /// still there has nothing to write.
    snapshot_at: Cell<Option<Offset>>,
    /// Held while producer state is persisted: rolls in quick succession write their
    /// indexes and snapshots in roll order, whatever order the blocking pool runs jobs in.
    persisting: glommio::sync::Semaphore,
    /// Leader or follower, as the latest image says.
    replication: RefCell<Replication>,
    /// The high watermark while replicas other than this broker are in sync (alone in the
    /// ISR, it is simply what is written). Never moves back within a leadership.
    high_watermark: Cell<Offset>,
    /// acks=all produces waiting for the high watermark to pass their last offset.
    hw_waiters: RefCell<Vec<(Offset, ReplicatedSender)>>,
    /// Followers' fetches parked until the log end moves.
    end_waiters: RefCell<Vec<Waiter>>,
    /// Fetch sessions listening for changes, each with its slot; dropped when they are.
    listeners: RefCell<Vec<(Weak<dyn ChangeListener>, u32)>>,
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
            settings: Cell::new(settings),
            waiters: RefCell::new(Vec::new()),
            write_scheduled: Cell::new(false),
            sync_scheduled: Cell::new(false),
            producers: RefCell::new(ProducerStateTable::default()),
            txns: RefCell::new(PartitionTxns::default()),
            snapshot_at: Cell::new(None),
            persisting: glommio::sync::Semaphore::new(1),
            replication: RefCell::new(Replication::Follower { leader: -1, epoch: -1 }),
            high_watermark: Cell::new(0),
            hw_waiters: RefCell::new(Vec::new()),
            end_waiters: RefCell::new(Vec::new()),
            listeners: RefCell::new(Vec::new()),
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

    /// Bytes of records in the log.
    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// The offset the next appended record gets.
    pub fn log_end_offset(&self) -> Offset {
        self.log.next_offset()
    }

    /// Offsets below this are visible to consumers. Alone in the ISR, the leader's is what has
    /// reached the segment files, so a consumer never sees (nor commits past) a record that a
    /// broker crash could take back (Kafka's single-node equivalent is the log end in the
    /// page cache). With followers in sync, it is what every one of them holds too.
    pub fn high_watermark(&self) -> Offset {
        match &*self.replication.borrow() {
            Replication::Leader(s) if s.leadership.solo() => self.log.written_offset().max(self.high_watermark.get()),
            _ => self.high_watermark.get(),
        }
    }

    /// The role the image gives this broker for the partition (see `replica`). Becoming
    /// leader in a new epoch records the epoch's start durably before any append of it;
    /// losing leadership fails the acks=all produces still waiting.
    pub async fn set_role(&self, role: Role) -> Result<(), LogError> {
        match role {
            Role::Leader(leadership) => {
                let same_epoch = matches!(&*self.replication.borrow(),
                    Replication::Leader(s) if s.leadership.epoch == leadership.epoch);
                if same_epoch {
                    if let Replication::Leader(s) = &mut *self.replication.borrow_mut() {
                        s.update(leadership);
                    }
                } else {
                    self.log.begin_epoch(leadership.epoch).await?;
                    let epoch_start = self.log.next_offset();
                    info!(partition = %self.tp, epoch = leadership.epoch, isr = ?leadership.isr, epoch_start, "leading");
                    // The watermark carries over: what this broker knew was replicated.
                    self.high_watermark.set(self.high_watermark.get().min(epoch_start));
                    *self.replication.borrow_mut() =
                        Replication::Leader(LeaderState::new(leadership, epoch_start, now_ms()));
                }
            }
            Role::Follower { leader, epoch } => {
                let was_leader = matches!(&*self.replication.borrow(), Replication::Leader(_));
                if was_leader {
                    // Carried over as a follower's watermark (it may only be lowered now).
                    self.high_watermark.set(self.high_watermark());
                    info!(partition = %self.tp, leader, epoch, "following");
                }
                *self.replication.borrow_mut() = Replication::Follower { leader, epoch };
                for (_, w) in std::mem::take(&mut *self.hw_waiters.borrow_mut()) {
                    let _ = w.send(Err(ResponseError::NotLeaderOrFollower));
                }
                self.notify_end();
            }
        }
        self.update_high_watermark();
        Ok(())
    }

    /// Whether the partition already acts on `role` (an image that changes nothing for it).
    pub fn has_role(&self, role: &Role) -> bool {
        match (&*self.replication.borrow(), role) {
            (Replication::Leader(s), Role::Leader(l)) => s.leadership == *l,
            (Replication::Follower { leader, epoch }, Role::Follower { leader: l, epoch: e }) => {
                leader == l && epoch == e
            }
            _ => false,
        }
    }

    /// Takes changed settings (a topic config, or a broker default under it): the next
    /// produce, roll, retention and compaction run use them.
    pub fn update_settings(&self, settings: PartitionSettings, log_config: LogConfig) {
        if self.settings.get() == settings && self.log.config() == log_config {
            return;
        }
        info!(partition = %self.tp, ?settings, ?log_config, "settings changed");
        self.settings.set(settings);
        self.log.set_config(log_config);
    }

    /// Leads and is not deposed (see `check_deposed`).
    pub fn takes_writes(&self) -> bool {
        matches!(&*self.replication.borrow(), Replication::Leader(s) if !s.deposed)
    }

    /// The leader epoch this broker leads in, if it leads.
    pub fn leader_epoch(&self) -> Option<i32> {
        match &*self.replication.borrow() {
            Replication::Leader(s) => Some(s.leadership.epoch),
            Replication::Follower { .. } => None,
        }
    }

    /// Recomputes the high watermark from the followers' progress and wakes what it passed.
    fn update_high_watermark(&self) {
        let computed = match &*self.replication.borrow() {
            Replication::Leader(s) if s.leadership.solo() => Some(self.log.written_offset()),
            Replication::Leader(s) => s.high_watermark(self.log.written_offset()),
            Replication::Follower { .. } => None,
        };
        let Some(hw) = computed else { return };
        if hw > self.high_watermark.get() {
            self.high_watermark.set(hw);
        }
        let hw = self.high_watermark.get();
        let ready: Vec<_> = {
            let mut waiters = self.hw_waiters.borrow_mut();
            let (ready, left) = std::mem::take(&mut *waiters).into_iter().partition(|(o, _)| *o < hw);
            *waiters = left;
            ready
        };
        for (_, w) in ready {
            let _ = w.send(Ok(()));
        }
    }

    /// Resolves once the high watermark passes `last_offset` (or leadership is lost).
    fn replicated(&self, last_offset: Offset) -> oneshot::Receiver<Result<(), ResponseError>> {
        let (tx, rx) = oneshot::channel();
        if self.high_watermark() > last_offset {
            let _ = tx.send(Ok(()));
        } else if !self.takes_writes() {
            // Leadership was lost (or deposed) while the batch was being made durable:
            // nothing will move this broker's high watermark for it any more.
            let _ = tx.send(Err(ResponseError::NotLeaderOrFollower));
        } else {
            self.hw_waiters.borrow_mut().push((last_offset, tx));
            self.update_high_watermark();
        }
        rx
    }

    /// The ISR this leader should ask the controller for now, marked pending; `None` when
    /// nothing should change (or a change is pending, or this broker does not lead).
    /// Also says whether it is asked again after a refusal.
    pub fn isr_change_wanted(
        &self,
        now: i64,
        lag_max_ms: i64,
        eligible: impl Fn(i32) -> bool,
    ) -> Option<(replica::Leadership, Vec<i32>, bool)> {
        let hw = self.high_watermark();
        let mut replication = self.replication.borrow_mut();
        let Replication::Leader(s) = &mut *replication else { return None };
        let wanted = s.wanted_isr(hw, now, lag_max_ms, eligible)?;
        s.set_pending(Some(wanted.clone()), now);
        Some((s.leadership.clone(), wanted, s.refusals() > 0))
    }

    /// Refuses writes while another replica may lead (see `replica`): this broker has not
    /// reached the controller for its lease (`controller_lost`) and an electable follower
    /// has not fetched for `silence_ms`. The acks=all produces still waiting are answered
    /// NOT_LEADER_OR_FOLLOWER, so their producers find the new leader. Returns the new
    /// state when it changed.
    pub fn check_deposed(&self, controller_lost: bool, now: i64, silence_ms: i64) -> Option<bool> {
        let deposed = {
            let mut replication = self.replication.borrow_mut();
            let Replication::Leader(s) = &mut *replication else { return None };
            let deposed =
                s.may_be_deposed(controller_lost, self.settings.get().unclean_leader_election, now, silence_ms);
            if deposed == s.deposed {
                return None;
            }
            s.deposed = deposed;
            deposed
        };
        if deposed {
            for (_, w) in std::mem::take(&mut *self.hw_waiters.borrow_mut()) {
                let _ = w.send(Err(ResponseError::NotLeaderOrFollower));
            }
        }
        Some(deposed)
    }

    /// The ISR change asked for failed: ask again after a backoff. Returns how many times
    /// in a row it failed.
    pub fn isr_change_failed(&self) -> u32 {
        match &mut *self.replication.borrow_mut() {
            Replication::Leader(s) => s.retry_later(now_ms()),
            Replication::Follower { .. } => 0,
        }
    }

    /// How many replicas are in sync, as this leader counts them (`None`: it does not lead).
    pub fn isr_size(&self) -> Option<usize> {
        match &*self.replication.borrow() {
            Replication::Leader(s) => Some(s.leadership.isr.len()),
            Replication::Follower { .. } => None,
        }
    }

    /// Kafka's record checks that need the records themselves: a compacted topic refuses a
    /// batch with records without a key (INVALID_RECORD, naming them). Other topics are not
    /// decoded: their produce path never decompresses.
    pub fn check_records(&self, batch: &Bytes) -> Result<(), RecordsRefused> {
        if !self.settings.get().compact {
            return Ok(());
        }
        match batch::records_without_key(batch) {
            Ok(keyless) if keyless.is_empty() => Ok(()),
            Ok(keyless) => Err(RecordsRefused {
                error: ResponseError::InvalidRecord,
                records: keyless,
                message: Some(KEYLESS_IN_COMPACTED),
            }),
            Err(e) => Err(RecordsRefused { error: e.error(), records: Vec::new(), message: None }),
        }
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
        Ok(self.clone().acknowledged(appended, acks, timeout))
    }

    /// Resolves with `appended` once `acks` is met for it (acks=all bounded by `timeout`).
    async fn acknowledged(
        self: Rc<Self>,
        appended: Appended,
        acks: Acks,
        timeout: Duration,
    ) -> Result<Appended, ResponseError> {
        let durable = self.durable(acks, appended.last_offset);
        let waited = match acks {
            // Kafka's timeout bounds the wait for acks=all; acks=0/1 are answered once
            // written whatever the timeout.
            Acks::All => {
                glommio::timer::timeout(timeout, async {
                    match durable.await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => return Ok(Err(storage_error(&e))),
                        Err(_) => return Ok(Err(ResponseError::KafkaStorageError)),
                    }
                    // Durable here; now on every in-sync replica.
                    Ok(self.replicated(appended.last_offset).await.unwrap_or(Err(ResponseError::NotLeaderOrFollower)))
                })
                .await
            }
            Acks::Leader | Acks::None => Ok(match durable.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(storage_error(&e)),
                Err(_) => Err(ResponseError::KafkaStorageError),
            }),
        };
        match waited {
            // Replicated, but the ISR shrank below the minimum meanwhile (Kafka's check). A
            // leader that stepped down once the batch was replicated answers success.
            Ok(Ok(()))
                if acks == Acks::All
                    && self.isr_size().is_some_and(|n| n < self.settings.get().min_insync_replicas) =>
            {
                Err(ResponseError::NotEnoughReplicasAfterAppend)
            }
            Ok(Ok(())) => Ok(appended),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(ResponseError::RequestTimedOut),
        }
    }

    /// Writes a transaction marker for `producer_id` (WriteTxnMarkers, from the transaction
    /// coordinator): a control batch that ends the producer's transaction here, committed or
    /// aborted. Appended now; resolves once durable on every in-sync replica (acks=all).
    /// A marker older than the producer's epoch here is refused (INVALID_PRODUCER_EPOCH), and
    /// one from an older coordinator than the last marker's (TRANSACTION_COORDINATOR_FENCED).
    pub fn write_marker(
        self: &Rc<Self>,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        kind: ControlType,
        timeout: Duration,
    ) -> Result<impl std::future::Future<Output = Result<Appended, ResponseError>> + 'static, ResponseError> {
        if self.log.has_failed() || self.log.is_write_blocked() {
            return Err(ResponseError::KafkaStorageError);
        }
        let epoch = match &*self.replication.borrow() {
            Replication::Leader(s) if !s.deposed => s.leadership.epoch,
            _ => return Err(ResponseError::NotLeaderOrFollower),
        };
        if let Err(e) = self.producers.borrow().check_marker(producer_id, producer_epoch, coordinator_epoch) {
            debug!(partition = %self.tp, producer_id, error = %e, "transaction marker refused");
            return Err(e.error());
        }
        let now = now_ms();
        let batch = batch::control_batch(producer_id, producer_epoch, coordinator_epoch, kind, now)
            .map_err(|_| ResponseError::UnknownServerError)?;
        let info = self.log.append(&batch, None, epoch);
        if info.rolled {
            self.snapshot_at_roll(info.base_offset);
        }
        self.producers.borrow_mut().record_marker(producer_id, producer_epoch, coordinator_epoch, now);
        let hw = self.high_watermark();
        if let Some(aborted) = self.txns.borrow_mut().on_marker(producer_id, info.base_offset, kind, hw) {
            debug!(partition = %self.tp, producer_id, first_offset = aborted.first_offset, marker = aborted.last_offset, "transaction aborted");
        }
        self.notify_end();
        let appended =
            Appended { base_offset: info.base_offset, last_offset: info.last_offset, log_append_time_ms: -1 };
        Ok(self.clone().acknowledged(appended, Acks::All, timeout))
    }

    /// Offsets below this are stable: no transaction that is open, or whose outcome is not
    /// yet replicated, begins below it. What read_committed consumers may read.
    pub fn last_stable_offset(&self) -> Offset {
        let hw = self.high_watermark();
        self.txns.borrow_mut().last_stable_offset(hw)
    }

    /// At a roll: the sealed segment's aborted-transaction index, then a producer snapshot
    /// at the new segment's base (the state before its first batch), off the shard.
    fn snapshot_at_roll(self: &Rc<Self>, new_base: Offset) {
        let state = self.producer_state_below(self.log.segment_base_of(new_base - 1), new_base);
        let p = self.clone();
        glommio::spawn_local(async move { p.persist_producer_state(state).await }).detach();
    }

    /// The producer state below `offset` (producers, open transactions) with the aborted
    /// transactions of the segment from `segment_base` that `offset` closes, taken now.
    fn producer_state_below(&self, segment_base: Offset, offset: Offset) -> ProducerStateAt {
        let txns = self.txns.borrow();
        ProducerStateAt {
            table: self.producers.borrow().clone(),
            open: txns.open_transactions().into_iter().collect(),
            segment_base,
            aborted: txns.aborted_in_segment(segment_base, offset),
            offset,
        }
    }

    /// Writes the segment's aborted-transaction index, then the producer snapshot, in one
    /// job off the shard: a snapshot is on disk only with every index below it.
    async fn persist_producer_state(&self, state: ProducerStateAt) {
        // Waiters are served in order, so roll N's job runs before roll N+1's.
        let Ok(_turn) = self.persisting.acquire_permit(1).await else { return };
        let dir = self.log.dir().to_path_buf();
        let offset = state.offset;
        let written = glommio::executor()
            .spawn_blocking(move || -> std::io::Result<()> {
                transactions::write_index(&dir, state.segment_base, &state.aborted)?;
                snapshot::write(&dir, &state.table, &state.open, state.offset)
            })
            .await;
        match written {
            Ok(()) => self.snapshot_at.set(Some(offset)),
            Err(e) => {
                warn!(partition = %self.tp, error = %e, "producer snapshot (or aborted-transaction index) not written; recovery will replay more log")
            }
        }
    }

    fn append(self: &Rc<Self>, batch: &Bytes, acks: Acks) -> Result<Appended, ResponseError> {
        // A full disk refuses the batch before it gets offsets (so nothing half-taken stays
        // behind); the partition takes appends again once its buffered data is written.
        if self.log.has_failed() || self.log.is_write_blocked() {
            return Err(ResponseError::KafkaStorageError);
        }
        let (epoch, isr) = match &*self.replication.borrow() {
            Replication::Leader(s) if !s.deposed => (s.leadership.epoch, s.leadership.isr.len()),
            _ => return Err(ResponseError::NotLeaderOrFollower),
        };
        if acks == Acks::All && isr < self.settings.get().min_insync_replicas {
            debug!(partition = %self.tp, isr, min = self.settings.get().min_insync_replicas, "acks=all refused: ISR below min.insync.replicas");
            return Err(ResponseError::NotEnoughReplicas);
        }
        let header = BatchHeader::new(batch);
        // The producer whose transaction this batch belongs to.
        let txn_producer = header.as_ref().filter(|h| h.is_transactional()).map(|h| h.producer_id());
        if txn_producer.is_some_and(|id| id < 0) {
            // A transactional batch must carry its producer's id (Kafka: INVALID_RECORD).
            return Err(ResponseError::InvalidRecord);
        }
        let producer = header.as_ref().and_then(producer_batch);
        if let (Some(id), None, Some(h)) = (txn_producer, &producer, &header) {
            // A coordinator's batch in a producer's transaction (offsets committed in it):
            // no sequence to check, but a fenced epoch is refused as the producer's own is.
            if let Err(e) = self.producers.borrow().check_epoch(id, h.producer_epoch()) {
                return Err(e.error());
            }
        }
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
        let append_time = self.settings.get().log_append_time.then(now_ms);
        let end_before = self.log.next_offset();
        let info = self.log.append(batch, append_time, epoch);
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
            self.snapshot_at_roll(info.base_offset);
        }
        if let Some(b) = &producer {
            self.producers.borrow_mut().record(b, info.base_offset);
        }
        if let Some(id) = txn_producer {
            self.txns.borrow_mut().on_data(id, info.base_offset);
        }
        self.notify_end();
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
            if result.is_ok() {
                p.sync_if_due();
            }
            let _ = tx.send(result);
        })
        .detach();
        rx
    }

    /// Starts a background write of what is buffered, unless one is queued already.
    fn schedule_write(self: &Rc<Self>) {
        self.flush_in_background(false);
    }

    /// Starts a background sync when enough written bytes wait for one
    /// (`weir.log.flush.interval.bytes`), unless one is queued already: acks=0/1 data is
    /// then synced in steps of about that size instead of all at the periodic round,
    /// whose long sync held up the writes queued behind it.
    fn sync_if_due(self: &Rc<Self>) {
        if self.log.sync_due() {
            self.flush_in_background(true);
        }
    }

    /// A background write (`sync`: and sync), one of each kind queued at a time; when it is
    /// done, parked fetches are woken and, if it succeeded, a sync is started if one is due.
    fn flush_in_background(self: &Rc<Self>, sync: bool) {
        fn queued(p: &Partition, sync: bool) -> &Cell<bool> {
            if sync {
                &p.sync_scheduled
            } else {
                &p.write_scheduled
            }
        }
        if queued(self, sync).replace(true) {
            return;
        }
        let p = self.clone();
        glommio::spawn_local(async move {
            let flushed = p.log.flush(sync).await;
            queued(&p, sync).set(false);
            p.notify();
            match flushed {
                // After a failure only the periodic sync tries again, or a failed log
                // would start sync after sync here.
                Err(_) if p.log.is_write_blocked() => {} // said once by the log
                Err(e) => warn!(partition = %p.tp, error = %e, sync, "background flush failed"),
                Ok(()) => p.sync_if_due(),
            }
        })
        .detach();
    }

    /// Reads whole batches from `offset`, at most `limit` bytes, except that the first batch
    /// found is returned whole (KIP-74). `skip_when_empty_limit`: with a zero limit, read
    /// nothing (another partition of the response already returned data). Only what is
    /// below the high watermark goes out.
    /// read_committed reads stop at the last stable offset and name the aborted
    /// transactions among the records.
    pub async fn read(
        &self,
        offset: Offset,
        limit: usize,
        skip_when_empty_limit: bool,
        isolation: Isolation,
    ) -> Result<FetchRead, ResponseError> {
        let high_watermark = self.high_watermark();
        let last_stable_offset = self.last_stable_offset();
        let log_start_offset = self.log.log_start_offset();
        let in_range = offset >= log_start_offset && offset <= high_watermark;
        let end = match isolation {
            Isolation::ReadUncommitted => high_watermark,
            Isolation::ReadCommitted => last_stable_offset,
        };
        let records = if (limit == 0 && skip_when_empty_limit && in_range) || (in_range && offset >= end) {
            Bytes::new()
        } else {
            let read = self.log.read(offset, limit).await.map_err(|e| storage_error(&e))?;
            batch::below(read.records, end)
        };
        let aborted = match (isolation, batch::iter_batches(&records).last()) {
            (Isolation::ReadCommitted, Some((_, last))) => {
                self.txns.borrow().aborted_between(offset, last.last_offset() + 1)
            }
            _ => Vec::new(),
        };
        Ok(FetchRead { high_watermark, last_stable_offset, log_start_offset, records, aborted })
    }

    /// Hands `visit` every stored batch from the log start to the log end, whatever the high
    /// watermark, as whole batches about `REPLAY_READ_BYTES` at a time: for an internal
    /// topic's coordinator replaying its own partition.
    pub async fn replay_stored(&self, mut visit: impl FnMut(Bytes)) -> Result<(), LogError> {
        let mut offset = self.log.log_start_offset();
        let end = self.log.next_offset();
        while offset < end {
            let read = self.log.read(offset, REPLAY_READ_BYTES).await?.records;
            let Some(next) = batch::iter_batches(&read).map(|(_, h)| h.last_offset() + 1).last() else { break };
            visit(read);
            offset = next;
        }
        Ok(())
    }

    /// The offset (and its timestamp, or -1) that `spec` names; `None` when no record
    /// matches (a timestamp after every record's).
    /// With read_committed, the latest offset is the last stable offset.
    pub async fn list_offset(
        &self,
        spec: OffsetSpec,
        isolation: Isolation,
    ) -> Result<Option<(Offset, i64)>, ResponseError> {
        let found = match spec {
            OffsetSpec::Latest if isolation == Isolation::ReadCommitted => {
                return Ok(Some((self.last_stable_offset(), -1)))
            }
            OffsetSpec::Latest => return Ok(Some((self.high_watermark(), -1))),
            OffsetSpec::Earliest | OffsetSpec::EarliestLocal => return Ok(Some((self.log.log_start_offset(), -1))),
            OffsetSpec::LatestTiered => return Ok(None),
            OffsetSpec::MaxTimestamp => self.log.max_timestamp_offset().await,
            OffsetSpec::AtTime(ts) => self.log.offset_for_timestamp(ts).await,
        };
        // As Kafka: a record consumers cannot read yet (at or past the high watermark) is
        // not an answer.
        let hw = self.high_watermark();
        Ok(found.map_err(|e| storage_error(&e))?.filter(|(offset, _)| *offset < hw))
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

    /// After a write (or when the partition goes away): moves the high watermark and wakes
    /// every parked fetch and tells every listener.
    pub fn notify(&self) {
        self.update_high_watermark();
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in &waiters {
            fire(w);
        }
        self.listeners.borrow_mut().retain(|(listener, slot)| match listener.upgrade() {
            Some(l) => {
                l.changed(*slot);
                true
            }
            None => false,
        });
    }

    /// `listener` is told of every change from now on, as `slot`, until it is dropped.
    pub fn listen(&self, listener: Weak<dyn ChangeListener>, slot: u32) {
        let mut listeners = self.listeners.borrow_mut();
        listeners.retain(|(l, _)| l.strong_count() > 0);
        if !listeners.iter().any(|(l, s)| *s == slot && Weak::ptr_eq(l, &listener)) {
            listeners.push((listener, slot));
        }
    }

    /// Wakes the followers' fetches parked on the log end.
    fn notify_end(&self) {
        let waiters = std::mem::take(&mut *self.end_waiters.borrow_mut());
        for w in &waiters {
            fire(w);
        }
    }

    /// Parks a follower's fetch until the log end passes `offset`.
    pub fn watch_end(&self, offset: Offset, waiter: &Waiter) {
        if self.log.next_offset() > offset || !matches!(&*self.replication.borrow(), Replication::Leader(_)) {
            fire(waiter);
            return;
        }
        let mut waiters = self.end_waiters.borrow_mut();
        waiters.retain(|w| w.borrow().as_ref().is_some_and(|s| !s.is_canceled()));
        waiters.push(waiter.clone());
    }

    /// A follower's fetch (on the leader): checks the follower's log against this one's
    /// epochs, records its progress (which may move the high watermark), and reads from
    /// `offset` up to the log end.
    /// `log_start_offset` is the follower's (for the low watermark: DeleteRecords).
    pub async fn replica_read(
        &self,
        replica: i32,
        offset: Offset,
        last_fetched_epoch: i32,
        log_start_offset: Offset,
        max_bytes: usize,
    ) -> Result<ReplicaRead, ResponseError> {
        let log_end = self.log.next_offset();
        {
            let replication = self.replication.borrow();
            let Replication::Leader(s) = &*replication else { return Err(ResponseError::NotLeaderOrFollower) };
            if !s.is_replica(replica) {
                return Err(ResponseError::NotLeaderOrFollower);
            }
        }
        if last_fetched_epoch >= 0 {
            let (epoch, end) = self.log.epochs().end_offset_for(last_fetched_epoch, log_end);
            // Undefined (-1, -1) cannot be said on the wire (the diverging epoch is a tagged
            // field whose default is "none"): as in Kafka, the fetch then goes on.
            if epoch >= 0 && (epoch < last_fetched_epoch || end < offset) {
                return Ok(ReplicaRead {
                    high_watermark: self.high_watermark(),
                    log_start_offset: self.log.log_start_offset(),
                    records: Bytes::new(),
                    diverging: Some((epoch, end)),
                });
            }
        }
        if offset > log_end || offset < self.log.log_start_offset() {
            return Err(ResponseError::OffsetOutOfRange);
        }
        let hw_before = self.high_watermark();
        if let Replication::Leader(s) = &mut *self.replication.borrow_mut() {
            s.on_fetch(replica, offset, log_end, now_ms());
            s.on_follower_log_start(replica, log_start_offset);
        }
        self.update_high_watermark();
        if self.high_watermark() > hw_before {
            self.notify();
        }
        let records = self.log.read(offset, max_bytes).await.map_err(|e| storage_error(&e))?.records;
        Ok(ReplicaRead {
            high_watermark: self.high_watermark(),
            log_start_offset: self.log.log_start_offset(),
            records,
            diverging: None,
        })
    }

    /// Kafka's `endOffsetForEpoch` on the leader (OffsetForLeaderEpoch): the largest epoch at
    /// or below `epoch` this log knows and the offset where it ended; (-1, -1) when `epoch`
    /// is older than every epoch here.
    pub fn epoch_end(&self, epoch: i32) -> Result<(i32, Offset), ResponseError> {
        if !matches!(&*self.replication.borrow(), Replication::Leader(_)) {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        Ok(self.log.epochs().end_offset_for(epoch, self.log.next_offset()))
    }

    /// A follower step is for the leadership this replica follows now: an answer from a
    /// leader of an older epoch (a fetch in flight across a leader change) is dropped.
    fn check_following(&self, leader_epoch: i32) -> Result<(), ResponseError> {
        match &*self.replication.borrow() {
            Replication::Follower { epoch, .. } if *epoch == leader_epoch => Ok(()),
            Replication::Follower { .. } => Err(ResponseError::FencedLeaderEpoch),
            Replication::Leader(_) => Err(ResponseError::NotLeaderOrFollower),
        }
    }

    /// Where this follower's log stands (its fetch offset and newest epoch).
    pub fn follower_position(&self) -> FollowerPosition {
        FollowerPosition {
            log_end: self.log.next_offset(),
            last_epoch: self.log.epochs().latest_epoch(),
            log_start: self.log.log_start_offset(),
        }
    }

    /// A follower appends what its leader sent, as stored (offsets and epochs kept), syncs
    /// it (one sync per fetch: the followers' group commit), and takes the leader's high
    /// watermark as far as its own log reaches. Idempotent-producer state is rebuilt from
    /// the batches, so it moves with leadership.
    pub async fn replica_append(
        &self,
        leader_epoch: i32,
        records: &Bytes,
        leader_hw: Offset,
        leader_log_start: Offset,
    ) -> Result<FollowerPosition, ResponseError> {
        self.check_following(leader_epoch)?;
        if !records.is_empty() {
            let before = self.log.next_offset();
            self.log.append_stored(records).await.map_err(|e| {
                if !self.log.is_write_blocked() {
                    warn!(partition = %self.tp, error = %e, "replica append failed");
                }
                storage_error(&e)
            })?;
            let hw = self.high_watermark.get();
            for (_, h) in batch::iter_batches(records).filter(|(_, h)| h.base_offset() >= before) {
                replay_batch(&mut self.producers.borrow_mut(), &mut self.txns.borrow_mut(), &h, hw);
            }
            let end = self.log.next_offset();
            if end > before {
                self.log.sync_to(end - 1).await.map_err(|e| storage_error(&e))?;
            }
        }
        let hw = leader_hw.min(self.log.next_offset());
        if hw > self.high_watermark.get() {
            self.high_watermark.set(hw);
        }
        // Records the leader deleted (DeleteRecords) go here too, as far as this log reaches.
        if leader_log_start > self.log.log_start_offset() {
            let delay = self.settings.get().retention.map_or(0, |r| r.file_delete_delay_ms);
            self.log.advance_start(leader_log_start, delay).await.map_err(|e| storage_error(&e))?;
        }
        self.notify();
        Ok(self.follower_position())
    }

    /// A follower's log diverged from the leader's at `epoch`, which the leader ends at
    /// `end_offset`: truncates to where both agree (KIP-101/595) and rebuilds what depends
    /// on the log (producer state, the high watermark).
    pub async fn replica_truncate(
        &self,
        leader_epoch: i32,
        epoch: i32,
        end_offset: Offset,
    ) -> Result<FollowerPosition, ResponseError> {
        self.check_following(leader_epoch)?;
        let log_end = self.log.next_offset();
        // Where both logs agree: the leader ends `epoch` at `end_offset`; this log ends its
        // largest epoch at or below it at `local_end` (KIP-595's truncation rule).
        let (local_epoch, local_end) = self.log.epochs().end_offset_for(epoch, log_end);
        let target = if local_epoch < 0 { end_offset.min(log_end) } else { end_offset.min(local_end) };
        let target = target.max(self.log.log_start_offset()).min(log_end);
        if target < log_end {
            warn!(partition = %self.tp, epoch, leader_end = end_offset, log_end, to = target, "log diverged from the leader's; truncating");
        }
        // Also when nothing is cut: epochs this log began past the cut must go, or the next
        // fetch would claim an epoch the leader never had.
        self.log.truncate_to(target).await.map_err(|e| storage_error(&e))?;
        if target < log_end {
            self.recover_producers().await.map_err(|e| storage_error(&e))?;
            self.high_watermark.set(self.high_watermark.get().min(self.log.next_offset()));
        }
        Ok(self.follower_position())
    }

    /// The leader's log starts past this follower's log end (retention removed what it
    /// lacks): its log starts over, empty, at `leader_log_start`.
    pub async fn replica_restart_at(
        &self,
        leader_epoch: i32,
        leader_log_start: Offset,
    ) -> Result<FollowerPosition, ResponseError> {
        self.check_following(leader_epoch)?;
        if leader_log_start > self.log.next_offset() {
            warn!(partition = %self.tp, log_end = self.log.next_offset(), leader_log_start, "the leader no longer has what this follower lacks; starting over at its log start");
            self.log.restart_at(leader_log_start).await.map_err(|e| storage_error(&e))?;
            self.recover_producers().await.map_err(|e| storage_error(&e))?;
            self.high_watermark.set(leader_log_start);
        }
        Ok(self.follower_position())
    }

    /// DeleteRecords on the leader: the log start moves to `offset` (-1: the high watermark),
    /// which may not pass the high watermark (OFFSET_OUT_OF_RANGE); a compacted-only topic
    /// refuses (POLICY_VIOLATION). Returns the low watermark once every in-sync replica's
    /// log starts there too, or REQUEST_TIMED_OUT after `timeout`.
    pub async fn delete_records(&self, offset: Offset, timeout: Duration) -> Result<Offset, ResponseError> {
        if !self.takes_writes() {
            return Err(ResponseError::NotLeaderOrFollower);
        }
        let Some(retention) = self.settings.get().retention else { return Err(ResponseError::PolicyViolation) };
        let hw = self.high_watermark();
        let offset = if offset == -1 { hw } else { offset };
        if offset < 0 || offset > hw {
            return Err(ResponseError::OffsetOutOfRange);
        }
        self.log.advance_start(offset, retention.file_delete_delay_ms).await.map_err(|e| storage_error(&e))?;
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let low = self.low_watermark().ok_or(ResponseError::NotLeaderOrFollower)?;
            if low >= offset {
                return Ok(low);
            }
            if std::time::Instant::now() >= deadline {
                return Err(ResponseError::RequestTimedOut);
            }
            glommio::timer::sleep(LOW_WATERMARK_POLL).await;
        }
    }

    /// The smallest log start offset among the in-sync replicas (the leader's included), as
    /// the followers last reported them; `None` when this broker does not lead.
    pub fn low_watermark(&self) -> Option<Offset> {
        match &*self.replication.borrow() {
            Replication::Leader(s) => Some(s.low_watermark(self.log.log_start_offset())),
            Replication::Follower { .. } => None,
        }
    }

    /// Whether data is appended but not yet synced.
    pub fn needs_sync(&self) -> bool {
        self.log.synced_offset() < self.log.next_offset()
    }

    /// Whether the last write found the filesystem full or no descriptor (see `Log::is_write_blocked`).
    pub fn is_write_blocked(&self) -> bool {
        self.log.is_write_blocked()
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
        if self.settings.get().compact && self.log.compaction_due(now_ms()) {
            let stats = self
                .log
                .compact(now_ms(), self.settings.get().delete_retention_ms, self.settings.get().min_compaction_lag_ms)
                .await?;
            self.forget_spent_aborts(&stats.spent_aborts).await;
        }
        Ok(())
    }

    /// Drops aborted transactions with no record left from their segments' indexes, then
    /// from memory, before the cleaner may remove their markers: a read_committed consumer
    /// told of an aborted transaction skips the producer's batches until it meets the marker.
    async fn forget_spent_aborts(&self, markers: &[Offset]) {
        let bases: std::collections::BTreeSet<Offset> = markers.iter().map(|m| self.log.segment_base_of(*m)).collect();
        for base in bases {
            let end = self.log.next_segment_base(base).unwrap_or(Offset::MAX);
            let indexed = self.txns.borrow().aborted_in_segment(base, end);
            let (spent, kept): (Vec<AbortedTxn>, Vec<AbortedTxn>) =
                indexed.into_iter().partition(|t| markers.contains(&t.last_offset));
            if spent.is_empty() {
                continue;
            }
            let dir = self.log.dir().to_path_buf();
            match glommio::executor().spawn_blocking(move || transactions::write_index(&dir, base, &kept)).await {
                Ok(()) => {
                    let spent: Vec<Offset> = spent.iter().map(|t| t.last_offset).collect();
                    self.txns.borrow_mut().forget_aborted(&spent);
                }
                Err(e) => {
                    warn!(partition = %self.tp, segment = base, error = %e, "aborted-transaction index not rewritten; the next compaction tries again")
                }
            }
        }
    }

    /// Removes the segments the topic's retention no longer keeps (below the high
    /// watermark only).
    pub async fn apply_retention(&self) -> Result<Removed, LogError> {
        let removed = match &self.settings.get().retention {
            Some(r) => self.log.apply_retention(r, now_ms(), self.high_watermark()).await,
            None => Ok(Removed::default()),
        };
        self.txns.borrow_mut().forget_below(self.log.log_start_offset());
        removed
    }

    /// The active idempotent producers, by producer id.
    pub fn producers(&self) -> Vec<ProducerSummary> {
        let table = self.producers.borrow();
        let txns = self.txns.borrow();
        let mut out: Vec<ProducerSummary> = table
            .producers
            .iter()
            .map(|(id, e)| ProducerSummary {
                producer_id: *id,
                epoch: e.epoch,
                last_sequence: e.last_seq().unwrap_or(-1),
                last_timestamp: e.last_timestamp,
                current_txn_start_offset: txns.open_since(*id).unwrap_or(-1),
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Forgets producers idle longer than `expiration_ms`; returns how many.
    pub fn expire_producers(&self, now: i64, expiration_ms: i64) -> usize {
        let txns = self.txns.borrow();
        self.producers.borrow_mut().expire(now, expiration_ms, |id| txns.open_since(id).is_some())
    }

    /// Closes the log cleanly (producer snapshot, sync, final index files).
    pub async fn close(&self) -> Result<(), LogError> {
        let end = self.log.next_offset();
        // Unchanged since the last snapshot: a stop costs what was written, not a write per
        // partition.
        let no_producers = self.producers.borrow().producers.is_empty();
        if !no_producers && self.snapshot_at.get() != Some(end) {
            let state = self.producer_state_below(self.log.segment_base_of(end), end);
            self.persist_producer_state(state).await;
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

    /// Rebuilds producer state: the newest snapshot (with the transactions open then) and
    /// the aborted-transaction indexes below it, then the batches after it.
    async fn recover_producers(&self) -> Result<(), LogError> {
        let dir = self.log.dir().to_path_buf();
        let end = self.log.next_offset();
        let ((mut table, open, from), aborted) = glommio::executor()
            .spawn_blocking(move || (snapshot::load_latest(&dir, end), transactions::read_indexes(&dir)))
            .await;
        let mut txns = PartitionTxns::default();
        txns.load_open(open);
        txns.load_aborted(aborted, from);
        let hw = self.high_watermark.get();
        self.log.for_each_batch(from, |h| replay_batch(&mut table, &mut txns, h, hw)).await?;
        txns.forget_below(self.log.log_start_offset());
        *self.producers.borrow_mut() = table;
        *self.txns.borrow_mut() = txns;
        if from == end {
            self.snapshot_at.set(Some(end));
        }
        Ok(())
    }
}

/// Fires `waiter` if nobody has yet.
pub fn fire(waiter: &Waiter) {
    if let Some(sender) = waiter.borrow_mut().take() {
        let _ = sender.send(());
    }
}

/// Takes one stored batch into the producer and transaction state (replay at start, a
/// follower's append): data batches as the producer's, transactional ones opening its
/// transaction, markers completing it.
fn replay_batch(table: &mut ProducerStateTable, txns: &mut PartitionTxns, h: &BatchHeader<'_>, hw: Offset) {
    if let Some(b) = producer_batch(h) {
        table.record(&b, h.base_offset());
    }
    if h.is_transactional() && !h.is_control() && h.producer_id() >= 0 {
        txns.on_data(h.producer_id(), h.base_offset());
    } else if let Some((kind, coordinator_epoch)) = h.marker() {
        table.record_marker(h.producer_id(), h.producer_epoch(), coordinator_epoch, h.max_timestamp());
        txns.on_marker(h.producer_id(), h.base_offset(), kind, hw);
    }
}

/// The producer fields of an idempotent data batch; `None` for other batches, and for a
/// coordinator's transactional batch without sequence (offsets committed in a transaction).
pub fn producer_batch(h: &BatchHeader<'_>) -> Option<ProducerBatch> {
    (h.producer_id() >= 0 && h.base_sequence() >= 0 && !h.is_control()).then(|| ProducerBatch {
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

#[cfg(test)]
mod tests {
    use super::replica::Leadership;
    use super::*;
    use crate::protocol::batch::tests::make_batch;
    use crate::test_support::run_on_executor;
    use kafka_protocol::records::Compression;

    fn settings() -> PartitionSettings {
        PartitionSettings {
            log_append_time: false,
            compact: false,
            delete_retention_ms: 0,
            min_compaction_lag_ms: 0,
            min_insync_replicas: 1,
            unclean_leader_election: false,
            retention: None,
        }
    }

    /// Produces `bytes` of acks=1 batches to a lone leader whose log syncs in steps of
    /// `flush_interval_bytes`, then gives background work a moment; returns the synced offset
    /// and the log end. The periodic sync never runs here.
    fn synced_after_acks_1(flush_interval_bytes: u64, bytes: usize) -> (Offset, Offset) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t-0");
        let (tx, rx) = std::sync::mpsc::channel();
        run_on_executor(move || async move {
            let log_config = LogConfig {
                segment_bytes: 1 << 30,
                segment_ms: i64::MAX / 2,
                index_interval_bytes: 4096,
                tail_cache_bytes: 1 << 20,
                write_chunk_bytes: 256 * 1024,
                max_compaction_lag_ms: None,
                preallocate_min_bytes: 1 << 20,
                flush_interval_bytes,
            };
            let tp = TopicPartition::new("t".to_string(), 0);
            let p =
                Partition::open(tp, uuid::Uuid::new_v4(), &path, log_config, settings(), false).await.expect("open");
            let leadership = Leadership { node: 0, epoch: 1, partition_epoch: 1, replicas: vec![0], isr: vec![0] };
            p.set_role(Role::Leader(leadership)).await.expect("lead");
            let mut produced = 0;
            while produced < bytes {
                let batch = make_batch(10, 1000, Compression::None);
                produced += batch.len();
                p.produce(&batch, Acks::Leader, Duration::from_secs(5)).expect("append").await.expect("written");
            }
            glommio::timer::sleep(Duration::from_millis(200)).await;
            tx.send((p.log.synced_offset(), p.log.next_offset())).expect("send");
        });
        rx.recv().expect("result")
    }

    /// acks=1 data is synced in the background once `weir.log.flush.interval.bytes` of it
    /// are written, without waiting for the periodic sync; below that nothing is synced.
    #[test]
    fn acks_1_writes_are_synced_in_steps_of_flush_interval_bytes() {
        let (synced, end) = synced_after_acks_1(64 * 1024, 512 * 1024);
        assert!(synced > 0 && synced <= end, "synced {synced} of {end}");
        assert!(synced >= end / 2, "about every 64 KiB synced: {synced} of {end}");
        let (synced, end) = synced_after_acks_1(u64::MAX, 512 * 1024);
        assert!(end > 0);
        assert_eq!(synced, 0, "without the byte bound only the periodic sync (not run here) syncs");
    }
}
