//! The API registry: one table says which APIs and versions are implemented; ApiVersions is
//! answered from it and dispatch refuses anything outside it. One file per Kafka API.
//!
//! Every handler returns a [`Pending`] response: work that must keep request order (the
//! appends of a produce, topic changes) is done before the handler returns; waiting (for
//! durability, for a long poll) happens in the returned future, which the connection awaits
//! in request order while it reads the next request.

pub mod api_versions;
pub mod create_topics;
pub mod delete_groups;
pub mod delete_topics;
pub mod describe_groups;
pub mod describe_producers;
pub mod fetch;
pub mod find_coordinator;
pub mod heartbeat;
pub mod init_producer_id;
pub mod join_group;
pub mod leave_group;
pub mod list_groups;
pub mod list_offsets;
pub mod metadata;
pub mod offset_commit;
pub mod offset_fetch;
pub mod produce;
pub mod sync_group;

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable};
use thiserror::Error;

use crate::shard::Shard;

/// An API this broker implements, with the versions it implements fully.
#[derive(Debug, Clone, Copy)]
pub struct ApiSupport {
    pub key: ApiKey,
    pub min: i16,
    pub max: i16,
}

/// What is advertised in ApiVersions and accepted by dispatch. Produce is advertised from
/// v0 as Kafka does (librdkafka turns features off otherwise); v0-2 requests are answered
/// with UNSUPPORTED_FOR_MESSAGE_FORMAT since only magic-2 batches are stored.
pub const SUPPORTED_APIS: &[ApiSupport] = &[
    ApiSupport { key: ApiKey::Produce, min: 0, max: 11 },
    ApiSupport { key: ApiKey::Fetch, min: 4, max: 12 },
    ApiSupport { key: ApiKey::ListOffsets, min: 1, max: 7 },
    ApiSupport { key: ApiKey::Metadata, min: 0, max: 12 },
    ApiSupport { key: ApiKey::ApiVersions, min: 0, max: 3 },
    ApiSupport { key: ApiKey::CreateTopics, min: 2, max: 7 },
    ApiSupport { key: ApiKey::DeleteTopics, min: 1, max: 6 },
    ApiSupport { key: ApiKey::InitProducerId, min: 0, max: 4 },
    ApiSupport { key: ApiKey::DescribeProducers, min: 0, max: 0 },
    ApiSupport { key: ApiKey::FindCoordinator, min: 0, max: 4 },
    ApiSupport { key: ApiKey::JoinGroup, min: 0, max: 9 },
    ApiSupport { key: ApiKey::SyncGroup, min: 0, max: 5 },
    ApiSupport { key: ApiKey::Heartbeat, min: 0, max: 4 },
    ApiSupport { key: ApiKey::LeaveGroup, min: 0, max: 5 },
    ApiSupport { key: ApiKey::OffsetCommit, min: 2, max: 9 },
    ApiSupport { key: ApiKey::OffsetFetch, min: 1, max: 9 },
    ApiSupport { key: ApiKey::ListGroups, min: 0, max: 5 },
    ApiSupport { key: ApiKey::DescribeGroups, min: 0, max: 5 },
    ApiSupport { key: ApiKey::DeleteGroups, min: 0, max: 2 },
];

/// Who sent a request, as group members are described (DescribeGroups).
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub client_id: String,
    /// Kafka's form: `/<ip>`.
    pub client_host: String,
}

pub fn supported(key: ApiKey) -> Option<ApiSupport> {
    SUPPORTED_APIS.iter().copied().find(|a| a.key == key)
}

/// What the connection does once a request's response is ready.
pub enum Reply {
    /// A complete response frame (size prefix included).
    Frame(BytesMut),
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

pub fn decode<R: Decodable>(api: ApiKey, version: i16, body: &mut Bytes) -> Result<R, RequestError> {
    R::decode(body, version).map_err(|e| RequestError::Malformed { api, version, reason: e.to_string() })
}

/// A response that is ready now.
pub fn ready(reply: Reply) -> Pending {
    Box::pin(std::future::ready(reply))
}

/// Runs the handler for one request. `body` is what follows the request header.
pub async fn dispatch(
    shard: &Rc<Shard>,
    header: RequestHeader,
    mut body: Bytes,
    peer: Option<std::net::SocketAddr>,
) -> Result<Pending, RequestError> {
    let api = ApiKey::try_from(header.request_api_key).map_err(|_| RequestError::UnknownApi(header.request_api_key))?;
    let version = header.request_api_version;
    let cid = header.correlation_id;
    let Some(support) = supported(api) else { return Err(RequestError::UnknownApi(header.request_api_key)) };
    if api == ApiKey::ApiVersions {
        return Ok(ready(api_versions::handle(version, cid, &mut body)));
    }
    if version < support.min || version > support.max {
        return Err(RequestError::UnsupportedVersion { api, version });
    }
    let pending = match api {
        ApiKey::Produce if version < 3 => ready(produce::handle_legacy(version, cid, &mut body)?),
        ApiKey::Produce => produce::handle(shard, version, cid, decode(api, version, &mut body)?).await,
        ApiKey::Fetch => fetch::handle(shard, version, cid, decode(api, version, &mut body)?),
        ApiKey::ListOffsets => ready(list_offsets::handle(shard, version, cid, decode(api, version, &mut body)?).await),
        ApiKey::Metadata => ready(metadata::handle(shard, version, cid, decode(api, version, &mut body)?).await),
        ApiKey::CreateTopics => {
            ready(create_topics::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        ApiKey::DeleteTopics => {
            ready(delete_topics::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        ApiKey::InitProducerId => {
            ready(init_producer_id::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        ApiKey::DescribeProducers => {
            ready(describe_producers::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        ApiKey::FindCoordinator => {
            ready(find_coordinator::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        ApiKey::JoinGroup => {
            let context = RequestContext {
                client_id: header.client_id.as_ref().map(|c| c.to_string()).unwrap_or_default(),
                client_host: peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
            };
            join_group::handle(shard, version, cid, &context, decode(api, version, &mut body)?).await
        }
        ApiKey::SyncGroup => sync_group::handle(shard, version, cid, decode(api, version, &mut body)?).await,
        ApiKey::Heartbeat => heartbeat::handle(shard, version, cid, decode(api, version, &mut body)?).await,
        ApiKey::LeaveGroup => leave_group::handle(shard, version, cid, decode(api, version, &mut body)?).await,
        ApiKey::OffsetCommit => offset_commit::handle(shard, version, cid, decode(api, version, &mut body)?).await,
        ApiKey::OffsetFetch => offset_fetch::handle(shard, version, cid, decode(api, version, &mut body)?).await,
        ApiKey::ListGroups => ready(list_groups::handle(shard, version, cid, decode(api, version, &mut body)?).await),
        ApiKey::DescribeGroups => {
            ready(describe_groups::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        ApiKey::DeleteGroups => {
            ready(delete_groups::handle(shard, version, cid, decode(api, version, &mut body)?).await)
        }
        _ => return Err(RequestError::UnknownApi(header.request_api_key)),
    };
    Ok(pending)
}
