//! Routing partition work to owning shards: split by owner, one message per shard, a direct
//! call for the local shard, merge the replies.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use futures::channel::oneshot;
use futures::future::{join_all, select_all};
use kafka_protocol::ResponseError;

use super::brokers::by_topic;
use super::message::*;
use super::Shard;
use crate::cluster::image::owner_of;
use crate::group::coordinator::{offsets_partition, GroupCall, GroupSummary};
use crate::txn::coordinator::{txn_partition, MarkerRequest, MarkerResults, MarkerWriter, TxnCall, TxnSummary};
use crate::types::{Acks, Offset, ShardId, TopicPartition};
use kafka_protocol::messages::write_txn_markers_request::{WritableTxnMarker, WritableTxnMarkerTopic};
use kafka_protocol::messages::{ProducerId, TopicName, WriteTxnMarkersRequest};
use kafka_protocol::protocol::StrBytes;

type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

impl Shard {
    /// Splits off the items for partitions another broker leads (or none does): this broker
    /// answers those NOT_LEADER_OR_FOLLOWER. Unknown topics and partitions stay, for the
    /// owner to answer UNKNOWN_TOPIC_OR_PARTITION.
    fn split_not_led<I>(&self, items: Vec<I>, tp: impl Fn(&I) -> &TopicPartition) -> (Vec<I>, Vec<I>) {
        let image = self.image();
        let me = self.config.node_id;
        items.into_iter().partition(|item| {
            let tp = tp(item);
            match image.topic(&tp.topic) {
                Some(t) if (0..t.partitions).contains(&tp.partition) => image.leader(tp) == Some(me),
                _ => true,
            }
        })
    }

    fn group_by_owner<I>(&self, items: Vec<I>, tp: impl Fn(&I) -> &TopicPartition) -> BTreeMap<ShardId, Vec<I>> {
        let shards = self.data_shards();
        let mut groups: BTreeMap<ShardId, Vec<I>> = BTreeMap::new();
        for item in items {
            groups.entry(owner_of(tp(&item), shards)).or_default().push(item);
        }
        groups
    }

    /// Stage one of a produce: appends are done (local) or queued in order (remote) when
    /// this returns; the returned future resolves with every partition's outcome.
    pub async fn route_produce(
        self: &Rc<Self>,
        acks: Acks,
        timeout_ms: i32,
        items: Vec<ProduceItem>,
    ) -> LocalFuture<Vec<ProduceOutcome>> {
        let (items, not_led) = self.split_not_led(items, |i| &i.tp);
        let refused: Vec<ProduceOutcome> =
            not_led.iter().map(|i| ProduceOutcome::failed(i.idx, ResponseError::NotLeaderOrFollower)).collect();
        let mut parts: Vec<LocalFuture<Vec<ProduceOutcome>>> = vec![Box::pin(std::future::ready(refused))];
        for (owner, items) in self.group_by_owner(items, |i| &i.tp) {
            if owner == self.id {
                parts.push(Box::pin(self.produce_local(acks, timeout_ms, items)));
                continue;
            }
            let idxs: Vec<usize> = items.iter().map(|i| i.idx).collect();
            let (reply, rx) = oneshot::channel();
            let sent = self.send(owner, DataRequest::Produce { acks, timeout_ms, items, reply }).await;
            parts.push(Box::pin(async move {
                match (sent, rx.await) {
                    (Ok(()), Ok(out)) => out,
                    _ => shard_down(&idxs, ProduceOutcome::failed),
                }
            }));
        }
        Box::pin(async move { join_all(parts).await.into_iter().flatten().collect() })
    }

    /// Runs read-style work on each owner at once: `local` on this shard, a message built by
    /// `remote` elsewhere; `down` answers for items whose shard could not (it is stopping).
    async fn scatter<I, O>(
        self: &Rc<Self>,
        items: Vec<I>,
        key: fn(&I) -> (usize, &TopicPartition),
        local: fn(Rc<Shard>, Vec<I>) -> LocalFuture<Vec<O>>,
        remote: fn(Vec<I>, oneshot::Sender<Vec<O>>) -> DataRequest,
        down: fn(usize, ResponseError) -> O,
    ) -> Vec<O>
    where
        I: 'static,
        O: 'static,
    {
        let (items, not_led) = self.split_not_led(items, |i| key(i).1);
        let refused: Vec<O> = not_led.iter().map(|i| down(key(i).0, ResponseError::NotLeaderOrFollower)).collect();
        let parts = self.group_by_owner(items, |i| key(i).1).into_iter().map(|(owner, items)| -> LocalFuture<Vec<O>> {
            if owner == self.id {
                return local(self.clone(), items);
            }
            let shard = self.clone();
            Box::pin(async move {
                let idxs: Vec<usize> = items.iter().map(|i| key(i).0).collect();
                let (reply, rx) = oneshot::channel();
                let answer = match shard.send(owner, remote(items, reply)).await {
                    Ok(()) => rx.await.ok(),
                    Err(_) => None,
                };
                answer.unwrap_or_else(|| shard_down(&idxs, down))
            })
        });
        let mut out = refused;
        out.extend(join_all(parts).await.into_iter().flatten());
        out
    }

