//! A blocking, one-request-at-a-time Kafka client over a std `TcpStream`, using
//! kafka-protocol's codecs. For admin commands, not for data paths.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};
use thiserror::Error;

/// Largest response accepted (a bound against a confused peer).
const RESPONSE_BYTES_MAX: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("connection to {addr} failed: {source}")]
    Io { addr: String, source: std::io::Error },
    #[error("{api:?} v{version}: {reason}")]
    Protocol { api: ApiKey, version: i16, reason: String },
}

pub struct Client {
    addr: String,
    stream: TcpStream,
    correlation_id: i32,
}

impl Client {
    pub fn connect(addr: &str, timeout: Duration) -> Result<Client, ClientError> {
        let connect_error = |source| ClientError::Connect { addr: addr.to_string(), source };
        let socket = std::net::ToSocketAddrs::to_socket_addrs(addr)
            .map_err(connect_error)?
            .next()
            .ok_or_else(|| connect_error(std::io::Error::other("no address")))?;
        let stream = TcpStream::connect_timeout(&socket, timeout).map_err(connect_error)?;
        stream.set_read_timeout(Some(timeout)).map_err(connect_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(connect_error)?;
        Ok(Client { addr: addr.to_string(), stream, correlation_id: 0 })
    }

    /// Sends `request` at `version` and waits for its response.
    pub fn call<R: Request>(&mut self, version: i16, request: &R) -> Result<R::Response, ClientError> {
        let api = ApiKey::try_from(R::KEY).map_err(|_| ClientError::Protocol {
            api: ApiKey::ApiVersions,
            version,
            reason: format!("unknown API key {}", R::KEY),
        })?;
        let protocol = |reason: String| ClientError::Protocol { api, version, reason };
        self.correlation_id += 1;
        let mut header = RequestHeader::default();
        header.request_api_key = R::KEY;
        header.request_api_version = version;
        header.correlation_id = self.correlation_id;
        header.client_id = Some(StrBytes::from_static_str("weir-cli"));
        let mut body = BytesMut::new();
        body.extend_from_slice(&[0; 4]);
        header.encode(&mut body, R::header_version(version)).map_err(|e| protocol(e.to_string()))?;
        request.encode(&mut body, version).map_err(|e| protocol(e.to_string()))?;
        let size = (body.len() - 4) as i32;
        body[..4].copy_from_slice(&size.to_be_bytes());
        let io = |source| ClientError::Io { addr: self.addr.clone(), source };
        self.stream.write_all(&body).map_err(io)?;
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).map_err(io)?;
        let size = usize::try_from(i32::from_be_bytes(size)).unwrap_or(usize::MAX);
        if size > RESPONSE_BYTES_MAX {
            return Err(protocol(format!("response of {size} bytes")));
        }
        let mut frame = vec![0u8; size];
        self.stream.read_exact(&mut frame).map_err(io)?;
        let mut frame = Bytes::from(frame);
        let header = ResponseHeader::decode(&mut frame, api.response_header_version(version))
            .map_err(|e| protocol(e.to_string()))?;
        if header.correlation_id != self.correlation_id {
            return Err(protocol(format!("response for request {} out of order", header.correlation_id)));
        }
        R::Response::decode(&mut frame, version).map_err(|e| protocol(e.to_string()))
    }
}
