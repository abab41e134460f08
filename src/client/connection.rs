//! One connection to a broker: connect with a timeout, negotiate versions with ApiVersions,
//! then call request/response one at a time ([`Connection::call`]), or split it into a
//! pipeline ([`Connection::into_pipeline`], in `pipeline.rs`).
//!
//! Runs on the glommio executor that connected it (`!Send`). A call that times out or fails
//! on the socket leaves the stream at an unknown point, so the connection refuses further
//! calls (connect again). Response frames are bounded by [`Connection::max_response_bytes`]
//! (256 MiB unless set); each frame is read whole into one buffer before it is decoded.

use std::io;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use kafka_protocol::ResponseError;

use super::error::ClientError;
use super::versions::BrokerVersions;
use super::{resolve, with_timeout};

/// Default bound on a response frame (a confused or hostile peer cannot make us allocate more).
pub const MAX_RESPONSE_BYTES: usize = 256 << 20;
/// How much longer than the kernel's connect timeout the executor waits for it.
const CONNECT_GRACE: Duration = Duration::from_secs(1);

/// What a sent request needs to read its response: its correlation id and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub correlation_id: i32,
    pub version: i16,
}

/// One negotiated connection, one request at a time.
pub struct Connection {
    pub(super) stream: TcpStream,
    pub(super) addr: String,
    pub(super) client_id: StrBytes,
    pub(super) broker: BrokerVersions,
    pub(super) next_correlation_id: i32,
    pub(super) buf: BytesMut,
    pub(super) max_response_bytes: usize,
    /// A call failed mid-exchange: the stream is out of step.
    pub(super) broken: bool,
}

impl Connection {
    /// Connects to `addr` (`host:port`) and negotiates versions with ApiVersions, each within
    /// `timeout`. `client_id` goes in every request header and as ApiVersions' software name,
    /// which Kafka brokers require to be letters, digits, `-` and `.` (e.g. `weir-cli`).
    /// Resolving a host name blocks the executor (getaddrinfo); give addresses where that matters.
    pub async fn connect(addr: &str, client_id: &str, timeout: Duration) -> Result<Connection, ClientError> {
        let socket = resolve(addr)?;
        let stream = match with_timeout(timeout + CONNECT_GRACE, TcpStream::connect_timeout(socket, timeout)).await {
            Some(Ok(s)) => s,
            Some(Err(e)) => return Err(ClientError::Connect { addr: addr.to_string(), source: io::Error::from(e) }),
            None => {
                return Err(ClientError::Timeout { what: "connect".into(), addr: addr.to_string(), after: timeout })
            }
        };
        // Requests are written whole; Nagle would only delay them.
        let _ = stream.set_nodelay(true);
        let mut conn = Connection {
            stream,
            addr: addr.to_string(),
            client_id: StrBytes::from_string(client_id.to_string()),
            broker: BrokerVersions::default(),
            next_correlation_id: 1,
            buf: BytesMut::new(),
            max_response_bytes: MAX_RESPONSE_BYTES,
            broken: false,
        };
        conn.broker = conn.api_versions(timeout).await?;
        Ok(conn)
    }

    /// ApiVersions v3; a broker without it answers UNSUPPORTED_VERSION in v0 format, which
    /// may not decode as v3: then ask again with v0.
    async fn api_versions(&mut self, timeout: Duration) -> Result<BrokerVersions, ClientError> {
        let mut request = ApiVersionsRequest::default();
        request.client_software_name = self.client_id.clone();
        request.client_software_version = StrBytes::from_static_str(env!("CARGO_PKG_VERSION"));
        let unsupported = ResponseError::UnsupportedVersion.code();
        let response = match self.call_version(&request, 3, timeout).await {
            Ok(r) if r.error_code == unsupported => {
                self.call_version(&ApiVersionsRequest::default(), 0, timeout).await?
            }
            Err(ClientError::Decode { .. }) => self.call_version(&ApiVersionsRequest::default(), 0, timeout).await?,
            Ok(r) => r,
            Err(e) => return Err(e),
        };
        if let Some(error) = ResponseError::try_from_code(response.error_code) {
            return Err(ClientError::Protocol {
                addr: self.addr.clone(),
                message: format!("ApiVersions failed: {error:?}"),
            });
        }
        Ok(BrokerVersions::from_response(&response))
    }

    /// The address this connection was opened to, as given.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version ranges the broker announced.
    pub fn broker_versions(&self) -> &BrokerVersions {
        &self.broker
    }

