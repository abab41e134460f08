//! The metadata image: what every shard reads to answer Metadata and to find the owner of a
//! partition. Immutable once published; a change makes a new image (copy on write).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::records::{BrokerRegistration, ConfigResource, MetadataRecord, PartitionChange};
use crate::types::{ShardId, TopicPartition};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
    /// `replicas[p]`: partition `p`'s brokers, the preferred leader first. Empty for a topic
    /// recorded before the cluster existed, until the controller places it.
    pub replicas: Vec<Vec<i32>>,
    /// `states[p]`: partition `p`'s leadership, as the controller last decided it.
    pub states: Vec<PartitionState>,
}

/// Who leads a partition, in which epochs, and which replicas are in sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionState {
    /// -1: no leader.
    pub leader: i32,
    /// Bumped by every leader change; -1 before the first election.
    pub leader_epoch: i32,
    /// Bumped by every change of this state.
    pub partition_epoch: i32,
    pub isr: Vec<i32>,
}

impl PartitionState {
    /// A new partition: no leader yet, every replica in sync (nothing to be behind on).
    pub fn initial(replicas: &[i32]) -> Self {
        Self { leader: -1, leader_epoch: -1, partition_epoch: 0, isr: replicas.to_vec() }
    }
}

impl TopicMeta {
    pub fn replicas_of(&self, partition: i32) -> &[i32] {
        usize::try_from(partition).ok().and_then(|p| self.replicas.get(p)).map_or(&[], Vec::as_slice)
    }

    pub fn state_of(&self, partition: i32) -> Option<&PartitionState> {
        usize::try_from(partition).ok().and_then(|p| self.states.get(p))
    }

    pub fn replication_factor(&self) -> i16 {
        self.replicas.first().map_or(0, |r| r.len() as i16)
    }

    /// Whether the topic still waits to be placed (recorded before the cluster).
    pub fn unplaced(&self) -> bool {
        self.partitions > 0 && self.replicas.is_empty()
    }
}

/// A registered broker, as the quorum knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerMeta {
    pub registration: BrokerRegistration,
    /// Fenced: registered but not (or no longer) heartbeating and caught up; it leads nothing.
    pub fenced: bool,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Bumped by every applied record.
    pub epoch: u64,
    /// The metadata log index of the last entry applied (the same on every node at the same
    /// point of the log).
    pub offset: u64,
    /// Registered brokers by id.
    pub brokers: BTreeMap<i32, BrokerMeta>,
    /// The highest broker epoch handed out.
    pub last_broker_epoch: i64,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    pub ids: HashMap<Uuid, String>,
    /// Data shards that partitions are spread over.
    pub data_shards: usize,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// Ids of deleted topics, so a restart can remove directories a crashed delete left
    /// (16 bytes per deleted topic).
    pub removed: BTreeSet<Uuid>,
    /// Dynamic broker configs: one broker's own (`Some(id)`) and the cluster-wide
    /// defaults (`None`).
    pub broker_configs: BTreeMap<Option<i32>, BTreeMap<String, String>>,
}

impl MetadataImage {
    pub fn new(data_shards: usize) -> Self {
        assert!(data_shards > 0, "at least one data shard");
        Self { data_shards, ..Default::default() }
    }

