//! A pipelined connection: a writer that sends requests without waiting, and a reader task
//! that hands every response frame, in arrival (= request) order, to a callback.
//!
//! Runs on the connection's executor. The caller keeps its own queue of what it sent
//! ([`Sent`] per request) and decodes each frame with [`decode_response`](super::decode_response), which checks the
//! correlation id. The reader reads through a 64 KiB buffer, so many small responses cost
//! few reads; there is no bound on requests in flight here (the caller keeps one).
//! Dropping the reader task's handle stops it.

use bytes::BytesMut;
use futures::io::{AsyncWriteExt, BufReader, ReadHalf, WriteHalf};
use glommio::net::TcpStream;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Request, StrBytes};

use super::connection::{api_key, encode_request, read_frame, Connection, Sent};
use super::error::ClientError;
use super::versions::BrokerVersions;

/// Size of the reader's buffer.
const READ_BUFFER_BYTES: usize = 64 * 1024;

/// What a pipeline's reader task reports.
pub enum PipeEvent {
    /// A response frame (size prefix removed).
    Frame(bytes::Bytes),
    /// The connection ended; no more frames follow.
    Closed(ClientError),
}

impl Connection {
    /// Splits into a writer for pipelined requests and a task that reads every response frame
    /// and hands it to `sink` (or, last, the reason the connection ended). `sink` runs on the
    /// reader task as each frame arrives, so a caller that times responses takes the time there.
    pub fn into_pipeline<F>(self, sink: F) -> Result<(PipeWriter, glommio::Task<()>), ClientError>
    where
        F: Fn(PipeEvent) + 'static,
    {
        if self.broken {
            return Err(ClientError::Protocol {
                addr: self.addr,
                message: "cannot pipeline a connection an earlier request failed on".into(),
            });
        }
        let Connection { stream, addr, client_id, broker, next_correlation_id, buf, max_response_bytes, broken: _ } =
            self;
        let (reader, writer) = futures::io::AsyncReadExt::split(stream);
        let reader = BufReader::with_capacity(READ_BUFFER_BYTES, reader);
        let task = glommio::spawn_local(read_loop(reader, addr.clone(), max_response_bytes, sink));
        Ok((PipeWriter { writer, addr, client_id, broker, next_correlation_id, buf }, task))
    }
}

async fn read_loop<F: Fn(PipeEvent)>(mut reader: BufReader<ReadHalf<TcpStream>>, addr: String, max: usize, sink: F) {
    loop {
        match read_frame(&mut reader, &addr, max).await {
            Ok(body) => sink(PipeEvent::Frame(body)),
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
    addr: String,
    client_id: StrBytes,
    broker: BrokerVersions,
    next_correlation_id: i32,
    buf: BytesMut,
}

impl PipeWriter {
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The version [`PipeWriter::send`] uses for `api` (see [`Connection::version`]).
    pub fn version(&self, api: ApiKey) -> Result<i16, ClientError> {
        self.broker.pick(&self.addr, api)
    }

    /// Writes `request` at the highest version both sides speak. Its response comes to the
    /// reader's sink after those of every request sent before it.
    pub async fn send<R: Request>(&mut self, request: &R) -> Result<Sent, ClientError> {
        let version = self.version(api_key::<R>(&self.addr)?)?;
        self.send_version(request, version).await
    }

    /// Writes `request` at `version`.
    pub async fn send_version<R: Request>(&mut self, request: &R, version: i16) -> Result<Sent, ClientError> {
        let api = api_key::<R>(&self.addr)?;
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        encode_request(&mut self.buf, &self.addr, &self.client_id, api, version, correlation_id, request)?;
        self.writer
            .write_all(&self.buf)
            .await
            .map_err(|source| ClientError::Disconnected { addr: self.addr.clone(), source })?;
        Ok(Sent { correlation_id, version })
    }

    /// Closes the writing side (the reader ends when the broker closes its side).
    pub async fn close(mut self) {
        let _ = self.writer.close().await;
    }
}
