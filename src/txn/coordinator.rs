//! The transaction coordinator of one data shard: it runs every transactional id whose
//! `__transaction_state` partition this shard leads (Kafka's placement: the id's hash modulo
//! the partition count), beside the group coordinator and like it. Requests from any shard
//! arrive as [`TxnCall`]s routed by `shard::route`; the state-machine step (`state`) runs at
//! once, and only waiting (for a record to be synced, for markers) happens in spawned tasks.
//!
//! Durability: every transition is a record in `__transaction_state` (Kafka's layout,
//! `records`), appended through the [`InternalTopicAppender`] with acks=all semantics and
//! taken only once durable, so the coordinator that loads the partition after a crash or a
//! leader change finds every decision that was answered. A transaction decided (PrepareCommit
//! or PrepareAbort) has its markers written to every partition in it — by the shard that
//! leads each, through a [`MarkerWriter`] the shard provides — and then completes; one found
//! prepared at load is carried on in the direction it was decided.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures::channel::oneshot;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use super::records;
use super::state::{InitStep, TxnLimits, TxnMetadata, TxnState, TxnStep, TxnValue};
use super::TRANSACTION_STATE_TOPIC;
use crate::cluster::{ImageCell, MetadataImage};
use crate::config::Config;
use crate::partition::internal_topic::InternalTopicAppender;
use crate::partition::{Partition, PartitionTable};
use crate::types::{now_ms, ShardId, TopicPartition};

/// How long a transition may wait for its record to be synced.
const STORE_TIMEOUT: Duration = Duration::from_millis(5000);
/// Pause between rounds of markers for partitions that could not take them yet.
const MARKER_RETRY: Duration = Duration::from_millis(200);

/// Markers for one transaction: every partition gets a control batch of the producer.
#[derive(Debug, Clone)]
pub struct MarkerRequest {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub coordinator_epoch: i32,
    pub commit: bool,
    pub partitions: Vec<TopicPartition>,
}

pub type MarkerResults = Vec<(TopicPartition, Option<ResponseError>)>;

/// Writes markers to the partitions' leaders: this shard's partitions directly, other
/// shards' through the mesh, other brokers' with WriteTxnMarkers. Provided by the shard.
pub trait MarkerWriter {
    fn write_markers(&self, request: MarkerRequest) -> Pin<Box<dyn Future<Output = MarkerResults>>>;
}

/// A transactional id as DescribeTransactions and ListTransactions show it.
#[derive(Debug, Clone)]
pub struct TxnSummary {
    pub transactional_id: String,
    pub state: TxnState,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// One transaction request for the coordinator shard, with its typed reply. A reply dropped
/// unanswered means the coordinator could not take the request (it is stopping).
pub enum TxnCall {
    InitProducerId {
        transactional_id: String,
        timeout_ms: i32,
        /// The producer id and epoch the client has (KIP-360), if it said.
        expected: Option<(i64, i16)>,
        /// A producer id for the coordinator to use if it needs a new one.
        fresh_producer_id: i64,
        reply: oneshot::Sender<Result<(i64, i16), ResponseError>>,
    },
    /// AddPartitionsToTxn and AddOffsetsToTxn (with the group's offsets partition).
    AddPartitions {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        reply: oneshot::Sender<Result<(), ResponseError>>,
    },
    /// Whether the partitions are in the producer's open transaction (KIP-890, before a
    /// leader takes transactional data): one answer per partition.
    Verify {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        partitions: Vec<(String, i32)>,
        reply: oneshot::Sender<Vec<Option<ResponseError>>>,
    },
    End {
        transactional_id: String,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        reply: oneshot::Sender<Result<(), ResponseError>>,
    },
    Describe {
        transactional_id: String,
        reply: oneshot::Sender<Result<Option<TxnSummary>, ResponseError>>,
    },
    /// Every transactional id this shard coordinates (sent to every data shard).
    List {
        reply: oneshot::Sender<Vec<TxnSummary>>,
    },
}

impl TxnCall {
    /// The transactional id the call is for; `None` for a listing.
    pub fn transactional_id(&self) -> Option<&str> {
        match self {
            TxnCall::InitProducerId { transactional_id, .. }
            | TxnCall::AddPartitions { transactional_id, .. }
            | TxnCall::Verify { transactional_id, .. }
            | TxnCall::End { transactional_id, .. }
            | TxnCall::Describe { transactional_id, .. } => Some(transactional_id),
            TxnCall::List { .. } => None,
        }
    }

