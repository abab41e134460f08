//! Weir: a Kafka-compatible broker, thread-per-core on glommio (io_uring).
//!
//! Layers, lower never importing higher:
//! `types, config -> protocol -> client -> storage -> partition -> cluster -> group, txn -> shard
//! -> replication -> controller -> server, admin -> runtime` (checked by `tests/layering.rs`).
//!
//! | module       | runs on            | what it is |
//! |--------------|--------------------|------------|
//! | `protocol`   | anywhere (pure)    | framing, record-batch header view and checks |
//! | `client`     | glommio executors  | a Kafka client: connect, negotiate versions, call, pipeline, metadata |
//! | `storage`    | owning data shard  | segmented log, indexes, group commit, recovery |
//! | `partition`  | owning data shard  | Kafka's partition: append, idempotence, durability by acks, reads, waiters |
//! | `cluster`    | every shard        | metadata records and the image |
//! | `group`      | owning data shard  | consumer-group state machine, records, the coordinator service |
//! | `txn`        | owning data shard  | transaction state machine, `__transaction_state` records, the transaction coordinator |
//! | `shard`      | data shards        | typed cross-shard messages, routing, per-shard bookkeeping |
//! | `replication`| control shard      | replica fetchers: followers fetch from their leaders |
//! | `controller` | control shard      | the control actor: metadata changes, producer-id blocks |
//! | `server`     | data shards        | listener, connections, the API registry, one file per Kafka API |
//! | `runtime`    | every executor     | the channel mesh, start and stop order |
//! | `admin`      | the `weir` CLI     | admin commands on `client` (`weir groups`) |

pub mod admin;
pub mod client;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod group;
pub mod partition;
pub mod protocol;
pub mod replication;
pub mod runtime;
pub mod server;
pub mod shard;
pub mod storage;
pub mod txn;
pub mod types;

#[cfg(test)]
mod test_support;