    pub fn apply(&mut self, record: &MetadataRecord) {
        self.epoch += 1;
        match record {
            MetadataRecord::Topic { name, id, partitions, configs, replicas } => {
                // The same topic again (more partitions, or placed): its partitions keep
                // their leadership.
                let old = self.topics.get(name).filter(|t| t.id == *id);
                let states = replicas
                    .iter()
                    .enumerate()
                    .map(|(p, r)| match old.and_then(|t| t.states.get(p)) {
                        Some(s) if !s.isr.is_empty() => s.clone(),
                        _ => PartitionState::initial(r),
                    })
                    .collect();
                let meta = TopicMeta {
                    name: name.clone(),
                    id: *id,
                    partitions: *partitions,
                    configs: configs.clone(),
                    replicas: replicas.clone(),
                    states,
                };
                self.ids.insert(*id, name.clone());
                self.topics.insert(name.clone(), Arc::new(meta));
            }
            MetadataRecord::RemoveTopic { id } => {
                if let Some(name) = self.ids.remove(id) {
                    self.topics.remove(&name);
                }
                self.removed.insert(*id);
            }
            MetadataRecord::ProducerIds { next_producer_id } => {
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::Broker(registration) => {
                self.last_broker_epoch = self.last_broker_epoch.max(registration.epoch);
                self.brokers.insert(registration.id, BrokerMeta { registration: registration.clone(), fenced: true });
            }
            MetadataRecord::BrokerFence { id, epoch, fenced } => {
                // A fence decided for an earlier registration does not touch a newer one.
                if let Some(b) = self.brokers.get_mut(id).filter(|b| b.registration.epoch == *epoch) {
                    b.fenced = *fenced;
                }
            }
            MetadataRecord::PartitionChange(change) => self.apply_partition_change(change),
            MetadataRecord::Config { resource, name, value } => {
                let configs = match resource {
                    ConfigResource::Topic(topic) => match self.topics.get_mut(topic) {
                        Some(meta) => &mut Arc::make_mut(meta).configs,
                        None => return,
                    },
                    ConfigResource::Broker(id) => self.broker_configs.entry(*id).or_default(),
                };
                match value {
                    Some(v) => configs.insert(name.clone(), v.clone()),
                    None => configs.remove(name),
                };
                self.broker_configs.retain(|_, c| !c.is_empty());
            }
        }
    }

    /// A dynamic broker config as broker `node` sees it: its own, else the cluster default.
    pub fn dynamic_broker_config(&self, node: i32, name: &str) -> Option<&str> {
        [Some(node), None]
            .iter()
            .find_map(|level| self.broker_configs.get(level).and_then(|c| c.get(name)))
            .map(String::as_str)
    }

    /// Broker `node`'s dynamic configs, the cluster defaults first, to apply in order.
    pub fn dynamic_broker_configs(&self, node: i32) -> Vec<(&str, &str)> {
        [None, Some(node)]
            .iter()
            .filter_map(|level| self.broker_configs.get(level))
            .flatten()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    fn apply_partition_change(&mut self, change: &PartitionChange) {
        let Some(topic) = self.ids.get(&change.topic_id).and_then(|name| self.topics.get_mut(name)) else { return };
        let Some(state) = usize::try_from(change.partition).ok().and_then(|p| topic.states.get(p)) else { return };
        if change.partition_epoch <= state.partition_epoch {
            return;
        }
        let topic = Arc::make_mut(topic);
        topic.states[change.partition as usize] = PartitionState {
            leader: change.leader,
            leader_epoch: change.leader_epoch,
            partition_epoch: change.partition_epoch,
            isr: change.isr.clone(),
        };
    }

    /// Records that rebuild this image from an empty one (a metadata snapshot).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> =
            self.removed.iter().map(|id| MetadataRecord::RemoveTopic { id: *id }).collect();
        for t in self.topics.values() {
            records.push(MetadataRecord::Topic {
                name: t.name.clone(),
                id: t.id,
                partitions: t.partitions,
                configs: t.configs.clone(),
                replicas: t.replicas.clone(),
            });
            for (p, state) in t.states.iter().enumerate().filter(|(_, s)| s.partition_epoch > 0) {
                records.push(MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: t.id,
                    partition: p as i32,
                    leader: state.leader,
                    leader_epoch: state.leader_epoch,
                    partition_epoch: state.partition_epoch,
                    isr: state.isr.clone(),
                }));
            }
        }
        records.push(MetadataRecord::ProducerIds { next_producer_id: self.next_producer_id });
        for b in self.brokers.values() {
            records.push(MetadataRecord::Broker(b.registration.clone()));
            let (id, epoch) = (b.registration.id, b.registration.epoch);
            records.push(MetadataRecord::BrokerFence { id, epoch, fenced: b.fenced });
        }
        for (broker, configs) in &self.broker_configs {
            for (name, value) in configs {
                records.push(MetadataRecord::Config {
                    resource: ConfigResource::Broker(*broker),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        records
    }

    /// The broker that leads a partition now, as the controller elected it (and still
    /// live). `None`: offline.
    pub fn leader(&self, tp: &TopicPartition) -> Option<i32> {
        let state = self.topics.get(&tp.topic)?.state_of(tp.partition)?;
        (state.leader >= 0 && self.is_live(state.leader)).then_some(state.leader)
    }

    pub fn partition_state(&self, tp: &TopicPartition) -> Option<&PartitionState> {
        self.topics.get(&tp.topic)?.state_of(tp.partition)
    }

    /// Registered and not fenced.
    pub fn is_live(&self, broker: i32) -> bool {
        self.brokers.get(&broker).is_some_and(|b| !b.fenced)
    }

    /// Live brokers, by id.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerMeta> {
        self.brokers.values().filter(|b| !b.fenced)
    }

    /// How many partitions each broker leads now.
    pub fn leader_counts(&self) -> BTreeMap<i32, usize> {
        let mut counts = BTreeMap::new();
        for t in self.topics.values() {
            for p in 0..t.partitions {
                if let Some(l) = self.leader(&TopicPartition::new(t.name.clone(), p)) {
                    *counts.entry(l).or_default() += 1;
                }
            }
        }
        counts
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.max(0) as usize).sum()
    }

    /// Partition replicas each broker holds (`max.broker.partitions` counts these).
    pub fn replicas_per_broker(&self) -> HashMap<i32, usize> {
        let mut load = HashMap::new();
        for broker in self.topics.values().flat_map(|t| t.replicas.iter().flatten()) {
            *load.entry(*broker).or_insert(0) += 1;
        }
        load
    }

    /// The data shard that owns a partition: the topic's partitions go round-robin over the
    /// shards, starting at a shard picked by the topic name, so topics spread evenly.
    pub fn owner(&self, tp: &TopicPartition) -> ShardId {
        owner_of(tp, self.data_shards)
    }

    /// Every partition that broker `node` holds a replica of and its data shard `shard` owns,
    /// with its topic.
    pub fn partitions_of(&self, node: i32, shard: ShardId) -> Vec<(TopicPartition, Arc<TopicMeta>)> {
        let mut out = Vec::new();
        for meta in self.topics.values() {
            for p in 0..meta.partitions {
                if !meta.replicas_of(p).contains(&node) {
                    continue;
                }
                let tp = TopicPartition::new(meta.name.clone(), p);
                if self.owner(&tp) == shard {
                    out.push((tp, meta.clone()));
                }
            }
        }
        out
    }
}

/// The data shard that owns a partition among `data_shards` (see [`MetadataImage::owner`]):
/// a pure function of the name, so a shard can check ownership without the image.
pub fn owner_of(tp: &TopicPartition, data_shards: usize) -> ShardId {
    owner_of_named(&tp.topic, tp.partition, data_shards)
}

/// [`owner_of`] from the topic's name and the partition, for callers that hold no
/// `TopicPartition` (and need not build one).
pub fn owner_of_named(topic: &str, partition: i32, data_shards: usize) -> ShardId {
    let start = crc32c::crc32c(topic.as_bytes()) as usize;
    ShardId((start.wrapping_add(partition.max(0) as usize)) % data_shards)
}

/// The image an executor acts on now, replaced whole when a newer one is published. Shared
/// (`Rc`) by the services of one executor; never crosses threads (the `Arc` inside does).
pub struct ImageCell {
    current: std::cell::RefCell<Arc<MetadataImage>>,
}

impl ImageCell {
    pub fn new(image: MetadataImage) -> Self {
        Self { current: std::cell::RefCell::new(Arc::new(image)) }
    }

