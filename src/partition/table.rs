//! The partitions a data shard owns, by topic-partition. Shared (`Rc`) between the shard and
//! the services on it that use its partitions (the group coordinator, the internal-topic
//! appender); on that shard's executor only.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use super::Partition;
use crate::types::TopicPartition;

#[derive(Default)]
pub struct PartitionTable {
    partitions: RefCell<HashMap<TopicPartition, Rc<Partition>>>,
}

impl PartitionTable {
    pub fn get(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow().get(tp).cloned()
    }

    pub fn contains(&self, tp: &TopicPartition) -> bool {
        self.partitions.borrow().contains_key(tp)
    }

    /// Every partition, in no particular order.
    pub fn all(&self) -> Vec<Rc<Partition>> {
        self.partitions.borrow().values().cloned().collect()
    }

    pub fn insert(&self, partition: Rc<Partition>) {
        let tp = partition.tp().clone();
        let replaced = self.partitions.borrow_mut().insert(tp.clone(), partition);
        crate::invariant!(replaced.is_none(), "partition {tp} opened twice");
    }

    pub fn remove(&self, tp: &TopicPartition) -> Option<Rc<Partition>> {
        self.partitions.borrow_mut().remove(tp)
    }
}
