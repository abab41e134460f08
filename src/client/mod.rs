//! A Kafka client on glommio: one general client for everything in this repository that
//! talks to a broker as a client (the `weir groups` command, `weir-loadgen`; next, replica
//! fetchers and controller RPCs).
//!
//! - [`Connection`]: connect with a timeout, negotiate versions with ApiVersions (v3, else
//!   v0), then [`Connection::call`] typed kafka-protocol requests one at a time at the
//!   highest version both sides speak ([`CLIENT_VERSIONS`] is the one table of versions this
//!   client speaks), or [`Connection::call_version`] at a given one.
//! - [`Connection::into_pipeline`]: a writer and a reader task, for many requests in flight
//!   on one connection with responses handed over in order.
//! - [`read_metadata`], [`ClusterMetadata::leader`], [`find_coordinator`]: brokers,
//!   controller, partition leaders and group coordinators.
//!
//! Runs on whichever glommio executor creates the connection (connections are `!Send`; the
//! `weir` CLI makes a small one for `weir groups`). Every wait is bounded by the timeout the
//! caller gives; nothing here retries or reconnects (callers decide). Limits: one address per
//! connection (the first a host name resolves to, resolved blocking), no TLS or SASL,
//! response frames of at most 256 MiB unless set otherwise.

mod connection;
mod error;
mod metadata;
mod pipeline;
mod versions;

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::time::Duration;

use futures::future::{select, Either};

pub use connection::{decode_response, Connection, Sent, MAX_RESPONSE_BYTES};
pub use error::{check, ClientError};
pub use metadata::{
    broker_address, find_coordinator, find_transaction_coordinator, metadata_request, read_metadata, ClusterMetadata,
    Coordinator, LeaderError, PartitionMetadata, TopicMetadata,
};
pub use pipeline::{PipeEvent, PipeWriter};
pub use versions::{client_range, BrokerVersions, CLIENT_VERSIONS};

/// Runs `f` for at most `dur`; `None` when the time ran out (the future is dropped).
pub async fn with_timeout<F: Future>(dur: Duration, f: F) -> Option<F::Output> {
    match select(pin!(f), pin!(glommio::timer::sleep(dur))).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// The first socket address `addr` (`host:port`) resolves to. Blocks on DNS for host names.
pub fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    let connect_error = |source| ClientError::Connect { addr: addr.to_string(), source };
    addr.to_socket_addrs()
        .map_err(connect_error)?
        .next()
        .ok_or_else(|| connect_error(std::io::Error::other("no address")))
}

#[cfg(test)]
mod tests;
