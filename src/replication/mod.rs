//! Follower replication on the control shard: for every broker that leads partitions this
//! broker follows, `num.replica.fetchers` replica fetchers (`fetcher`; default one), each
//! sending that leader one Fetch for all of its share of them, as Kafka's followers do, and hands each partition's batches to the data shard
//! that owns its replica (`DataRequest::Follow`: append as stored, truncate, position).
//!
//! [`ReplicaFetchers::apply`] runs after every published image: it starts fetchers for new
//! leaders, stops those no partition needs any more, and tells each fetcher which
//! partitions it fetches, in which leader epoch.

mod fetcher;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use glommio::channels::shared_channel::ConnectedSender;

use crate::cluster::MetadataImage;
use crate::config::Config;
use crate::shard::DataRequest;
use crate::types::TopicPartition;
use fetcher::Fetcher;

pub struct ReplicaFetchers {
    config: Arc<Config>,
    data_shards: Vec<Rc<ConnectedSender<DataRequest>>>,
    /// By the leader they fetch from, and which of its `num.replica.fetchers` they are.
    fetchers: RefCell<BTreeMap<(i32, usize), Rc<Fetcher>>>,
}

impl ReplicaFetchers {
    pub fn new(config: Arc<Config>, data_shards: Vec<Rc<ConnectedSender<DataRequest>>>) -> Self {
        Self { config, data_shards, fetchers: RefCell::new(BTreeMap::new()) }
    }

    /// Follows what `image` says (after every data shard has applied it, so each follower
    /// replica already knows it follows).
    pub fn apply(&self, image: &MetadataImage) {
        let me = self.config.node_id;
        let per_leader = self.config.num_replica_fetchers.max(1);
        let mut wanted: BTreeMap<(i32, usize), BTreeMap<TopicPartition, i32>> = BTreeMap::new();
        for topic in image.topics.values() {
            for (p, state) in topic.states.iter().enumerate() {
                let p = p as i32;
                if state.leader < 0 || state.leader == me || !topic.replicas_of(p).contains(&me) {
                    continue;
                }
                let tp = TopicPartition::new(topic.name.clone(), p);
                // Spread over the leader's fetchers as partitions are over shards.
                let which = crate::cluster::image::owner_of(&tp, per_leader).0;
                wanted.entry((state.leader, which)).or_default().insert(tp, state.leader_epoch);
            }
        }
        let mut fetchers = self.fetchers.borrow_mut();
        fetchers.retain(|key, f| {
            let keep = wanted.contains_key(key);
            if !keep {
                f.stop();
            }
            keep
        });
        for ((leader, which), partitions) in wanted {
            let Some(broker) = image.brokers.get(&leader) else { continue };
            let addr = format!("{}:{}", broker.registration.host, broker.registration.port);
            let fetcher = fetchers.entry((leader, which)).or_insert_with(|| {
                Fetcher::start(leader, self.config.clone(), self.data_shards.clone(), image.data_shards)
            });
            fetcher.follow(addr, partitions);
        }
    }
}
