//! The owner's side of partition work: what a data shard does with the items routed to it,
//! by its own connections (a direct call) or by a peer shard (a [`DataRequest`]).
//!
//! `produce_local` is split in two stages: the appends happen synchronously when it is
//! called (so appends keep the order of requests), and the returned future waits for
//! durability. Peers' requests are served in arrival order; reads run as their own tasks.

use std::future::Future;
use std::rc::Rc;
use std::time::Duration;

use futures::channel::oneshot;
use futures::future::join_all;
use glommio::channels::shared_channel::ConnectedReceiver;
use kafka_protocol::ResponseError;

use super::message::*;
use super::Shard;
use crate::group::OFFSETS_TOPIC;
use crate::partition::{fire, FollowerPosition, Waiter};
use crate::protocol::batch::ControlType;
use crate::txn::coordinator::{MarkerRequest, MarkerResults};
use crate::types::{Acks, Offset, TopicPartition};

impl Shard {
    /// Appends each item to its partition now; the future resolves when `acks` is met.
    pub fn produce_local(
        self: &Rc<Self>,
        acks: Acks,
        timeout_ms: i32,
        items: Vec<ProduceItem>,
    ) -> impl Future<Output = Vec<ProduceOutcome>> + 'static {
        let timeout = Duration::from_millis(timeout_ms.max(0) as u64);
        let mut done = Vec::with_capacity(items.len());
        let mut waiting = Vec::with_capacity(items.len());
        for item in items {
            let Some(partition) = self.partition(&item.tp) else {
                done.push(ProduceOutcome::failed(item.idx, self.missing_partition_error(&item.tp)));
                continue;
            };
            if let Err(refused) = partition.check_records(&item.batch) {
                done.push(ProduceOutcome {
                    record_errors: refused.records,
                    error_message: refused.message,
                    ..ProduceOutcome::failed(item.idx, refused.error)
                });
                continue;
            }
            match partition.produce(&item.batch, acks, timeout) {
                Ok(durable) => waiting.push((item.idx, partition, durable)),
                Err(e) => done.push(ProduceOutcome::failed(item.idx, e)),
            }
        }
        async move {
            // All partitions wait at once.
            let waits = waiting.into_iter().map(|(idx, partition, durable)| async move {
                match durable.await {
                    Ok(a) => ProduceOutcome {
                        idx,
                        error: None,
                        base_offset: a.base_offset,
                        log_append_time_ms: a.log_append_time_ms,
                        log_start_offset: partition.log_start_offset(),
                        record_errors: Vec::new(),
                        error_message: None,
                    },
                    Err(e) => ProduceOutcome::failed(idx, e),
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
                out.push(FetchOutcome::failed(item.idx, self.missing_partition_error(&item.tp)));
                continue;
            };
            let limit = item.max_bytes.min(remaining);
            let read = match item.replica {
                Some(f) => partition
                    .replica_read(f.replica_id, item.offset, f.last_fetched_epoch, f.log_start_offset, limit)
                    .await
                    .map(|r| FetchOutcome {
                        idx: item.idx,
                        error: None,
                        high_watermark: r.high_watermark,
                        last_stable_offset: partition.last_stable_offset(),
                        log_start_offset: r.log_start_offset,
                        records: r.records,
                        aborted: Vec::new(),
                        diverging: r.diverging,
                    }),
                // Until something is read, one whole batch is returned whatever the limits (KIP-74).
                None => partition.read(item.offset, limit, read_any, item.isolation).await.map(|r| FetchOutcome {
                    idx: item.idx,
                    error: None,
                    high_watermark: r.high_watermark,
                    last_stable_offset: r.last_stable_offset,
                    log_start_offset: r.log_start_offset,
                    records: r.records,
                    aborted: r.aborted,
                    diverging: None,
                }),
            };
            let outcome = read.unwrap_or_else(|e| FetchOutcome {
                high_watermark: partition.high_watermark(),
                last_stable_offset: partition.last_stable_offset(),
                log_start_offset: partition.log_start_offset(),
                ..FetchOutcome::failed(item.idx, e)
            });
            remaining = remaining.saturating_sub(outcome.records.len());
            read_any |= !outcome.records.is_empty();
            out.push(outcome);
        }
        out
    }

    pub async fn list_offsets_local(self: Rc<Self>, items: Vec<ListOffsetsItem>) -> Vec<ListOffsetsOutcome> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let Some(partition) = self.partition(&item.tp) else {
                out.push(ListOffsetsOutcome::failed(item.idx, self.missing_partition_error(&item.tp)));
                continue;
            };
            out.push(match partition.list_offset(item.spec, item.isolation).await {
                Ok(Some((offset, timestamp))) => ListOffsetsOutcome { idx: item.idx, error: None, offset, timestamp },
                Ok(None) => ListOffsetsOutcome { idx: item.idx, error: None, offset: -1, timestamp: -1 },
                Err(e) => ListOffsetsOutcome::failed(item.idx, e),
            });
        }
        out
    }

    /// Every partition this shard holds, with its size and lag.
    pub fn log_dirs_local(&self) -> Vec<LogDirEntry> {
        self.partitions()
            .iter()
            .map(|p| LogDirEntry {
                tp: p.tp().clone(),
                size: p.size_bytes(),
                offset_lag: (p.high_watermark() - p.log_end_offset()).max(0),
            })
            .collect()
    }

    /// DeleteRecords on the partitions' leader, all at once.
    pub async fn delete_records_local(self: Rc<Self>, items: Vec<DeleteRecordsItem>) -> Vec<DeleteRecordsOutcome> {
        let calls = items.into_iter().map(|item| {
            let partition = self.partition(&item.tp);
            async move {
                let Some(partition) = partition else {
                    return DeleteRecordsOutcome::failed(item.idx, ResponseError::UnknownTopicOrPartition);
                };
                let timeout = Duration::from_millis(item.timeout_ms.max(0) as u64);
                match partition.delete_records(item.offset, timeout).await {
                    Ok(low_watermark) => DeleteRecordsOutcome { idx: item.idx, error: None, low_watermark },
                    Err(e) => DeleteRecordsOutcome::failed(item.idx, e),
                }
            }
        });
        join_all(calls).await
    }

    /// Parks `reply` on each partition until its high watermark (with `log_end`, its log
    /// end) passes the one given (fires at once when the shard is stopping).
    pub fn watch_local(&self, items: Vec<(TopicPartition, Offset)>, log_end: bool, reply: oneshot::Sender<()>) {
        let waiter: Waiter = Rc::new(std::cell::RefCell::new(Some(reply)));
        for (tp, seen) in items {
            match self.partition(&tp) {
                Some(p) if log_end => p.watch_end(seen, &waiter),
                Some(p) => p.watch(seen, &waiter),
                // The partition went away (deleted or moved): let the fetch look again.
                None => fire(&waiter),
            }
        }
        if self.is_stopping() {
            fire(&waiter);
        }
    }

    /// A follower replica's step (see [`FollowStep`]).
    pub async fn follow_local(&self, tp: &TopicPartition, step: FollowStep) -> Result<FollowerPosition, ResponseError> {
        let partition = self.partition(tp).ok_or_else(|| self.missing_partition_error(tp))?;
        match step {
            FollowStep::Position => Ok(partition.follower_position()),
            FollowStep::Append { leader_epoch, records, leader_high_watermark, leader_log_start } => {
                partition.replica_append(leader_epoch, &records, leader_high_watermark, leader_log_start).await
            }
            FollowStep::Truncate { leader_epoch, epoch, end_offset } => {
                partition.replica_truncate(leader_epoch, epoch, end_offset).await
            }
            FollowStep::StartAt { leader_epoch, log_start } => {
                partition.replica_restart_at(leader_epoch, log_start).await
            }
        }
    }

    /// Where each asked leader epoch ended, for OffsetForLeaderEpoch (on the leader).
    pub fn epoch_ends_local(&self, items: Vec<EpochEndItem>) -> Vec<EpochEndOutcome> {
        items
            .into_iter()
            .map(|item| match self.partition(&item.tp).map(|p| p.epoch_end(item.leader_epoch)) {
                None => EpochEndOutcome::failed(item.idx, ResponseError::UnknownTopicOrPartition),
                Some(Err(e)) => EpochEndOutcome::failed(item.idx, e),
                Some(Ok((leader_epoch, end_offset))) => {
                    EpochEndOutcome { idx: item.idx, error: None, leader_epoch, end_offset }
                }
            })
            .collect()
    }

    /// Writes a transaction's markers to this shard's partitions (all at once), and lets the
    /// group coordinator know of those in `__consumer_offsets`: the offsets committed in the
    /// transaction count from now on, or are dropped.
    pub fn write_markers_local(
        self: &Rc<Self>,
        request: MarkerRequest,
    ) -> impl Future<Output = MarkerResults> + 'static {
        let kind = if request.commit { ControlType::Commit } else { ControlType::Abort };
        let timeout = Duration::from_millis(self.config.quorum_request_timeout_ms);
        let writes: Vec<_> = request
            .partitions
            .into_iter()
            .map(|tp| {
                let written = match self.partition(&tp) {
                    Some(p) => p.write_marker(
                        request.producer_id,
                        request.producer_epoch,
                        request.coordinator_epoch,
                        kind,
                        timeout,
                    ),
                    None => Err(self.missing_partition_error(&tp)),
                };
                let shard = self.clone();
                async move {
                    let error = match written {
                        Ok(durable) => durable.await.err(),
                        Err(e) => Some(e),
                    };
                    if error.is_none() && tp.topic == OFFSETS_TOPIC {
                        shard.groups.complete_transaction(tp.partition, request.producer_id, request.commit);
                    }
                    (tp, error)
                }
            })
            .collect();
        join_all(writes)
    }

    /// The active producers of each partition, for DescribeProducers.
    pub fn describe_producers_local(&self, items: Vec<(usize, TopicPartition)>) -> Vec<ProducersOutcome> {
        items
            .into_iter()
            .map(|(idx, tp)| match self.partition(&tp) {
                None => {
                    ProducersOutcome { idx, error: Some(ResponseError::UnknownTopicOrPartition), producers: Vec::new() }
                }
                Some(p) => ProducersOutcome { idx, error: None, producers: p.producers() },
            })
            .collect()
    }

    /// Serves the requests one peer sends this shard, in arrival order: appends and image
    /// changes are applied before the next request is taken; reads run as their own tasks.
    /// `listen` fires when the control shard says the node may serve clients.
    pub async fn serve_peer(self: Rc<Self>, rx: ConnectedReceiver<DataRequest>, listen: Waiter) {
        while let Some(request) = rx.recv().await {
            match request {
                DataRequest::Produce { acks, timeout_ms, items, reply } => {
                    answer_later(reply, self.produce_local(acks, timeout_ms, items))
                }
                DataRequest::Fetch { items, reply } => answer_later(reply, self.clone().fetch_local(items)),
                DataRequest::LogDirs { reply } => {
                    let _ = reply.send(self.log_dirs_local());
                }
                DataRequest::DeleteRecords { items, reply } => {
                    answer_later(reply, self.clone().delete_records_local(items))
                }
                DataRequest::ListOffsets { items, reply } => {
                    answer_later(reply, self.clone().list_offsets_local(items))
                }
                DataRequest::Watch { items, log_end, reply } => self.watch_local(items, log_end, reply),
                DataRequest::Follow { tp, step, reply } => {
                    // In order per partition: the fetcher waits for each step's answer.
                    let shard = self.clone();
                    answer_later(reply, async move { shard.follow_local(&tp, step).await })
                }
                DataRequest::DescribeProducers { items, reply } => {
                    let _ = reply.send(self.describe_producers_local(items));
                }
                DataRequest::EpochEnds { items, reply } => {
                    let _ = reply.send(self.epoch_ends_local(items));
                }
                DataRequest::Group(call) => self.groups.serve(call),
                DataRequest::Txn(call) => self.txns.serve(call, self.marker_writer()),
                DataRequest::WriteMarkers { request, reply } => answer_later(reply, self.write_markers_local(request)),
                DataRequest::Publish { image, reply } => {
                    self.prepare_image(image).await;
                    let _ = reply.send(());
                }
                DataRequest::Show { image, reply } => {
                    self.show_image(image).await;
                    let _ = reply.send(());
                }
                DataRequest::ControllerContact { at } => self.controller_contact.set(Some(at)),
                DataRequest::Listen => fire(&listen),
            }
        }
    }
}
