//! One replica fetcher: this broker's follower replicas of partitions one leader leads.
//!
//! A loop: learn each new partition's position from its data shard; send the leader one
//! Fetch (v12, with this broker's id as `replica_id`, each partition's fetch offset, last
//! fetched epoch and the leader epoch it believes in); hand each partition's answer to its
//! data shard — batches to append as stored, or the divergence to truncate to — all shards
//! at once; repeat. The fetch offset tells the leader what this follower holds: the data
//! shard answers only after the appended batches are synced, so a follower acknowledges
//! durable records only. A partition the leader refuses (not leader, fenced or unknown
//! epoch) waits for the next image; connection failures back off
//! `replica.fetch.backoff.ms` and reconnect.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use futures::future::join_all;
use glommio::channels::shared_channel::ConnectedSender;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::{debug, info, warn};

use crate::client::{with_timeout, Connection};
use crate::cluster::image::owner_of;
use crate::config::Config;
use crate::partition::FollowerPosition;
use crate::shard::message::FollowStep;
use crate::shard::DataRequest;
use crate::types::{Offset, TopicPartition};

/// The Fetch version followers send: topic names, last fetched epoch and diverging epoch.
const FETCH_VERSION: i16 = 12;

/// Wait before asking again a leader whose metadata is behind this broker's.
const METADATA_LAG_BACKOFF: Duration = Duration::from_millis(50);

/// A partition followed from this fetcher's leader.
#[derive(Debug, Clone)]
struct Followed {
    /// The leader epoch the image gives the leader.
    leader_epoch: i32,
    /// Where the local replica stands; `None` until its data shard says.
    position: Option<FollowerPosition>,
    /// The leader refused it: not asked again before this (or a newer image).
    parked_until: Option<Instant>,
}

impl Followed {
    fn new(leader_epoch: i32) -> Self {
        Self { leader_epoch, position: None, parked_until: None }
    }

    fn parked(&self) -> bool {
        self.parked_until.is_some_and(|t| Instant::now() < t)
    }
}

pub struct Fetcher {
    leader: i32,
    config: Arc<Config>,
    data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
    shard_count: usize,
    addr: RefCell<String>,
    partitions: RefCell<BTreeMap<TopicPartition, Followed>>,
    /// Wakes the loop when it idles (partitions changed, or stop).
    wake: RefCell<Option<oneshot::Sender<()>>>,
    stopped: Cell<bool>,
}

impl Fetcher {
    pub fn start(
        leader: i32,
        config: Arc<Config>,
        data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
        shard_count: usize,
    ) -> Rc<Fetcher> {
        let fetcher = Rc::new(Fetcher {
            leader,
            config,
            data_shards,
            shard_count,
            addr: RefCell::new(String::new()),
            partitions: RefCell::new(BTreeMap::new()),
            wake: RefCell::new(None),
            stopped: Cell::new(false),
        });
        info!(leader, "replica fetcher started");
        let running = fetcher.clone();
        glommio::spawn_local(async move { running.run().await }).detach();
        fetcher
    }

    /// The partitions to fetch now, with the leader epoch of each. A partition whose epoch
    /// changed starts over (its position is asked again, and it is no longer parked).
    pub fn follow(&self, addr: String, wanted: BTreeMap<TopicPartition, i32>) {
        *self.addr.borrow_mut() = addr;
        let mut partitions = self.partitions.borrow_mut();
        partitions.retain(|tp, _| wanted.contains_key(tp));
        for (tp, epoch) in wanted {
            match partitions.get_mut(&tp) {
                Some(f) if f.leader_epoch == epoch => {}
                Some(f) => *f = Followed::new(epoch),
                None => {
                    partitions.insert(tp, Followed::new(epoch));
                }
            }
        }
        drop(partitions);
        self.poke();
    }

    pub fn stop(&self) {
        self.stopped.set(true);
        self.poke();
    }

    fn poke(&self) {
        if let Some(w) = self.wake.borrow_mut().take() {
            let _ = w.send(());
        }
    }