    /// The version [`Connection::call`] uses for `api`: the highest this client and the broker
    /// both speak; `Unsupported` when there is none.
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        self.broker.pick(&self.addr, api)
    }

    /// Response frames larger than this end the connection with a protocol error.
    pub fn set_max_response_bytes(&mut self, bytes: usize) {
        self.max_response_bytes = bytes;
    }

    /// Sends `request` at the highest version both sides speak and waits (at most `timeout`)
    /// for its response. The request must be valid at every version of its API in
    /// [`super::CLIENT_VERSIONS`]; when its fields depend on the version, ask
    /// [`Connection::version`] first and use [`Connection::call_version`].
    pub async fn call<R: Request>(&mut self, request: &R, timeout: Duration) -> Result<R::Response, ClientError> {
        let version = self.version(api_key::<R>(&self.addr)?)?;
        self.call_version(request, version, timeout).await
    }

    /// Sends `request` at `version` (not checked against the broker's range) and waits at most
    /// `timeout` for its response.
    pub async fn call_version<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        if self.broken {
            return Err(ClientError::Disconnected {
                addr: self.addr.clone(),
                source: io::Error::new(io::ErrorKind::NotConnected, "an earlier request on this connection failed"),
            });
        }
        let result = self.exchange(request, version, timeout).await;
        if let Err(e) = &result {
            // Nothing was sent after an encode error, and a decode error consumed its whole
            // frame; anything else leaves the stream out of step.
            if !matches!(e, ClientError::Decode { .. } | ClientError::Encode { .. }) {
                self.broken = true;
            }
        }
        result
    }

    async fn exchange<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, ClientError> {
        let api = api_key::<R>(&self.addr)?;
        let correlation_id = self.take_correlation_id();
        encode_request(&mut self.buf, &self.addr, &self.client_id, api, version, correlation_id, request)?;
        let (stream, buf, addr, max) = (&mut self.stream, &self.buf, &self.addr, self.max_response_bytes);
        let exchange = async move {
            stream.write_all(buf).await.map_err(|source| ClientError::Disconnected { addr: addr.clone(), source })?;
            read_frame(stream, addr, max).await
        };
        let body = match with_timeout(timeout, exchange).await {
            Some(r) => r?,
            None => {
                return Err(ClientError::Timeout { what: format!("{api:?}"), addr: self.addr.clone(), after: timeout })
            }
        };
        decode_response::<R>(&self.addr, Sent { correlation_id, version }, body)
    }

    pub(super) fn take_correlation_id(&mut self) -> i32 {
        let id = self.next_correlation_id;
        // Kafka correlation ids are any i32; wrapping keeps them distinct among those in flight.
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        id
    }
}

/// The API key of `R`; a protocol error for a request type kafka-protocol has no key for.
pub(super) fn api_key<R: Request>(addr: &str) -> Result<ApiKey, ClientError> {
    ApiKey::try_from(R::KEY)
        .map_err(|_| ClientError::Protocol { addr: addr.to_string(), message: format!("unknown API key {}", R::KEY) })
}

/// Encodes a size-prefixed request frame into `buf` (cleared first).
pub(super) fn encode_request<R: Request>(
    buf: &mut BytesMut,
    addr: &str,
    client_id: &StrBytes,
    api: ApiKey,
    version: i16,
    correlation_id: i32,
    request: &R,
) -> Result<(), ClientError> {
    let encode_error =
        |e: anyhow::Error| ClientError::Encode { addr: addr.to_string(), api, version, message: e.to_string() };
    buf.clear();
    buf.put_i32(0);
    let mut header = RequestHeader::default();
    header.request_api_key = R::KEY;
    header.request_api_version = version;
    header.correlation_id = correlation_id;
    header.client_id = Some(client_id.clone());
    header.encode(buf, R::header_version(version)).map_err(encode_error)?;
    request.encode(buf, version).map_err(encode_error)?;
    let size = i32::try_from(buf.len() - 4)
        .map_err(|_| encode_error(anyhow::anyhow!("request of {} bytes", buf.len() - 4)))?;
    buf[..4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

/// Decodes a response frame (size prefix removed) to the request `sent`; a protocol error
/// when its correlation id is not `sent`'s.
pub fn decode_response<R: Request>(addr: &str, sent: Sent, mut body: Bytes) -> Result<R::Response, ClientError> {
    let api = api_key::<R>(addr)?;
    let version = sent.version;
    let decode_error =
        |e: anyhow::Error| ClientError::Decode { addr: addr.to_string(), api, version, message: e.to_string() };
    let header = ResponseHeader::decode(&mut body, R::Response::header_version(version)).map_err(decode_error)?;
    if header.correlation_id != sent.correlation_id {
        return Err(ClientError::Protocol {
            addr: addr.to_string(),
            message: format!("response correlation id {}, expected {}", header.correlation_id, sent.correlation_id),
        });
    }
    R::Response::decode(&mut body, version).map_err(decode_error)
}

/// Reads one size-prefixed frame; returns its body.
pub(super) async fn read_frame<S: AsyncRead + Unpin>(
    reader: &mut S,
    addr: &str,
    max: usize,
) -> Result<Bytes, ClientError> {
    let disconnected = |source: io::Error| ClientError::Disconnected { addr: addr.to_string(), source };
    let mut prefix = [0u8; 4];
    reader.read_exact(&mut prefix).await.map_err(disconnected)?;
    let size = i32::from_be_bytes(prefix);
    // A response holds at least its correlation id.
    let len = usize::try_from(size).ok().filter(|&n| (4..=max).contains(&n)).ok_or_else(|| ClientError::Protocol {
        addr: addr.to_string(),
        message: format!("bad response frame size {size} (at most {max})"),
    })?;
    let mut body = BytesMut::zeroed(len);
    reader.read_exact(&mut body).await.map_err(disconnected)?;
    Ok(body.freeze())
}
