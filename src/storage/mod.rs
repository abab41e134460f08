//! Files and offsets: segmented logs, their indexes and recovery. Knows nothing of Kafka
//! requests; `partition` gives it Kafka's meaning. See docs/STORAGE.md for the on-disk layout.

pub mod device;
pub mod index;
pub mod leader_epochs;
pub mod log;
pub mod segment;

pub use log::{AppendInfo, Log, LogConfig, LogError, ReadResult};