    pub fn get(&self) -> Arc<MetadataImage> {
        self.current.borrow().clone()
    }

    /// Installs a newer image. Epochs only grow: an older image arriving after a newer one
    /// is a bug (it is refused, and returns `false`).
    pub fn set(&self, image: Arc<MetadataImage>) -> bool {
        let current = self.current.borrow().epoch;
        if !crate::invariant!(image.epoch >= current, "image epoch {} published after {}", image.epoch, current) {
            return false;
        }
        *self.current.borrow_mut() = image;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_and_place() {
        let mut img = MetadataImage::new(3);
        let id = Uuid::new_v4();
        let replicas = (0..6).map(|p| vec![p % 2]).collect();
        img.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id,
            partitions: 6,
            configs: Default::default(),
            replicas,
        });
        assert_eq!(img.partition_count(), 6);
        let per_shard: Vec<usize> = (0..3).map(|s| img.partitions_of(0, ShardId(s)).len()).collect();
        assert_eq!(per_shard.iter().sum::<usize>(), 3, "broker 0 holds the even partitions");
        let tp = TopicPartition::new("t", 1);
        assert_eq!(img.leader(&tp), None, "broker 1 is not registered");
        let registration =
            BrokerRegistration { id: 1, epoch: 5, incarnation: Uuid::new_v4(), host: "h".into(), port: 1, rack: None };
        img.apply(&MetadataRecord::Broker(registration));
        assert_eq!(img.leader(&tp), None, "a new registration is fenced");
        img.apply(&MetadataRecord::BrokerFence { id: 1, epoch: 4, fenced: false });
        assert_eq!(img.leader(&tp), None, "a fence decision for an older epoch is ignored");
        img.apply(&MetadataRecord::BrokerFence { id: 1, epoch: 5, fenced: false });
        assert_eq!(img.leader(&tp), None, "live, but not elected yet");
        let elected = crate::cluster::election::reconcile(&img, false);
        assert_eq!(elected.len(), 3, "broker 1's partitions get it as leader; broker 0 is not registered");
        elected.iter().for_each(|r| img.apply(r));
        assert_eq!(img.leader(&tp), Some(1));
        assert_eq!(img.partition_state(&tp).map(|s| s.leader_epoch), Some(0));
        assert_eq!(img.leader_counts().get(&1), Some(&3));
        img.apply(&MetadataRecord::BrokerFence { id: 1, epoch: 5, fenced: true });
        assert_eq!(img.leader(&tp), None, "a fenced leader leads nothing");
        img.apply(&MetadataRecord::RemoveTopic { id });
        assert!(img.topic("t").is_none());
        assert_eq!(img.epoch, 9);
    }