    pub async fn route_fetch(self: &Rc<Self>, items: Vec<FetchItem>) -> Vec<FetchOutcome> {
        self.scatter(
            items,
            |i| (i.idx, &i.tp),
            |shard, items| Box::pin(shard.fetch_local(items)),
            |items, reply| DataRequest::Fetch { items, reply },
            FetchOutcome::failed,
        )
        .await
    }

    pub async fn route_list_offsets(self: &Rc<Self>, items: Vec<ListOffsetsItem>) -> Vec<ListOffsetsOutcome> {
        self.scatter(
            items,
            |i| (i.idx, &i.tp),
            |shard, items| Box::pin(shard.list_offsets_local(items)),
            |items, reply| DataRequest::ListOffsets { items, reply },
            ListOffsetsOutcome::failed,
        )
        .await
    }

    pub async fn route_delete_records(self: &Rc<Self>, items: Vec<DeleteRecordsItem>) -> Vec<DeleteRecordsOutcome> {
        self.scatter(
            items,
            |i| (i.idx, &i.tp),
            |shard, items| Box::pin(shard.delete_records_local(items)),
            |items, reply| DataRequest::DeleteRecords { items, reply },
            DeleteRecordsOutcome::failed,
        )
        .await
    }

    pub async fn route_epoch_ends(self: &Rc<Self>, items: Vec<EpochEndItem>) -> Vec<EpochEndOutcome> {
        self.scatter(
            items,
            |i| (i.idx, &i.tp),
            |shard, items| Box::pin(std::future::ready(shard.epoch_ends_local(items))),
            |items, reply| DataRequest::EpochEnds { items, reply },
            EpochEndOutcome::failed,
        )
        .await
    }

    pub async fn route_describe_producers(
        self: &Rc<Self>,
        items: Vec<(usize, TopicPartition)>,
    ) -> Vec<ProducersOutcome> {
        self.scatter(
            items,
            |i| (i.0, &i.1),
            |shard, items| Box::pin(std::future::ready(shard.describe_producers_local(items))),
            |items, reply| DataRequest::DescribeProducers { items, reply },
            |idx, error| ProducersOutcome { idx, error: Some(error), producers: Vec::new() },
        )
        .await
    }

    /// Resolves when any of the partitions' high watermark (with `log_end`, log end) passes
    /// the one given (or a shard can no longer tell). The caller bounds the wait with its own timer.
    pub async fn watch_any(self: &Rc<Self>, items: Vec<(TopicPartition, Offset)>, log_end: bool) {
        let (items, _not_led) = self.split_not_led(items, |i| &i.0);
        let mut receivers = Vec::new();
        for (owner, items) in self.group_by_owner(items, |i| &i.0) {
            let (reply, rx) = oneshot::channel();
            if owner == self.id {
                self.watch_local(items, log_end, reply);
            } else if self.send(owner, DataRequest::Watch { items, log_end, reply }).await.is_err() {
                return;
            }
            receivers.push(rx);
        }
        if !receivers.is_empty() {
            let _ = select_all(receivers).await;
        }
    }

    /// The data shard coordinating what lives in `tp`, a partition of an internal topic
    /// (`None`: the topic does not exist yet): the partition's owner when this broker leads
    /// it, NOT_COORDINATOR when another broker does.
    fn coordinating_shard(&self, tp: Option<TopicPartition>) -> Result<ShardId, ResponseError> {
        let image = self.image();
        let tp = tp.ok_or(ResponseError::CoordinatorNotAvailable)?;
        if image.leader(&tp) != Some(self.config.node_id) {
            return Err(ResponseError::NotCoordinator);
        }
        Ok(image.owner(&tp))
    }