    /// Answers with a coordinator-level error (not the coordinator, still loading).
    pub fn fail(self, error: ResponseError) {
        match self {
            TxnCall::InitProducerId { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            TxnCall::AddPartitions { reply, .. } | TxnCall::End { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            TxnCall::Verify { partitions, reply, .. } => {
                let _ = reply.send(vec![Some(error); partitions.len()]);
            }
            TxnCall::Describe { reply, .. } => {
                let _ = reply.send(Err(error));
            }
            TxnCall::List { reply } => {
                let _ = reply.send(Vec::new());
            }
        }
    }
}

/// The `__transaction_state` partition that holds `transactional_id`, if the topic exists.
pub fn txn_partition(image: &MetadataImage, transactional_id: &str) -> Option<TopicPartition> {
    let meta = image.topic(TRANSACTION_STATE_TOPIC)?;
    Some(TopicPartition::new(
        TRANSACTION_STATE_TOPIC,
        crate::group::records::partition_for(transactional_id, meta.partitions),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Load {
    Loading,
    Ready,
}

/// The transactional ids of the `__transaction_state` partitions one shard leads.
pub struct TxnCoordinator {
    shard: ShardId,
    config: Arc<Config>,
    image: Rc<ImageCell>,
    partitions: Rc<PartitionTable>,
    appender: InternalTopicAppender,
    txns: RefCell<HashMap<String, TxnMetadata>>,
    loads: RefCell<HashMap<i32, Load>>,
    /// Ids whose markers a task is writing now.
    completing: RefCell<HashSet<String>>,
}

impl TxnCoordinator {
    pub fn new(shard: ShardId, config: Arc<Config>, image: Rc<ImageCell>, partitions: Rc<PartitionTable>) -> Self {
        Self {
            shard,
            config,
            image,
            appender: InternalTopicAppender::new(partitions.clone(), STORE_TIMEOUT),
            partitions,
            txns: RefCell::new(HashMap::new()),
            loads: RefCell::new(HashMap::new()),
            completing: RefCell::new(HashSet::new()),
        }
    }

    fn limits(&self) -> TxnLimits {
        TxnLimits { max_timeout_ms: self.config.txn_max_timeout_ms, max_partitions: self.config.txn_partitions_max }
    }

    /// Runs one call on this (the coordinator) shard.
    pub fn serve(self: &Rc<Self>, call: TxnCall, markers: Rc<dyn MarkerWriter>) {
        if let Some(id) = call.transactional_id() {
            if let Err(e) = self.coordinator_status(id) {
                return call.fail(e);
            }
        }
        let now = now_ms();
        match call {
            TxnCall::InitProducerId { transactional_id, timeout_ms, expected, fresh_producer_id, reply } => {
                self.init_producer_id(transactional_id, timeout_ms, expected, fresh_producer_id, reply, markers, now)
            }
            TxnCall::AddPartitions { transactional_id, producer_id, epoch, partitions, reply } => {
                let limits = self.limits();
                let step = match self.txns.borrow().get(&transactional_id) {
                    None => Err(ResponseError::InvalidProducerIdMapping),
                    Some(m) => m.add_partitions(producer_id, epoch, &partitions, &limits, now),
                };
                self.answer_step(transactional_id, step, reply);
            }
            TxnCall::Verify { transactional_id, producer_id, epoch, partitions, reply } => {
                let txns = self.txns.borrow();
                let answers = partitions
                    .iter()
                    .map(|tp| match txns.get(&transactional_id) {
                        None => Some(ResponseError::InvalidProducerIdMapping),
                        Some(m) => m.verify(producer_id, epoch, tp).err(),
                    })
                    .collect();
                let _ = reply.send(answers);
            }
            TxnCall::End { transactional_id, producer_id, epoch, commit, reply } => {
                let step = match self.txns.borrow().get(&transactional_id) {
                    None => Err(ResponseError::InvalidProducerIdMapping),
                    Some(m) => m.end(producer_id, epoch, commit, now),
                };
                let decided = matches!(step, Ok(TxnStep::Write(_)));
                let (tx, rx) = oneshot::channel();
                self.answer_step(transactional_id.clone(), step, tx);
                let coordinator = self.clone();
                glommio::spawn_local(async move {
                    let answer = rx.await.unwrap_or(Err(ResponseError::CoordinatorNotAvailable));
                    if answer.is_ok() && decided {
                        info!(transactional_id = %transactional_id, producer_id, commit, "transaction decided");
                        coordinator.complete_later(transactional_id, markers);
                    }
                    let _ = reply.send(answer);
                })
                .detach();
            }
            TxnCall::Describe { transactional_id, reply } => {
                let _ = reply.send(Ok(self.txns.borrow().get(&transactional_id).map(summarize)));
            }
            TxnCall::List { reply } => {
                let ready = self.loads.borrow().clone();
                let image = self.image.get();
                let list = self
                    .txns
                    .borrow()
                    .values()
                    .filter(|m| m.value.state != TxnState::Dead)
                    .filter(|m| {
                        txn_partition(&image, &m.transactional_id)
                            .is_some_and(|tp| ready.get(&tp.partition) == Some(&Load::Ready))
                    })
                    .map(summarize)
                    .collect();
                let _ = reply.send(list);
            }
        }
    }

    /// Whether this shard coordinates `transactional_id` now.
    fn coordinator_status(&self, transactional_id: &str) -> Result<(), ResponseError> {
        let image = self.image.get();
        let Some(tp) = txn_partition(&image, transactional_id) else {
            return Err(ResponseError::CoordinatorNotAvailable);
        };
        if image.owner(&tp) != self.shard || image.leader(&tp) != Some(self.config.node_id) {
            return Err(ResponseError::NotCoordinator);
        }
        match self.loads.borrow().get(&tp.partition) {
            Some(Load::Ready) => Ok(()),
            Some(Load::Loading) => Err(ResponseError::CoordinatorLoadInProgress),
            None => Err(ResponseError::CoordinatorNotAvailable),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn init_producer_id(
        self: &Rc<Self>,
        transactional_id: String,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: i64,
        reply: oneshot::Sender<Result<(i64, i16), ResponseError>>,
        markers: Rc<dyn MarkerWriter>,
        now: i64,
    ) {
        let limits = self.limits();
        let step = {
            let txns = self.txns.borrow();
            let existing = txns.get(&transactional_id);
            if existing.is_none() && txns.len() >= self.config.txn_ids_max {
                warn!(transactional_id = %transactional_id, max = self.config.txn_ids_max, "a new transactional id refused: weir.transactional.ids.max reached");
                let _ = reply.send(Err(ResponseError::CoordinatorNotAvailable));
                return;
            }
            TxnMetadata::init_producer_id(existing, timeout_ms, expected, fresh_producer_id, &limits, now)
        };
        match step {
            InitStep::Reply(answer) => {
                let _ = reply.send(answer);
            }
            InitStep::Write(value) => {
                let answer = (value.producer_id, value.producer_epoch);
                let stored = self.write(&transactional_id, value);
                glommio::spawn_local(async move {
                    let result = stored.await.map(|()| answer);
                    if let Ok((producer_id, epoch)) = result {
                        debug!(transactional_id = %transactional_id, producer_id, epoch, "producer id handed out");
                    }
                    let _ = reply.send(result);
                })
                .detach();
            }
            InitStep::FenceAndAbort(value) => {
                info!(transactional_id = %transactional_id, producer_id = value.producer_id, epoch = value.producer_epoch,
                    "a new instance of the producer: its predecessor's open transaction is aborted and it is fenced");
                let stored = self.write(&transactional_id, value);
                let coordinator = self.clone();
                glommio::spawn_local(async move {
                    if stored.await.is_ok() {
                        coordinator.complete_later(transactional_id, markers);
                    }
                })
                .detach();
                // The client retries, and gets the next epoch once the abort completed.
                let _ = reply.send(Err(ResponseError::ConcurrentTransactions));
            }
        }
    }

    /// Answers a step: at once when nothing is written, once durable otherwise.
    fn answer_step(
        self: &Rc<Self>,
        transactional_id: String,
        step: Result<TxnStep, ResponseError>,
        reply: oneshot::Sender<Result<(), ResponseError>>,
    ) {
        match step {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(TxnStep::Done) => {
                let _ = reply.send(Ok(()));
            }
            Ok(TxnStep::Write(value)) => {
                let stored = self.write(&transactional_id, value);
                glommio::spawn_local(async move {
                    let _ = reply.send(stored.await);
                })
                .detach();
            }
        }
    }

    /// Begins writing `value` for `transactional_id` now (so writes keep the order of the
    /// steps); resolves once it is durable and has become the id's state.
    fn write(
        self: &Rc<Self>,
        transactional_id: &str,
        value: TxnValue,
    ) -> impl Future<Output = Result<(), ResponseError>> {
        let record = (records::encode_key(transactional_id), Some(records::encode_value(&value)));
        {
            let mut txns = self.txns.borrow_mut();
            match txns.get_mut(transactional_id) {
                Some(m) => m.begin_write(value),
                None => {
                    txns.insert(
                        transactional_id.to_string(),
                        TxnMetadata::new_pending(transactional_id.to_string(), value),
                    );
                }
            }
        }
        let appended = self.append(transactional_id, &[record]);
        let coordinator = self.clone();
        let id = transactional_id.to_string();
        async move {
            let result = appended.await;
            let mut txns = coordinator.txns.borrow_mut();
            match &result {
                Ok(()) => {
                    if let Some(m) = txns.get_mut(&id) {
                        m.complete();
                    }
                }
                Err(e) => {
                    warn!(transactional_id = %id, error = ?e, "transaction state not stored");
                    let forget = match txns.get_mut(&id) {
                        Some(m) => {
                            m.abandon_write();
                            m.value.state == TxnState::Dead
                        }
                        None => false,
                    };
                    if forget {
                        txns.remove(&id);
                    }
                }
            }
            result
        }
    }

    /// Appends records to the id's `__transaction_state` partition now; resolves once synced.
    fn append(
        &self,
        transactional_id: &str,
        recs: &[(bytes::Bytes, Option<bytes::Bytes>)],
    ) -> impl Future<Output = Result<(), ResponseError>> + 'static {
        let tp = txn_partition(&self.image.get(), transactional_id);
        let encoded = crate::group::records::encode_batch(recs, now_ms());
        let appended = match (tp, encoded) {
            (Some(tp), Ok(batch)) => Some(self.appender.append(&tp, batch)),
            (_, Err(e)) => {
                warn!(transactional_id = %transactional_id, error = %e, "cannot encode transaction state");
                None
            }
            (None, _) => None,
        };
        async move {
            let Some(appended) = appended else { return Err(ResponseError::CoordinatorNotAvailable) };
            appended.await.map(|_| ()).map_err(|e| match e {
                ResponseError::NotLeaderOrFollower => ResponseError::NotCoordinator,
                _ => ResponseError::CoordinatorNotAvailable,
            })
        }
    }

    /// Writes the markers of a decided transaction and then completes it, in a task of its
    /// own; markers a partition cannot take yet are sent again until it can, while this
    /// shard still coordinates the id.
    fn complete_later(self: &Rc<Self>, transactional_id: String, markers: Rc<dyn MarkerWriter>) {
        if !self.completing.borrow_mut().insert(transactional_id.clone()) {
            return;
        }
        let coordinator = self.clone();
        glommio::spawn_local(async move {
            coordinator.complete(&transactional_id, markers).await;
            coordinator.completing.borrow_mut().remove(&transactional_id);
        })
        .detach();
    }

    async fn complete(self: &Rc<Self>, transactional_id: &str, markers: Rc<dyn MarkerWriter>) {
        let Some(value) = self.txns.borrow().get(transactional_id).map(|m| m.value.clone()) else { return };
        if !value.state.is_prepared() {
            return;
        }
        let commit = value.state == TxnState::PrepareCommit;
        let mut left: Vec<TopicPartition> =
            value.partitions.iter().map(|(t, p)| TopicPartition::new(t.clone(), *p)).collect();
        let mut rounds = 0u32;
        while !left.is_empty() {
            if self.coordinator_status(transactional_id).is_err() {
                debug!(transactional_id = %transactional_id, "no longer the coordinator; markers left to the next one");
                return;
            }
            let request = MarkerRequest {
                producer_id: value.producer_id,
                producer_epoch: value.producer_epoch,
                coordinator_epoch: self.coordinator_epoch(transactional_id),
                commit,
                partitions: left.clone(),
            };
            debug!(transactional_id = %transactional_id, partitions = left.len(), commit, "writing transaction markers");
            let results = markers.write_markers(request).await;
            debug!(transactional_id = %transactional_id, ?results, "transaction markers answered");
            left = results
                .into_iter()
                .filter_map(|(tp, error)| match error {
                    None => None,
                    // The partition is gone (its topic deleted): nothing left to mark.
                    Some(ResponseError::UnknownTopicOrPartition) if self.image.get().topic(&tp.topic).is_none() => None,
                    Some(e) => {
                        if rounds.is_multiple_of(25) {
                            warn!(transactional_id = %transactional_id, partition = %tp, error = ?e, "transaction marker not written yet; retrying");
                        }
                        Some(tp)
                    }
                })
                .collect();
            if !left.is_empty() {
                rounds += 1;
                glommio::timer::sleep(MARKER_RETRY).await;
            }
        }
        let done = self.txns.borrow().get(transactional_id).and_then(|m| m.completed(now_ms()));
        let Some(done) = done else { return };
        let state = done.state;
        match self.write(transactional_id, done).await {
            Ok(()) => info!(transactional_id = %transactional_id, state = state.name(), "transaction completed"),
            // Still prepared: the timer tick tries again.
            Err(e) => {
                warn!(transactional_id = %transactional_id, error = ?e, "transaction completion not stored; retried")
            }
        }
    }

    /// The epoch of this coordinator for the id: its partition's leader epoch.
    fn coordinator_epoch(&self, transactional_id: &str) -> i32 {
        txn_partition(&self.image.get(), transactional_id)
            .and_then(|tp| self.partitions.get(&tp))
            .and_then(|p| p.leader_epoch())
            .unwrap_or(-1)
    }

    /// Rebuilds the transactional ids of a `__transaction_state` partition this shard now
    /// leads, and carries on the transactions it finds decided.
    pub async fn load(self: &Rc<Self>, partition: Rc<Partition>, markers: Rc<dyn MarkerWriter>) {
        let p = partition.tp().partition;
        self.loads.borrow_mut().insert(p, Load::Loading);
        let started = std::time::Instant::now();
        let mut latest: HashMap<String, Option<TxnValue>> = HashMap::new();
        let mut skipped = 0usize;
        let replayed = partition
            .replay_stored(|read| {
                let (recs, bad) = records::decode_batches(read);
                skipped += bad;
                latest.extend(recs);
            })
            .await;
        if let Err(e) = replayed {
            warn!(partition = %partition.tp(), error = %e, "cannot read while loading transactions");
        }
        let loaded: Vec<TxnMetadata> = latest
            .into_iter()
            .filter_map(|(id, v)| Some(TxnMetadata { transactional_id: id, value: v?, last_epoch: -1, pending: None }))
            .collect();
        let prepared: Vec<String> =
            loaded.iter().filter(|m| m.value.state.is_prepared()).map(|m| m.transactional_id.clone()).collect();
        let count = loaded.len();
        {
            let mut txns = self.txns.borrow_mut();
            for m in loaded {
                txns.insert(m.transactional_id.clone(), m);
            }
        }
        self.loads.borrow_mut().insert(p, Load::Ready);
        if skipped > 0 {
            warn!(partition = %partition.tp(), skipped, "some transaction state records could not be decoded");
        }
        let elapsed_ms = started.elapsed().as_millis() as u64;
        if count > 0 {
            info!(partition = %partition.tp(), transactional_ids = count, decided = prepared.len(), elapsed_ms, "transactions loaded");
        }
        for id in prepared {
            self.complete_later(id, markers.clone());
        }
    }

    /// Forgets the ids of a `__transaction_state` partition this shard no longer leads.
    pub fn unload(&self, partition: i32, partitions_total: i32) {
        self.loads.borrow_mut().remove(&partition);
        self.txns.borrow_mut().retain(|id, _| crate::group::records::partition_for(id, partitions_total) != partition);
    }

    /// The coordinator's timer (every `transaction.abort.timed.out.transaction.cleanup.interval.ms`):
    /// aborts open transactions past their timeout (fencing their producer), carries on
    /// decided ones no task is completing, and forgets ids idle past
    /// `transactional.id.expiration.ms`.
    pub fn tick(self: &Rc<Self>, markers: Rc<dyn MarkerWriter>) {
        let now = now_ms();
        let mut aborts = Vec::new();
        let mut resume = Vec::new();
        let mut expired = Vec::new();
        for (id, m) in self.txns.borrow().iter() {
            if self.coordinator_status(id).is_err() {
                continue;
            }
            if let Some(abort) = m.timed_out(now) {
                aborts.push((id.clone(), abort));
            } else if m.value.state.is_prepared() && m.pending.is_none() && !self.completing.borrow().contains(id) {
                resume.push(id.clone());
            } else if matches!(m.value.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort)
                && m.pending.is_none()
                && now.saturating_sub(m.value.last_update_ms) > self.config.txn_id_expiration_ms
            {
                expired.push(id.clone());
            }
        }
        for (id, abort) in aborts {
            info!(transactional_id = %id, producer_id = abort.producer_id, timeout_ms = abort.timeout_ms,
                "transaction timed out: aborting it and fencing its producer");
            let stored = self.write(&id, abort);
            let coordinator = self.clone();
            let markers = markers.clone();
            glommio::spawn_local(async move {
                if stored.await.is_ok() {
                    coordinator.complete_later(id, markers);
                }
            })
            .detach();
        }
        for id in resume {
            self.complete_later(id, markers.clone());
        }
        for id in expired {
            let tombstone = self.append(&id, &[(records::encode_key(&id), None)]);
            self.txns.borrow_mut().remove(&id);
            glommio::spawn_local(async move {
                match tombstone.await {
                    Ok(()) => info!(transactional_id = %id, "transactional id expired"),
                    Err(e) => warn!(transactional_id = %id, error = ?e, "transactional id expiry not stored"),
                }
            })
            .detach();
        }
    }
}

fn summarize(m: &TxnMetadata) -> TxnSummary {
    TxnSummary {
        transactional_id: m.transactional_id.clone(),
        state: m.value.state,
        producer_id: m.value.producer_id,
        producer_epoch: m.value.producer_epoch,
        timeout_ms: m.value.timeout_ms,
        start_ms: m.value.start_ms,
        partitions: m.value.partitions.iter().cloned().collect(),
    }
}
