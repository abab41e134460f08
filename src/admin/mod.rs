//! Administration from the command line (`weir groups`, `weir cluster status`, `weir topics`,
//! `weir configs`): reports built on [`crate::client`].
//! They speak only the wire protocol, so they work against any Kafka-compatible broker,
//! Weir included.

pub mod cluster;
pub mod configs;
pub mod groups;
pub mod offsets;
pub mod topics;
pub mod transactions;