    /// Sends a group call to its coordinator shard (this one or another), in order. A
    /// `List` goes to this shard only; callers send one to each data shard.
    pub async fn route_group(self: &Rc<Self>, call: GroupCall) {
        let Some(group) = call.group() else {
            self.groups.serve(call);
            return;
        };
        let owner = match self.coordinating_shard(offsets_partition(&self.image(), group)) {
            Ok(owner) => owner,
            Err(e) => return call.fail(e),
        };
        if owner == self.id {
            self.groups.serve(call);
        } else {
            // If the owner has stopped, the call is dropped and its caller sees no answer.
            let _ = self.send(owner, DataRequest::Group(call)).await;
        }
    }

    /// Sends a transaction call to its coordinator shard (this one or another). A `List`
    /// goes to this shard only; callers send one to each data shard.
    pub async fn route_txn(self: &Rc<Self>, call: TxnCall) {
        let Some(id) = call.transactional_id() else {
            self.txns.serve(call, self.marker_writer());
            return;
        };
        let owner = match self.coordinating_shard(txn_partition(&self.image(), id)) {
            Ok(owner) => owner,
            Err(e) => return call.fail(e),
        };
        if owner == self.id {
            self.txns.serve(call, self.marker_writer());
        } else {
            // If the owner has stopped, the call is dropped and its caller sees no answer.
            let _ = self.send(owner, DataRequest::Txn(call)).await;
        }
    }

    /// Sends `List` to every data shard's transaction coordinator and merges the answers.
    pub async fn list_all_txns(self: &Rc<Self>) -> Vec<TxnSummary> {
        let mut answers = Vec::new();
        for shard in (0..self.data_shards()).map(ShardId) {
            let (reply, rx) = oneshot::channel();
            let call = TxnCall::List { reply };
            if shard == self.id {
                self.txns.serve(call, self.marker_writer());
            } else if self.send(shard, DataRequest::Txn(call)).await.is_err() {
                continue;
            }
            answers.push(rx);
        }
        let mut all = Vec::new();
        for rx in answers {
            all.extend(rx.await.unwrap_or_default());
        }
        all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
        all
    }

    /// How this shard's transaction coordinator reaches the partitions of a transaction.
    pub fn marker_writer(self: &Rc<Self>) -> Rc<dyn MarkerWriter> {
        Rc::new(ShardMarkers(self.clone()))
    }

    /// Writes markers to partitions this broker leads, through their owning shards.
    pub async fn route_markers(self: &Rc<Self>, request: MarkerRequest) -> MarkerResults {
        let (items, not_led) = self.split_not_led(request.partitions.clone(), |tp| tp);
        let mut out: MarkerResults =
            not_led.into_iter().map(|tp| (tp, Some(ResponseError::NotLeaderOrFollower))).collect();
        let mut parts: Vec<LocalFuture<MarkerResults>> = Vec::new();
        for (owner, partitions) in self.group_by_owner(items, |tp| tp) {
            let request = MarkerRequest { partitions, ..request.clone() };
            if owner == self.id {
                parts.push(Box::pin(self.write_markers_local(request)));
                continue;
            }
            let failed: MarkerResults =
                request.partitions.iter().map(|tp| (tp.clone(), Some(ResponseError::NotLeaderOrFollower))).collect();
            let (reply, rx) = oneshot::channel();
            let sent = self.send(owner, DataRequest::WriteMarkers { request, reply }).await;
            parts.push(Box::pin(async move {
                match (sent, rx.await) {
                    (Ok(()), Ok(results)) => results,
                    _ => failed,
                }
            }));
        }
        out.extend(join_all(parts).await.into_iter().flatten());
        out
    }

