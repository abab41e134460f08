//! How the broker shares its file-descriptor limit (`RLIMIT_NOFILE`), decided once at
//! start, before anything is opened.
//!
//! First what the broker cannot run without: the descriptors open already, each executor's
//! io_uring rings and eventfds, the listeners, the metadata quorum's files and a margin per
//! shard for short-lived opens (directory syncs, checkpoints, index files). What is left is
//! split between client connections and the shards' caches of open segment files
//! (`storage::open_files`), half each unless `max.connections` needs less. A partition needs
//! one open file while it is written, so the broker holds at most as many partitions as its
//! file caches together (`max.broker.partitions`, KIP-578's name): more could not all be
//! written at once, nor opened again after a restart without evicting each other's files.

/// Descriptors each executor holds for itself (io_uring rings, eventfds, timers).
pub const PER_EXECUTOR: u64 = 8;
/// Short-lived opens per data shard (directory syncs, checkpoints, index and snapshot files).
pub const TRANSIENT_PER_SHARD: u64 = 16;
/// The metadata quorum's log, snapshots and checkpoint files, and the data directory lock.
pub const METADATA_FILES: u64 = 16;
/// The least the segment-file caches are given, whatever the limit: a broker with fewer
/// cannot keep a handful of partitions open.
pub const OPEN_FILES_FLOOR: u64 = 16;

/// The broker's share-out of its descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPlan {
    /// `RLIMIT_NOFILE` (soft, after raising it to the hard limit).
    pub limit: u64,
    /// What the broker needs for itself before any connection or segment file.
    pub reserved: u64,
    /// Client connections the broker accepts at once (`max.connections`, or less when the
    /// limit leaves less).
    pub connections: usize,
    /// Segment files the data shards keep open, together (split evenly among them).
    pub open_files: usize,
    /// Partitions (replicas) this broker may hold: `max.broker.partitions`.
    pub broker_partitions: usize,
}

impl DescriptorPlan {
    /// For tests and tools that never open partitions at scale: nothing is bounded.
    pub fn unbounded() -> Self {
        DescriptorPlan {
            limit: u64::MAX,
            reserved: 0,
            connections: usize::MAX,
            open_files: usize::MAX,
            broker_partitions: usize::MAX,
        }
    }

    /// The plan for a descriptor `limit` when `open_now` are already in use.
    /// `open_files_max` and `broker_partitions_max` are the settings (0 = derive).
    pub fn new(
        limit: u64,
        open_now: u64,
        data_shards: usize,
        listeners: usize,
        connections_max: usize,
        open_files_max: u64,
        broker_partitions_max: usize,
    ) -> DescriptorPlan {
        let executors = data_shards as u64 + 1;
        let reserved = open_now
            + executors * PER_EXECUTOR
            + listeners as u64
            + METADATA_FILES
            + data_shards as u64 * TRANSIENT_PER_SHARD;
        let left = limit.saturating_sub(reserved);
        let connections = (connections_max as u64).min(left / 2).max(1);
        let mut open_files = left.saturating_sub(connections).max(OPEN_FILES_FLOOR);
        if open_files_max > 0 {
            open_files = open_files.min(open_files_max);
        }
        let broker_partitions = if broker_partitions_max > 0 { broker_partitions_max as u64 } else { open_files };
        DescriptorPlan {
            limit,
            reserved,
            connections: usize::try_from(connections).unwrap_or(usize::MAX),
            open_files: usize::try_from(open_files).unwrap_or(usize::MAX),
            broker_partitions: usize::try_from(broker_partitions).unwrap_or(usize::MAX),
        }
    }

    /// One data shard's share of the segment-file cache.
    pub fn open_files_per_shard(&self, data_shards: usize) -> usize {
        (self.open_files / data_shards.max(1)).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_common_limit_splits_what_is_left_between_connections_and_files() {
        let plan = DescriptorPlan::new(1024, 5, 2, 3, 10_000, 0, 0);
        assert_eq!(plan.reserved, 5 + 3 * PER_EXECUTOR + 3 + METADATA_FILES + 2 * TRANSIENT_PER_SHARD);
        let left = 1024 - plan.reserved;
        assert_eq!(plan.connections as u64, left / 2);
        assert_eq!(plan.open_files as u64, left - left / 2);
        assert_eq!(plan.broker_partitions, plan.open_files, "one open file per partition");
        assert_eq!(plan.open_files_per_shard(2), plan.open_files / 2);
    }

    #[test]
    fn fewer_connections_leave_more_for_files_and_settings_cap() {
        let plan = DescriptorPlan::new(20_000, 5, 2, 3, 100, 0, 0);
        assert_eq!(plan.connections, 100);
        assert_eq!(plan.open_files as u64, 20_000 - plan.reserved - 100);
        let capped = DescriptorPlan::new(20_000, 5, 2, 3, 100, 500, 300);
        assert_eq!((capped.open_files, capped.broker_partitions), (500, 300));
    }

    #[test]
    fn a_tiny_limit_still_leaves_the_floor() {
        let plan = DescriptorPlan::new(64, 5, 2, 3, 10_000, 0, 0);
        assert_eq!(plan.open_files as u64, OPEN_FILES_FLOOR);
        assert!(plan.connections >= 1);
    }
}
