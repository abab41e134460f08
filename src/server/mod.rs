//! The Kafka listener on each data shard: accepting connections, reading frames, dispatching
//! to one handler per Kafka API, and writing responses in request order. And the controller
//! listener on the control shard: the quorum's messages and broker-to-controller RPCs.

pub mod api;
pub mod connection;
pub mod controller_api;
pub mod controller_listener;
pub mod fetch_sessions;
pub mod frame_reader;
pub mod listener;
pub mod log_limit;
pub mod request_memory;
