//! The API registry: one table row per API (key, versions, handler) says what is
//! implemented; ApiVersions is answered from it and dispatch runs the row's handler, so
//! nothing can be advertised without a handler or handled without being advertised. One
//! file per Kafka API; every handler takes the same [`RequestContext`].
//!
//! Every handler returns a [`Pending`] response: work that must keep request order (the
//! appends of a produce, topic changes) is done before the handler returns; waiting (for
//! durability, for a long poll) happens in the returned future, which the connection awaits
//! in request order while it reads the next request.

pub mod add_offsets_to_txn;
pub mod add_partitions_to_txn;
pub mod alter_configs;
pub mod api_versions;
pub mod create_partitions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_records;
pub mod delete_topics;
pub mod describe_cluster;
pub mod describe_configs;
pub mod describe_groups;
pub mod describe_log_dirs;
pub mod describe_producers;
pub mod describe_quorum;
pub mod describe_topic_partitions;
pub mod describe_transactions;
pub mod elect_leaders;
pub mod end_txn;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod incremental_alter_configs;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod list_transactions;
pub mod metadata;
pub mod offset_commit;
pub mod offset_delete;
pub mod offset_fetch;
pub mod offset_for_leader_epoch;
pub mod produce;
pub mod sync_group;
pub mod txn_offset_commit;
pub mod write_txn_markers;

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::buf::ByteBufMut;
use kafka_protocol::protocol::{Decodable, Encodable, StrBytes};
use thiserror::Error;

use super::fetch_sessions::FetchSessionCache;
use super::request_memory::RequestMemory;
use crate::protocol::envelope::ClientOrigin;
use crate::protocol::parts;
use crate::shard::Shard;

/// The future a registry row's handler returns: the pending response, or a request the
/// connection must close on.
pub type HandlerFuture<'a> = Pin<Box<dyn Future<Output = Result<Pending, RequestError>> + 'a>>;
/// A registry row's handler: decodes the body (what follows the request header) and runs
/// the API's `handle`.
pub type Handler = for<'a> fn(&'a Rc<Shard>, &'a RequestContext, Bytes) -> HandlerFuture<'a>;

/// One implemented API: the versions it implements fully, and its handler.
#[derive(Clone, Copy)]
pub struct ApiEntry {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
    pub handler: Handler,
}

/// A registry row. `decoded`: the body is decoded into the API's request type and `handle`
/// answers at once (`Reply`) or later (`Pending`); `raw`: `handle` takes the undecoded body.
macro_rules! api {
    ($key:ident, $min:literal..=$max:literal, $module:ident, decoded) => {
        ApiEntry {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            handler: |shard, ctx, mut body| {
                Box::pin(async move { Ok($module::handle(shard, ctx, ctx.decode(&mut body)?).await.into_pending()) })
            },
        }
    };
    ($key:ident, $min:literal..=$max:literal, $module:ident, raw) => {
        ApiEntry {
            key: ApiKey::$key,
            min: $min,
            max: $max,
            handler: |shard, ctx, body| Box::pin($module::handle(shard, ctx, body)),
        }
    };
}

/// What a handler returns: a response ready now, or one that is still pending.
pub trait IntoPending {
    fn into_pending(self) -> Pending;
}

impl IntoPending for Reply {
    fn into_pending(self) -> Pending {
        ready(self)
    }
}

impl IntoPending for Pending {
    fn into_pending(self) -> Pending {
        self
    }
}