    #[test]
    fn an_image_rebuilds_from_its_records() {
        let mut img = MetadataImage::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let topic = |name: &str, id, partitions| MetadataRecord::Topic {
            name: name.into(),
            id,
            partitions,
            configs: Default::default(),
            replicas: (0..partitions).map(|_| vec![7]).collect(),
        };
        img.apply(&topic("a", a, 3));
        img.apply(&topic("b", b, 1));
        img.apply(&MetadataRecord::Broker(BrokerRegistration {
            id: 7,
            epoch: 1,
            incarnation: Uuid::new_v4(),
            host: "h".into(),
            port: 9,
            rack: None,
        }));
        img.apply(&MetadataRecord::BrokerFence { id: 7, epoch: 1, fenced: false });
        crate::cluster::election::reconcile(&img, false).iter().for_each(|r| img.apply(r));
        img.apply(&MetadataRecord::RemoveTopic { id: a });
        img.apply(&MetadataRecord::ProducerIds { next_producer_id: 2000 });
        let mut copy = MetadataImage::new(2);
        for r in img.to_records() {
            copy.apply(&r);
        }
        assert_eq!(copy.topics, img.topics);
        assert_eq!(copy.removed, img.removed);
        assert_eq!(copy.next_producer_id, 2000);
        assert_eq!(copy.brokers, img.brokers);
        assert_eq!(copy.leader(&TopicPartition::new("b", 0)), Some(7));
        assert!(copy.topic("a").is_none());
    }
}
