//! Kafka protocol connections on glommio: connect with a timeout, negotiate API versions with
//! ApiVersions, then either call request/response one at a time ([`Conn::call`]) or pipeline
//! requests with responses read by a separate task ([`Conn::into_pipeline`]).

use std::future::Future;
use std::net::{SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::future::{select, Either};
use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, CreateTopicsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
    RequestHeader, ResponseHeader,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};

use crate::clock;

/// Largest response frame accepted.
const MAX_FRAME: usize = 256 * 1024 * 1024;
const CLIENT_ID: &str = "weir-loadgen";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot resolve {addr}: {message}")]
    Resolve { addr: String, message: String },
    #[error("cannot connect to {addr}: {message}")]
    Connect { addr: String, message: String },
    #[error("{what} to {addr} timed out after {after:?}")]
    Timeout { what: &'static str, addr: String, after: Duration },
    #[error("connection to {addr} closed: {message}")]
    Disconnected { addr: String, message: String },
    #[error("{addr}: cannot encode {what}: {message}")]
    Encode { addr: String, what: &'static str, message: String },
    #[error("{addr}: cannot decode {what}: {message}")]
    Decode { addr: String, what: &'static str, message: String },
    #[error("{addr} does not support {api:?} v{ours_min}-{ours_max} (it has v{theirs_min}-{theirs_max})")]
    Unsupported { addr: String, api: ApiKey, ours_min: i16, ours_max: i16, theirs_min: i16, theirs_max: i16 },
    #[error("{addr}: {message}")]
    Protocol { addr: String, message: String },
}

impl ClientError {
    /// The error-kind name used in the run's error counts.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientError::Resolve { .. } | ClientError::Connect { .. } => "connect_failed",
            ClientError::Timeout { .. } => "timeout",
            ClientError::Disconnected { .. } => "disconnect",
            ClientError::Encode { .. } | ClientError::Decode { .. } | ClientError::Protocol { .. } => "protocol",
            ClientError::Unsupported { .. } => "unsupported_version",
        }
    }
}

/// Runs `f` for at most `dur`; `None` when the time ran out (the future is dropped).
pub async fn with_timeout<F: Future>(dur: Duration, f: F) -> Option<F::Output> {
    match select(pin!(f), pin!(glommio::timer::sleep(dur))).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// The request versions this client speaks, by API: (lowest, highest).
const OUR_VERSIONS: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 1, 12),
    (ApiKey::CreateTopics, 2, 7),
];

/// Versions chosen for one broker: the highest both sides speak.
#[derive(Debug, Clone, Copy, Default)]
pub struct Versions {
    pub produce: i16,
    pub fetch: i16,
    pub list_offsets: i16,
    pub metadata: i16,
    /// `None` when the broker has no CreateTopics we speak (topics must exist then).
    pub create_topics: Option<i16>,
}

/// Picks versions from a broker's ApiVersions ranges; an error names the first API we need
/// that the broker cannot serve in a version we speak.
pub fn negotiate(addr: &str, theirs: &[(i16, i16, i16)]) -> Result<Versions, ClientError> {
    let mut v = Versions::default();
    for &(api, ours_min, ours_max) in OUR_VERSIONS {
        let found = theirs.iter().find(|(k, _, _)| *k == api as i16);
        let pick = found.and_then(|&(_, tmin, tmax)| {
            let hi = ours_max.min(tmax);
            (hi >= ours_min.max(tmin)).then_some(hi)
        });
        match (api, pick) {
            (ApiKey::Produce, Some(x)) => v.produce = x,
            (ApiKey::Fetch, Some(x)) => v.fetch = x,
            (ApiKey::ListOffsets, Some(x)) => v.list_offsets = x,
            (ApiKey::Metadata, Some(x)) => v.metadata = x,
            (ApiKey::CreateTopics, x) => v.create_topics = x,
            (_, None) => {
                let (theirs_min, theirs_max) = found.map(|&(_, a, b)| (a, b)).unwrap_or((-1, -1));
                return Err(ClientError::Unsupported {
                    addr: addr.to_string(),
                    api,
                    ours_min,
                    ours_max,
                    theirs_min,
                    theirs_max,
                });
            }
            _ => {}
        }
    }
    Ok(v)
}

pub fn resolve(addr: &str) -> Result<SocketAddr, ClientError> {
    let mut addrs =
        addr.to_socket_addrs().map_err(|e| ClientError::Resolve { addr: addr.to_string(), message: e.to_string() })?;
    addrs.next().ok_or_else(|| ClientError::Resolve { addr: addr.to_string(), message: "no addresses".into() })
}