/// The registry: what ApiVersions advertises is exactly what dispatch accepts, one row per
/// API. Produce is advertised from v0 as Kafka does (librdkafka turns features off
/// otherwise); v0-2 requests are answered with UNSUPPORTED_FOR_MESSAGE_FORMAT since only
/// magic-2 batches are stored.
pub const REGISTRY: &[ApiEntry] = &[
    api!(Produce, 0..=11, produce, raw),
    api!(Fetch, 4..=12, fetch, decoded),
    api!(ListOffsets, 1..=10, list_offsets, decoded),
    api!(DeleteRecords, 0..=2, delete_records, decoded),
    api!(DescribeLogDirs, 0..=4, describe_log_dirs, raw),
    api!(OffsetForLeaderEpoch, 2..=4, offset_for_leader_epoch, decoded),
    api!(Metadata, 0..=12, metadata, decoded),
    api!(DescribeTopicPartitions, 0..=0, describe_topic_partitions, decoded),
    api!(ApiVersions, 0..=3, api_versions, raw),
    api!(CreateTopics, 2..=7, create_topics, decoded),
    api!(DeleteTopics, 1..=6, delete_topics, decoded),
    api!(InitProducerId, 0..=4, init_producer_id, decoded),
    api!(DescribeProducers, 0..=0, describe_producers, decoded),
    api!(AddPartitionsToTxn, 0..=4, add_partitions_to_txn, decoded),
    api!(AddOffsetsToTxn, 0..=3, add_offsets_to_txn, decoded),
    api!(EndTxn, 0..=3, end_txn, decoded),
    api!(TxnOffsetCommit, 0..=3, txn_offset_commit, decoded),
    api!(WriteTxnMarkers, 1..=1, write_txn_markers, decoded),
    api!(DescribeTransactions, 0..=0, describe_transactions, decoded),
    api!(ListTransactions, 0..=1, list_transactions, decoded),
    api!(FindCoordinator, 0..=4, find_coordinator, decoded),
    api!(JoinGroup, 0..=9, join_group, decoded),
    api!(SyncGroup, 0..=5, sync_group, decoded),
    api!(Heartbeat, 0..=4, heartbeat, decoded),
    api!(LeaveGroup, 0..=5, leave_group, decoded),
    api!(OffsetCommit, 2..=9, offset_commit, decoded),
    api!(OffsetFetch, 1..=9, offset_fetch, decoded),
    api!(ListGroups, 0..=5, list_groups, decoded),
    api!(DescribeGroups, 0..=5, describe_groups, decoded),
    api!(DeleteGroups, 0..=2, delete_groups, decoded),
    api!(OffsetDelete, 0..=0, offset_delete, decoded),
    api!(DescribeQuorum, 0..=2, describe_quorum, decoded),
    api!(DescribeCluster, 0..=2, describe_cluster, decoded),
    api!(CreatePartitions, 0..=3, create_partitions, decoded),
    api!(ElectLeaders, 0..=2, elect_leaders, decoded),
    api!(DescribeConfigs, 1..=4, describe_configs, decoded),
    api!(AlterConfigs, 0..=2, alter_configs, decoded),
    api!(IncrementalAlterConfigs, 0..=1, incremental_alter_configs, decoded),
];

pub fn supported(key: ApiKey) -> Option<&'static ApiEntry> {
    REGISTRY.iter().find(|a| a.key == key)
}

/// Listener names, as in Kafka's `listeners` setting.
pub const PLAINTEXT: &str = "PLAINTEXT";

/// Who a connection is. Without authentication every client is Kafka's anonymous user; an
/// authenticating listener (SASL, mTLS) replaces it after the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Kafka's principal type, `User`.
    pub kind: &'static str,
    pub name: String,
}

impl Principal {
    pub fn anonymous() -> Principal {
        Principal { kind: "User", name: "ANONYMOUS".into() }
    }
}

/// What a connection knows about its peer, shared by every request it reads.
#[derive(Debug, Clone)]
pub struct ConnectionContext {
    pub peer: Option<SocketAddr>,
    /// The listener the connection came in on (`PLAINTEXT`).
    pub listener: &'static str,
    pub principal: Rc<Principal>,
    /// The shard's budget for requests in flight (`queued.max.request.bytes`), if bounded.
    pub memory: Option<Rc<RequestMemory>>,
    /// The shard's fetch sessions (KIP-227).
    pub fetch_sessions: Rc<RefCell<FetchSessionCache>>,
}

/// One request's context: every handler takes it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub api: ApiKey,
    pub version: i16,
    pub correlation_id: i32,
    pub client_id: StrBytes,
    pub peer: Option<SocketAddr>,
    pub listener: &'static str,
    pub principal: Rc<Principal>,
    /// The shard's budget for requests in flight: Fetch reserves its response from it.
    pub memory: Option<Rc<RequestMemory>>,
    /// The shard's fetch sessions: Fetch opens, uses and closes them.
    pub fetch_sessions: Rc<RefCell<FetchSessionCache>>,
}

impl RequestContext {
    /// Decodes the request body at this request's version.
    pub fn decode<R: Decodable>(&self, body: &mut Bytes) -> Result<R, RequestError> {
        R::decode(body, self.version).map_err(|e| RequestError::Malformed {
            api: self.api,
            version: self.version,
            reason: e.to_string(),
        })
    }

    /// Who sent this request, for a broker that forwards it to the controller in an
    /// envelope; `None` when the peer's address is unknown.
    pub fn origin(&self) -> Option<ClientOrigin> {
        Some(ClientOrigin {
            principal_type: self.principal.kind.to_string(),
            principal_name: self.principal.name.clone(),
            host: self.peer?.ip(),
            client_id: self.client_id.to_string(),
            correlation_id: self.correlation_id,
        })
    }

    /// The client's host as Kafka shows it (DescribeGroups): `/<ip>`.
    pub fn client_host(&self) -> String {
        self.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default()
    }
}

