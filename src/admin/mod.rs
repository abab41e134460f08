//! Administration from the command line (`weir groups`): a small blocking Kafka client and
//! the reports built with it. It speaks only the wire protocol, so it works against any
//! Kafka-compatible broker, Weir included.

pub mod client;
pub mod groups;