/// Encodes a size-prefixed request frame into `buf` (cleared first).
fn encode_request<R: Request>(
    buf: &mut BytesMut,
    addr: &str,
    version: i16,
    correlation_id: i32,
    req: &R,
) -> Result<(), ClientError> {
    let enc = |e: anyhow::Error| ClientError::Encode {
        addr: addr.to_string(),
        what: api_name::<R>(),
        message: e.to_string(),
    };
    buf.clear();
    buf.put_i32(0);
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(StrBytes::from_static_str(CLIENT_ID));
    header.encode(buf, R::header_version(version)).map_err(enc)?;
    req.encode(buf, version).map_err(enc)?;
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn api_name<R: Request>() -> &'static str {
    match ApiKey::try_from(R::KEY) {
        Ok(ApiKey::Produce) => "Produce",
        Ok(ApiKey::Fetch) => "Fetch",
        Ok(ApiKey::ListOffsets) => "ListOffsets",
        Ok(ApiKey::Metadata) => "Metadata",
        Ok(ApiKey::CreateTopics) => "CreateTopics",
        Ok(ApiKey::ApiVersions) => "ApiVersions",
        _ => "request",
    }
}

/// Decodes a response body (after the size prefix): the correlation id and the response.
pub fn decode_response<R: Request>(
    addr: &str,
    version: i16,
    mut body: Bytes,
) -> Result<(i32, R::Response), ClientError> {
    let dec = |e: anyhow::Error| ClientError::Decode {
        addr: addr.to_string(),
        what: api_name::<R>(),
        message: e.to_string(),
    };
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(dec)?;
    let resp = R::Response::decode(&mut body, version).map_err(dec)?;
    Ok((header.correlation_id, resp))
}

async fn read_frame<S: futures::io::AsyncRead + Unpin>(reader: &mut S, addr: &str) -> Result<Bytes, ClientError> {
    let closed = |e: std::io::Error| ClientError::Disconnected { addr: addr.to_string(), message: e.to_string() };
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.map_err(closed)?;
    let len = i32::from_be_bytes(prefix);
    if len < 0 || len as usize > MAX_FRAME {
        return Err(ClientError::Protocol {
            addr: addr.to_string(),
            message: format!("bad response frame size {len}"),
        });
    }
    let mut body = BytesMut::zeroed(len as usize);
    reader.read_exact(&mut body).await.map_err(closed)?;
    Ok(body.freeze())
}

/// One connection, one request at a time.
pub struct Conn {
    stream: TcpStream,
    pub addr: String,
    pub versions: Versions,
    next_cid: i32,
    buf: BytesMut,
}

impl Conn {
    /// Connects (within `timeout`) and negotiates versions with ApiVersions.
    pub async fn connect(addr: &str, timeout: Duration) -> Result<Conn, ClientError> {
        let sock = resolve(addr)?;
        let stream = match with_timeout(timeout, TcpStream::connect_timeout(sock, timeout)).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(ClientError::Connect { addr: addr.to_string(), message: e.to_string() }),
            None => return Err(ClientError::Timeout { what: "connect", addr: addr.to_string(), after: timeout }),
        };
        let _ = stream.set_nodelay(true);
        let mut conn =
            Conn { stream, addr: addr.to_string(), versions: Versions::default(), next_cid: 1, buf: BytesMut::new() };
        conn.versions = conn.api_versions(timeout).await?;
        Ok(conn)
    }

    async fn api_versions(&mut self, timeout: Duration) -> Result<Versions, ClientError> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = StrBytes::from_static_str(CLIENT_ID);
        req.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        // v3 first; a broker without it answers UNSUPPORTED_VERSION (35) in v0 format, which
        // may not decode as v3: then ask again with v0.
        let first = self.call_version(3, &req, timeout).await;
        let resp = match first {
            Ok(r) if r.error_code == 0 => r,
            Ok(_) | Err(ClientError::Decode { .. }) => {
                self.call_version(0, &ApiVersionsRequest::default(), timeout).await?
            }
            Err(e) => return Err(e),
        };
        if resp.error_code != 0 {
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!("ApiVersions failed: {}", crate::errors::kafka_error_name(resp.error_code)),
            });
        }
        let theirs: Vec<(i16, i16, i16)> =
            resp.api_keys.iter().map(|k| (k.api_key, k.min_version, k.max_version)).collect();
        negotiate(&self.addr, &theirs)
    }

    /// Sends `req` at `version` and waits for its response.
    pub async fn call_version<R: Request>(
        &mut self,
        version: i16,
        req: &R,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        encode_request(&mut self.buf, &self.addr, version, cid, req)?;
        let addr = self.addr.clone();
        let stream = &mut self.stream;
        let buf = &self.buf;
        let exchange = async move {
            stream
                .write_all(buf)
                .await
                .map_err(|e| ClientError::Disconnected { addr: addr.clone(), message: e.to_string() })?;
            read_frame(stream, &addr).await
        };
        let body = match with_timeout(timeout, exchange).await {
            Some(r) => r?,
            None => {
                return Err(ClientError::Timeout { what: api_name::<R>(), addr: self.addr.clone(), after: timeout })
            }
        };
        let (got, resp) = decode_response::<R>(&self.addr, version, body)?;
        if got != cid {
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!("response correlation id {got}, expected {cid}"),
            });
        }
        Ok(resp)
    }

    pub async fn metadata(
        &mut self,
        req: &MetadataRequest,
        timeout: Duration,
    ) -> Result<kafka_protocol::messages::MetadataResponse, ClientError> {
        self.call_version(self.versions.metadata, req, timeout).await
    }

    pub async fn list_offsets(
        &mut self,
        req: &ListOffsetsRequest,
        timeout: Duration,
    ) -> Result<kafka_protocol::messages::ListOffsetsResponse, ClientError> {
        self.call_version(self.versions.list_offsets, req, timeout).await
    }

    pub async fn create_topics(
        &mut self,
        req: &CreateTopicsRequest,
        timeout: Duration,
    ) -> Result<kafka_protocol::messages::CreateTopicsResponse, ClientError> {
        let Some(v) = self.versions.create_topics else {
            return Err(ClientError::Unsupported {
                addr: self.addr.clone(),
                api: ApiKey::CreateTopics,
                ours_min: 2,
                ours_max: 7,
                theirs_min: -1,
                theirs_max: -1,
            });
        };
        self.call_version(v, req, timeout).await
    }

    pub async fn fetch(
        &mut self,
        req: &FetchRequest,
        timeout: Duration,
    ) -> Result<kafka_protocol::messages::FetchResponse, ClientError> {
        self.call_version(self.versions.fetch, req, timeout).await
    }

    /// Splits into a writer for pipelined requests and a task that reads every response
    /// frame and hands it to `sink` with its arrival time (or the reason the connection ended).
    pub fn into_pipeline<F>(self, sink: F) -> (PipeWriter, glommio::Task<()>)
    where
        F: Fn(PipeEvent) + 'static,
    {
        let Conn { stream, addr, versions, next_cid, buf } = self;
        let (reader, writer) = stream.split();
        let reader_addr = addr.clone();
        let task = glommio::spawn_local(read_loop(BufReader::with_capacity(64 * 1024, reader), reader_addr, sink));
        (PipeWriter { writer, addr, versions, next_cid, buf }, task)
    }
}