/// What the connection does once a request's response is ready.
pub enum Reply {
    /// A complete response frame (size prefix included).
    Frame(BytesMut),
    /// A complete response frame in parts, written in order (`encode_frame_parts`).
    Parts(Vec<Bytes>),
    /// No response (acks=0 produce).
    Nothing,
    /// Close the connection, as Kafka does (e.g. an acks=0 produce that failed).
    Close(String),
}

pub type Pending = Pin<Box<dyn Future<Output = Reply>>>;

/// A request the connection must close on (Kafka closes rather than answers these).
#[derive(Debug, Error)]
pub enum RequestError {
    #[error("unknown API key {0}")]
    UnknownApi(i16),
    #[error("{api:?} v{version} is not supported")]
    UnsupportedVersion { api: ApiKey, version: i16 },
    #[error("cannot decode {api:?} v{version}: {reason}")]
    Malformed { api: ApiKey, version: i16, reason: String },
}

/// Encodes a response with its header into a size-prefixed frame.
pub fn encode_frame<R: Encodable>(api: ApiKey, version: i16, correlation_id: i32, response: &R) -> Reply {
    let header_version = api.response_header_version(version);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    // Sized up front: growing the buffer while encoding copies the records again and again.
    let size = header.compute_size(header_version).unwrap_or(0) + response.compute_size(version).unwrap_or(0);
    let mut buf = BytesMut::with_capacity(4 + size);
    buf.put_i32(0);
    let encoded = header.encode(&mut buf, header_version).and_then(|_| response.encode(&mut buf, version));
    match encoded {
        Ok(()) => {
            let size = (buf.len() - 4) as i32;
            buf[0..4].copy_from_slice(&size.to_be_bytes());
            Reply::Frame(buf)
        }
        Err(e) => Reply::Close(format!("cannot encode {api:?} v{version} response: {e}")),
    }
}

/// Encodes a response like [`encode_frame`], but without copying `records` (the byte
/// strings of stored batches it carries, in the order it carries them): the frame is a
/// list of parts that refer to them where they are (`protocol::parts`).
pub fn encode_frame_parts<R: Encodable>(
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    response: &R,
    records: impl IntoIterator<Item = Bytes>,
) -> Reply {
    let header_version = api.response_header_version(version);
    let mut header = ResponseHeader::default();
    header.correlation_id = correlation_id;
    let fail = |e: String| Reply::Close(format!("cannot encode {api:?} v{version} response: {e}"));
    let size = match header.compute_size(header_version).and_then(|h| Ok(h + response.compute_size(version)?)) {
        Ok(size) => size,
        Err(e) => return fail(e.to_string()),
    };
    let Ok(prefix) = i32::try_from(size) else { return fail(format!("{size} bytes")) };
    let records: Vec<Bytes> = records.into_iter().collect();
    let referenced: usize = records.iter().map(Bytes::len).filter(|&n| n >= parts::REFERENCE_MIN_BYTES).sum();
    let mut buf = parts::PartsBuf::new(records, (4 + size).saturating_sub(referenced));
    buf.put_i32(prefix);
    if let Err(e) = header.encode(&mut buf, header_version).and_then(|_| response.encode(&mut buf, version)) {
        return fail(e.to_string());
    }
    let encoded = buf.offset() - 4;
    if encoded != size {
        return fail(format!("{encoded} bytes encoded, {size} computed"));
    }
    Reply::Parts(buf.finish())
}

/// A response that is ready now.
pub fn ready(reply: Reply) -> Pending {
    Box::pin(std::future::ready(reply))
}

/// Runs the handler for one request: the registry row of its API, if the version is one
/// the row implements (ApiVersions answers any version itself, KIP-511).
pub async fn dispatch(shard: &Rc<Shard>, ctx: &RequestContext, body: Bytes) -> Result<Pending, RequestError> {
    let Some(entry) = supported(ctx.api) else { return Err(RequestError::UnknownApi(ctx.api as i16)) };
    if ctx.api != ApiKey::ApiVersions && !(entry.min..=entry.max).contains(&ctx.version) {
        return Err(RequestError::UnsupportedVersion { api: ctx.api, version: ctx.version });
    }
    (entry.handler)(shard, ctx, body).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_registry_has_one_row_per_api_with_sane_versions() {
        let mut keys: Vec<i16> = REGISTRY.iter().map(|a| a.key as i16).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), REGISTRY.len(), "an API has two rows");
        for a in REGISTRY {
            assert!(0 <= a.min && a.min <= a.max, "{:?}: v{}-{}", a.key, a.min, a.max);
            assert!(supported(a.key).is_some_and(|s| s.max == a.max));
        }
        assert!(supported(ApiKey::ApiVersions).is_some());
    }
}