    async fn idle(&self, max: Duration) {
        let (tx, rx) = oneshot::channel();
        *self.wake.borrow_mut() = Some(tx);
        let _ = with_timeout(max, rx).await;
    }

    async fn run(self: Rc<Self>) {
        let backoff = Duration::from_millis(self.config.replica_fetch_backoff_ms);
        let mut connection: Option<Connection> = None;
        while !self.stopped.get() {
            self.learn_positions().await;
            let Some((request, sent_epochs)) = self.request() else {
                // Nothing to fetch yet: partitions not open, or parked for a backoff.
                self.idle(Duration::from_millis(100)).await;
                continue;
            };
            if connection.is_none() {
                let addr = self.addr.borrow().clone();
                let client_id = format!("weir-replica-fetcher-{}", self.config.node_id);
                let timeout = Duration::from_millis(self.config.quorum_request_timeout_ms);
                match Connection::connect(&addr, &client_id, timeout).await {
                    Ok(c) => connection = Some(c),
                    Err(e) => {
                        debug!(leader = self.leader, %addr, error = %e, "cannot reach the leader; retrying");
                        self.idle(backoff).await;
                        continue;
                    }
                }
            }
            let Some(conn) = connection.as_mut() else { continue };
            let timeout =
                Duration::from_millis(self.config.replica_fetch_wait_max_ms + self.config.quorum_request_timeout_ms);
            let response = match conn.call_version(&request, FETCH_VERSION, timeout).await {
                Ok(r) => r,
                Err(e) => {
                    debug!(leader = self.leader, error = %e, "follower fetch failed; reconnecting");
                    connection = None;
                    self.idle(backoff).await;
                    continue;
                }
            };
            if let Some(e) = ResponseError::try_from_code(response.error_code) {
                warn!(leader = self.leader, error = ?e, "leader refused the follower fetch");
                self.idle(backoff).await;
                continue;
            }
            let mut steps = Vec::new();
            for topic in response.responses {
                for p in topic.partitions {
                    let tp = TopicPartition::new(topic.topic.0.to_string(), p.partition_index);
                    // The answer is about the leader epoch the request named.
                    let Some(&leader_epoch) = sent_epochs.get(&tp) else { continue };
                    match ResponseError::try_from_code(p.error_code) {
                        None if p.diverging_epoch.epoch >= 0 || p.diverging_epoch.end_offset >= 0 => {
                            let step = FollowStep::Truncate {
                                leader_epoch,
                                epoch: p.diverging_epoch.epoch,
                                end_offset: p.diverging_epoch.end_offset,
                            };
                            steps.push((tp, step));
                        }
                        None => {
                            let records = p.records.unwrap_or_default();
                            let step = FollowStep::Append {
                                leader_epoch,
                                records,
                                leader_high_watermark: p.high_watermark,
                                leader_log_start: p.log_start_offset,
                            };
                            steps.push((tp, step));
                        }
                        Some(ResponseError::OffsetOutOfRange) if self.fetched_below(&tp, p.log_start_offset) => {
                            steps.push((tp, FollowStep::StartAt { leader_epoch, log_start: p.log_start_offset }));
                        }
                        Some(e) => self.refused(&tp, e),
                    }
                }
            }
            self.apply_steps(steps).await;
        }
        info!(leader = self.leader, "replica fetcher stopped");
    }

    /// Whether this replica asked for an offset below the leader's log start.
    fn fetched_below(&self, tp: &TopicPartition, leader_log_start: Offset) -> bool {
        self.partitions.borrow().get(tp).and_then(|f| f.position).is_some_and(|p| p.log_end < leader_log_start)
    }

