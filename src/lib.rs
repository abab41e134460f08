//! Weir: a Kafka-compatible broker, thread-per-core on glommio (io_uring).
//!
//! Layers, lower never importing higher:
//! `types, config -> protocol -> client -> storage -> partition -> cluster -> group -> shard -> server`;
//! `admin` (the CLI's commands) is built on `client`.
//!
//! | module      | runs on            | what it is |
//! |-------------|--------------------|------------|
//! | `protocol`  | anywhere (pure)    | framing, record-batch header view and checks |
//! | `client`    | glommio executors  | a Kafka client: connect, negotiate versions, call, pipeline, metadata |
//! | `storage`   | owning data shard  | segmented log, indexes, group commit, recovery |
//! | `partition` | owning data shard  | a log plus long-poll waiters |
//! | `cluster`   | control shard      | metadata records, the metadata log, the image |
//! | `group`     | owning data shard  | consumer-group state machine, `__consumer_offsets` records |
//! | `shard`     | every shard        | cross-shard messages, placement, shard state |
//! | `admin`     | the `weir` CLI     | admin commands on `client` (`weir groups`) |
//! | `server`    | data shards        | listener, connections, one file per Kafka API |

pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod group;
pub mod partition;
pub mod protocol;
pub mod server;
pub mod shard;
pub mod storage;
pub mod types;
