//! The Kafka listener on each data shard: accepting connections, reading frames, dispatching
//! to one handler per Kafka API, and writing responses in request order.

pub mod api;
pub mod connection;
pub mod frame_reader;
pub mod listener;
pub mod log_limit;