    /// The leader refused a partition (one of the two has not seen the newest image yet):
    /// it waits a backoff, or a newer image.
    fn refused(&self, tp: &TopicPartition, error: ResponseError) {
        // The leader's image lags this one's: it catches up within a round trip or two.
        let lagging = matches!(error, ResponseError::NotLeaderOrFollower | ResponseError::UnknownLeaderEpoch);
        let backoff =
            if lagging { METADATA_LAG_BACKOFF } else { Duration::from_millis(self.config.replica_fetch_backoff_ms) };
        if let Some(f) = self.partitions.borrow_mut().get_mut(tp) {
            debug!(partition = %tp, leader = self.leader, epoch = f.leader_epoch, error = ?error, "leader refused the follower; retrying after a backoff");
            f.parked_until = Some(Instant::now() + backoff);
            f.position = None;
        }
    }

    /// Asks the data shards where the partitions without a position stand.
    async fn learn_positions(&self) {
        let unknown: Vec<TopicPartition> = self
            .partitions
            .borrow()
            .iter()
            .filter(|(_, f)| f.position.is_none() && !f.parked())
            .map(|(tp, _)| tp.clone())
            .collect();
        if unknown.is_empty() {
            return;
        }
        let steps = unknown.into_iter().map(|tp| (tp, FollowStep::Position)).collect();
        self.apply_steps(steps).await;
    }

    /// Runs each partition's step on its data shard, all at once, and keeps the positions.
    async fn apply_steps(&self, steps: Vec<(TopicPartition, FollowStep)>) {
        let calls = steps.into_iter().map(|(tp, step)| async move {
            let shard = owner_of(&tp, self.shard_count);
            let (reply, rx) = oneshot::channel();
            let outcome = match self.data_shards.get(shard.0) {
                Some(s) => match s.send(DataRequest::Follow { tp: tp.clone(), step, reply }).await {
                    Ok(()) => rx.await.unwrap_or(Err(ResponseError::NotLeaderOrFollower)),
                    Err(_) => Err(ResponseError::NotLeaderOrFollower),
                },
                None => Err(ResponseError::UnknownTopicOrPartition),
            };
            (tp, outcome)
        });
        for (tp, outcome) in join_all(calls).await {
            let mut partitions = self.partitions.borrow_mut();
            let Some(f) = partitions.get_mut(&tp) else { continue };
            match outcome {
                Ok(position) => f.position = Some(position),
                Err(e) => {
                    // Not open yet, or the replica's role moved on: ask again next round.
                    debug!(partition = %tp, error = ?e, "follower step failed");
                    f.position = None;
                }
            }
        }
    }

    /// One Fetch for every partition with a known position, and the leader epoch each was
    /// asked in; `None` when there is none.
    fn request(&self) -> Option<(FetchRequest, BTreeMap<TopicPartition, i32>)> {
        let mut topics: BTreeMap<String, Vec<FetchPartition>> = BTreeMap::new();
        let mut epochs = BTreeMap::new();
        for (tp, f) in self.partitions.borrow().iter() {
            let Some(position) = f.position.filter(|_| !f.parked()) else { continue };
            epochs.insert(tp.clone(), f.leader_epoch);
            let mut p = FetchPartition::default();
            p.partition = tp.partition;
            p.current_leader_epoch = f.leader_epoch;
            p.fetch_offset = position.log_end;
            p.last_fetched_epoch = position.last_epoch;
            p.log_start_offset = position.log_start;
            p.partition_max_bytes = self.config.replica_fetch_max_bytes.min(i32::MAX as usize) as i32;
            topics.entry(tp.topic.clone()).or_default().push(p);
        }
        if topics.is_empty() {
            return None;
        }
        let mut request = FetchRequest::default();
        request.replica_id = BrokerId(self.config.node_id);
        request.max_wait_ms = self.config.replica_fetch_wait_max_ms.min(i32::MAX as u64) as i32;
        request.min_bytes = 1;
        request.max_bytes = self.config.replica_fetch_response_max_bytes.min(i32::MAX as usize) as i32;
        request.session_id = 0;
        request.session_epoch = -1;
        request.topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = FetchTopic::default();
                t.topic = TopicName(StrBytes::from_string(name));
                t.partitions = partitions;
                t
            })
            .collect();
        Some((request, epochs))
    }
}
