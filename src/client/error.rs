//! The client's errors: one type for every call, with a short kind name per class for error
//! counts (the load generator prints them). Pure data; the messages name the broker address
//! and, where there is one, the API and version.

use std::io;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;
use kafka_protocol::ResponseError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    /// Resolving the address or opening the TCP connection failed (refused, unreachable,
    /// timed out in the kernel's connect).
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: io::Error },
    /// A connect or a request got no answer in time. The connection is unusable after it.
    #[error("{what} to {addr} timed out after {after:?}")]
    Timeout { what: String, addr: String, after: Duration },
    /// Reading or writing failed, or the peer closed the connection.
    #[error("connection to {addr} failed: {source}")]
    Disconnected { addr: String, source: io::Error },
    #[error("{addr}: cannot encode {api:?} v{version}: {message}")]
    Encode { addr: String, api: ApiKey, version: i16, message: String },
    #[error("{addr}: cannot decode the {api:?} v{version} response: {message}")]
    Decode { addr: String, api: ApiKey, version: i16, message: String },
    /// No version of `api` both sides speak. `ours` is `None` when this client does not
    /// speak the API at all, `theirs` when the broker did not list it.
    #[error("{}", unsupported_message(.addr, *.api, *.ours, *.theirs))]
    Unsupported { addr: String, api: ApiKey, ours: Option<VersionRange>, theirs: Option<VersionRange> },
    /// The peer broke the protocol (bad frame size, wrong correlation id, ...).
    #[error("{addr}: {message}")]
    Protocol { addr: String, message: String },
    /// The broker answered with an error code where the caller needed a result.
    #[error("{what}: {error:?}")]
    Broker { what: String, error: ResponseError },
}

fn unsupported_message(addr: &str, api: ApiKey, ours: Option<VersionRange>, theirs: Option<VersionRange>) -> String {
    let range = |r: VersionRange| format!("v{}-{}", r.min, r.max);
    match ours {
        None => format!("this client does not speak {api:?} (asked of {addr})"),
        Some(ours) => format!(
            "{addr} does not support {api:?} {} (it has {})",
            range(ours),
            theirs.map_or_else(|| "none".to_string(), range)
        ),
    }
}

impl ClientError {
    /// The error-kind name used in error counts: `connect_failed`, `timeout`, `disconnect`,
    /// `protocol`, `unsupported_version` or `broker_error`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Connect { .. } => "connect_failed",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Disconnected { .. } => "disconnect",
            ClientError::Encode { .. } | ClientError::Decode { .. } | ClientError::Protocol { .. } => "protocol",
            ClientError::Unsupported { .. } => "unsupported_version",
            ClientError::Broker { .. } => "broker_error",
        }
    }
}

/// `Ok` for error code 0, else [`ClientError::Broker`] described by `what`.
pub fn check(code: i16, what: impl FnOnce() -> String) -> Result<(), ClientError> {
    match ResponseError::try_from_code(code) {
        None => Ok(()),
        Some(error) => Err(ClientError::Broker { what: what(), error }),
    }
}
