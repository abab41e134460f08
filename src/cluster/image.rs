//! The metadata image: what every shard reads to answer Metadata and to find the owner of a
//! partition. Immutable once published; a change makes a new image (copy on write).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use uuid::Uuid;

use super::records::MetadataRecord;
use crate::types::{ShardId, TopicPartition};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default)]
pub struct MetadataImage {
    /// Bumped by every applied record.
    pub epoch: u64,
    pub topics: BTreeMap<String, Arc<TopicMeta>>,
    pub ids: HashMap<Uuid, String>,
    /// Data shards that partitions are spread over.
    pub data_shards: usize,
    /// The first producer id not yet handed out.
    pub next_producer_id: i64,
    /// Ids of deleted topics, so a restart can remove directories a crashed delete left
    /// (16 bytes per deleted topic).
    pub removed: BTreeSet<Uuid>,
}

impl MetadataImage {
    pub fn new(data_shards: usize) -> Self {
        assert!(data_shards > 0, "at least one data shard");
        Self { data_shards, ..Default::default() }
    }

    pub fn apply(&mut self, record: &MetadataRecord) {
        self.epoch += 1;
        match record {
            MetadataRecord::Topic { name, id, partitions, configs } => {
                let meta = TopicMeta { name: name.clone(), id: *id, partitions: *partitions, configs: configs.clone() };
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
        }
    }

    /// Records that rebuild this image from an empty one (a metadata snapshot).
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut records: Vec<MetadataRecord> =
            self.removed.iter().map(|id| MetadataRecord::RemoveTopic { id: *id }).collect();
        records.extend(self.topics.values().map(|t| MetadataRecord::Topic {
            name: t.name.clone(),
            id: t.id,
            partitions: t.partitions,
            configs: t.configs.clone(),
        }));
        records.push(MetadataRecord::ProducerIds { next_producer_id: self.next_producer_id });
        records
    }

    pub fn topic(&self, name: &str) -> Option<&Arc<TopicMeta>> {
        self.topics.get(name)
    }

    pub fn partition_count(&self) -> usize {
        self.topics.values().map(|t| t.partitions.max(0) as usize).sum()
    }

    /// The data shard that owns a partition: the topic's partitions go round-robin over the
    /// shards, starting at a shard picked by the topic name, so topics spread evenly.
    pub fn owner(&self, tp: &TopicPartition) -> ShardId {
        owner_of(tp, self.data_shards)
    }

    /// Every partition owned by `shard`, with its topic.
    pub fn partitions_of(&self, shard: ShardId) -> Vec<(TopicPartition, Arc<TopicMeta>)> {
        let mut out = Vec::new();
        for meta in self.topics.values() {
            for p in 0..meta.partitions {
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
    let start = crc32c::crc32c(tp.topic.as_bytes()) as usize;
    ShardId((start.wrapping_add(tp.partition.max(0) as usize)) % data_shards)
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
        img.apply(&MetadataRecord::Topic { name: "t".into(), id, partitions: 6, configs: Default::default() });
        assert_eq!(img.partition_count(), 6);
        let per_shard: Vec<usize> = (0..3).map(|s| img.partitions_of(ShardId(s)).len()).collect();
        assert_eq!(per_shard, vec![2, 2, 2]);
        img.apply(&MetadataRecord::RemoveTopic { id });
        assert!(img.topic("t").is_none());
        assert_eq!(img.epoch, 2);
    }

    #[test]
    fn an_image_rebuilds_from_its_records() {
        let mut img = MetadataImage::new(2);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        img.apply(&MetadataRecord::Topic { name: "a".into(), id: a, partitions: 3, configs: Default::default() });
        img.apply(&MetadataRecord::Topic { name: "b".into(), id: b, partitions: 1, configs: Default::default() });
        img.apply(&MetadataRecord::RemoveTopic { id: a });
        img.apply(&MetadataRecord::ProducerIds { next_producer_id: 2000 });
        let mut copy = MetadataImage::new(2);
        for r in img.to_records() {
            copy.apply(&r);
        }
        assert_eq!(copy.topics, img.topics);
        assert_eq!(copy.removed, img.removed);
        assert_eq!(copy.next_producer_id, 2000);
        assert!(copy.topic("a").is_none());
    }
}
