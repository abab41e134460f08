//! `weir-loadgen`: a load generator for Kafka-compatible brokers, thread-per-core on glommio.
//!
//! Producers batch like real clients and send each partition's batches to its leader;
//! consumers fetch their assigned partitions directly (no consumer groups) with long polls and
//! measure end-to-end latency from the send time each record carries in a header.

pub mod clock;
pub mod cluster;
pub mod compare;
pub mod consumer;
pub mod errors;
pub mod hlog;
pub mod payload;
pub mod producer;
pub mod progress;
pub mod rate;
pub mod results;
pub mod run;
pub mod signals;
pub mod stats;
pub mod transactional;
pub mod verify;
pub mod workload;