    /// Writes markers to partitions led by broker `broker` with WriteTxnMarkers.
    async fn remote_markers(self: Rc<Self>, broker: i32, request: MarkerRequest) -> MarkerResults {
        let failed =
            |e: ResponseError| -> MarkerResults { request.partitions.iter().map(|tp| (tp.clone(), Some(e))).collect() };
        let image = self.image();
        let topics = by_topic(request.partitions.iter().map(|tp| (tp.topic.as_str(), tp.partition)));
        let mut marker = WritableTxnMarker::default();
        marker.producer_id = ProducerId(request.producer_id);
        marker.producer_epoch = request.producer_epoch;
        marker.transaction_result = request.commit;
        marker.coordinator_epoch = request.coordinator_epoch;
        marker.topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                let mut t = WritableTxnMarkerTopic::default();
                t.name = TopicName(StrBytes::from_string(name.to_string()));
                t.partition_indexes = partitions;
                t
            })
            .collect();
        let mut call = WriteTxnMarkersRequest::default();
        call.markers = vec![marker];
        let response = match self.brokers.call(&image, broker, &call, None).await {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(broker, error = %e, "WriteTxnMarkers failed");
                return failed(ResponseError::NetworkException);
            }
        };
        let mut out = MarkerResults::new();
        for result in response.markers.into_iter().filter(|m| m.producer_id.0 == request.producer_id) {
            for topic in result.topics {
                for p in topic.partitions {
                    out.push((
                        TopicPartition::new(topic.name.0.as_str(), p.partition_index),
                        ResponseError::try_from_code(p.error_code),
                    ));
                }
            }
        }
        // Partitions the answer left out were not written.
        for tp in &request.partitions {
            if !out.iter().any(|(t, _)| t == tp) {
                out.push((tp.clone(), Some(ResponseError::UnknownServerError)));
            }
        }
        out
    }

    /// Every partition replica on this node, from every data shard.
    pub async fn all_log_dirs(self: &Rc<Self>) -> Vec<LogDirEntry> {
        let mut all = self.log_dirs_local();
        for shard in (0..self.data_shards()).map(ShardId).filter(|s| *s != self.id) {
            let (reply, rx) = oneshot::channel();
            if self.send(shard, DataRequest::LogDirs { reply }).await.is_ok() {
                all.extend(rx.await.unwrap_or_default());
            }
        }
        all
    }

    /// Sends `List` to every data shard and merges the answers.
    pub async fn list_all_groups(self: &Rc<Self>) -> Vec<GroupSummary> {
        let mut answers = Vec::new();
        for shard in (0..self.data_shards()).map(ShardId) {
            let (reply, rx) = oneshot::channel();
            let call = GroupCall::List { reply };
            if shard == self.id {
                self.groups.serve(call);
            } else if self.send(shard, DataRequest::Group(call)).await.is_err() {
                continue;
            }
            answers.push(rx);
        }
        let mut all = Vec::new();
        for rx in answers {
            all.extend(rx.await.unwrap_or_default());
        }
        all.sort_by(|a, b| a.group_id.cmp(&b.group_id));
        all
    }
}

/// A shard's way of writing a transaction's markers: partitions this broker leads through
/// their owning shards, the others through WriteTxnMarkers to their leaders, all at once.
struct ShardMarkers(Rc<Shard>);

impl MarkerWriter for ShardMarkers {
    fn write_markers(&self, request: MarkerRequest) -> Pin<Box<dyn Future<Output = MarkerResults>>> {
        let shard = self.0.clone();
        Box::pin(async move {
            let image = shard.image();
            let me = shard.config.node_id;
            let mut by_leader: BTreeMap<Option<i32>, Vec<TopicPartition>> = BTreeMap::new();
            for tp in &request.partitions {
                // Unknown partitions stay here, for the owner to say so.
                let leader = match image.topic(&tp.topic) {
                    Some(t) if (0..t.partitions).contains(&tp.partition) => image.leader(tp),
                    _ => Some(me),
                };
                by_leader.entry(leader).or_default().push(tp.clone());
            }
            let mut out = MarkerResults::new();
            let mut parts: Vec<LocalFuture<MarkerResults>> = Vec::new();
            for (leader, partitions) in by_leader {
                let request = MarkerRequest { partitions, ..request.clone() };
                match leader {
                    None => out
                        .extend(request.partitions.into_iter().map(|tp| (tp, Some(ResponseError::LeaderNotAvailable)))),
                    Some(l) if l == me => {
                        let shard = shard.clone();
                        parts.push(Box::pin(async move { shard.route_markers(request).await }));
                    }
                    Some(l) => parts.push(Box::pin(shard.clone().remote_markers(l, request))),
                }
            }
            out.extend(join_all(parts).await.into_iter().flatten());
            out
        })
    }
}

/// Outcomes for partitions whose shard could not answer (it is stopping).
fn shard_down<T>(idxs: &[usize], make: fn(usize, ResponseError) -> T) -> Vec<T> {
    idxs.iter().map(|&idx| make(idx, ResponseError::NotLeaderOrFollower)).collect()
}