/// What a pipeline's reader task reports.
pub enum PipeEvent {
    /// A response frame (size prefix removed) and the monotonic time it was read.
    Frame { body: Bytes, at_us: u64 },
    /// The connection ended; no more frames follow.
    Closed(ClientError),
}

async fn read_loop<F: Fn(PipeEvent)>(mut reader: BufReader<ReadHalf<TcpStream>>, addr: String, sink: F) {
    loop {
        match read_frame(&mut reader, &addr).await {
            Ok(body) => sink(PipeEvent::Frame { body, at_us: clock::now_us() }),
            Err(e) => {
                sink(PipeEvent::Closed(e));
                return;
            }
        }
    }
}

/// The writing side of a pipelined connection.
pub struct PipeWriter {
    writer: WriteHalf<TcpStream>,
    pub addr: String,
    pub versions: Versions,
    next_cid: i32,
    buf: BytesMut,
}

impl PipeWriter {
    /// Writes one request; returns its correlation id. Responses come back in order.
    pub async fn send<R: Request>(&mut self, version: i16, req: &R) -> Result<i32, ClientError> {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        encode_request(&mut self.buf, &self.addr, version, cid, req)?;
        self.writer
            .write_all(&self.buf)
            .await
            .map_err(|e| ClientError::Disconnected { addr: self.addr.clone(), message: e.to_string() })?;
        Ok(cid)
    }

    pub async fn send_produce(&mut self, req: &ProduceRequest) -> Result<i32, ClientError> {
        let v = self.versions.produce;
        self.send(v, req).await
    }

    pub async fn close(mut self) {
        let _ = self.writer.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_picks_the_highest_common_version() {
        let theirs = [(0, 3, 11), (1, 4, 12), (2, 1, 7), (3, 0, 12), (19, 2, 7), (18, 0, 3)];
        let v = negotiate("b:1", &theirs).expect("negotiates");
        assert_eq!((v.produce, v.fetch, v.list_offsets, v.metadata, v.create_topics), (9, 12, 7, 12, Some(7)));
        let old = [(0, 0, 5), (1, 0, 8), (2, 0, 3), (3, 0, 5)];
        let v = negotiate("b:1", &old).expect("negotiates");
        assert_eq!((v.produce, v.fetch, v.create_topics), (5, 8, None));
        let err = negotiate("b:1", &[(0, 0, 2), (1, 4, 12), (2, 1, 7), (3, 0, 12)]).expect_err("no produce v3+");
        assert!(err.to_string().contains("Produce"), "{err}");
    }
}
