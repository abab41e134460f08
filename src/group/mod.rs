//! Consumer groups, Kafka's classic protocol: the per-group state machine (`state`) and the
//! records that make groups and committed offsets durable in `__consumer_offsets`
//! (`records`), both pure; and the coordinator (`coordinator`), the service that runs them on
//! the shard that owns the group's `__consumer_offsets` partition, with its timers and appends.

pub mod coordinator;
pub mod records;
pub mod state;

/// The internal topic holding committed offsets and group metadata.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";
