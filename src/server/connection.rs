//! One client connection: read size-prefixed frames, decode the header, dispatch, and write
//! responses in request order while later requests are already being read (pipelining, up
//! to `queued.max.requests` in flight).
//!
//! Anything Kafka would close the connection for (oversized or garbage frames, unknown API
//! keys, unsupported versions, undecodable bodies) closes this connection alone, with one
//! log line naming the peer, the API and the reason.

use std::cell::{Cell, RefCell};
use std::io::IoSlice;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes};
use futures::channel::oneshot;
use futures::future::{select, Either, Shared};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use nix::errno::Errno;
use nix::sys::socket::{sendmsg, MsgFlags};
use tracing::{debug, info, warn};

use super::api::{self, ConnectionContext, Pending, Principal, Reply, RequestContext};
use super::fetch_sessions::FetchSessionCache;
use super::frame_reader::{FrameReader, ReadError};
use super::log_limit::{LogKind, LogLimiter};
use super::request_memory::{RequestMemory, Reservation};
use crate::shard::Shard;

pub type ShutdownSignal = Shared<oneshot::Receiver<()>>;

/// A request being served and the memory its bytes hold until its response is written.
type InFlight = (Pending, Reservation);

pub async fn serve(
    shard: Rc<Shard>,
    stream: TcpStream,
    shutdown: ShutdownSignal,
    log_limit: Rc<LogLimiter>,
    memory: Option<Rc<RequestMemory>>,
    fetch_sessions: Rc<RefCell<FetchSessionCache>>,
) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let connection = ConnectionContext {
        peer,
        listener: api::PLAINTEXT,
        principal: Rc::new(Principal::anonymous()),
        memory,
        fetch_sessions,
    };
    // For vectored writes of responses in parts; valid while `writer` holds the stream.
    let fd = stream.as_raw_fd();
    let (reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<InFlight>(shard.config.inflight_requests_max);
    let last_activity = Rc::new(Cell::new(Instant::now()));
    let reading = Box::pin(read_requests(
        &shard,
        &connection,
        FrameReader::new(reader, connection.memory.clone()),
        tx,
        shutdown,
        last_activity.clone(),
        &log_limit,
    ));
    let writing = Box::pin(write_responses(peer, fd, writer, rx, last_activity));
    match select(reading, writing).await {
        // No more requests: let the responses in flight go out.
        Either::Left((_, writing)) => writing.await,
        // The writer stopped (socket error or a close): drop the reader too.
        Either::Right(_) => {}
    }
    debug!(?peer, "connection closed");
}

async fn read_requests<R: futures::io::AsyncRead + Unpin>(
    shard: &Rc<Shard>,
    connection: &ConnectionContext,
    mut frames: FrameReader<R>,
    tx: local_channel::LocalSender<InFlight>,
    shutdown: ShutdownSignal,
    last_activity: Rc<Cell<Instant>>,
    log_limit: &LogLimiter,
) {
    let max = shard.config.request_bytes_max;
    let peer = connection.peer;
    let limits = StallLimits {
        idle: Duration::from_millis(shard.config.connection_idle_ms),
        receive: Duration::from_millis(shard.config.request_receive_timeout_ms),
    };
    let frame_started = frames.frame_started();
    // Stopping: take no new requests, and a client stalled mid-frame does not hold up the
    // drain. An idle connection, or one whose request stops arriving half way, is closed:
    // thousands of them would otherwise shut out every new client. One watch for the whole
    // connection (it re-reads the activity marks), not a new timer per request.
    let mut ended = select(shutdown.clone(), Box::pin(limits.watch(&last_activity, &frame_started)));
    loop {
        let (mut body, reservation) = match select(Box::pin(frames.next_frame(max)), &mut ended).await {
            Either::Left((Ok(frame), _)) => {
                last_activity.set(Instant::now());
                frame
            }
            Either::Left((Err(ReadError::Frame(e)), _)) => {
                if log_limit.allow(LogKind::BadFrame) {
                    warn!(?peer, error = %e, "closing connection: bad frame");
                }
                return;
            }
            Either::Left((Err(e), _)) => {
                debug!(?peer, reason = %e, "connection ends");
                return;
            }
            Either::Right((Either::Right((Stall::Idle, _)), _)) => {
                debug!(
                    ?peer,
                    idle_ms = limits.idle.as_millis() as u64,
                    "closing idle connection (connections.max.idle.ms)"
                );
                return;
            }
            Either::Right((Either::Right((Stall::SlowRequest, _)), _)) => {
                if log_limit.allow(LogKind::SlowRequest) {
                    info!(
                        ?peer,
                        limit_ms = limits.receive.as_millis() as u64,
                        "closing connection: a request did not arrive whole in time (weir.request.receive.timeout.ms)"
                    );
                }
                return;
            }
            Either::Right(_) => return,
        };
        let pending = match decode_and_dispatch(shard, connection, &mut body).await {
            Ok(p) => p,
            Err((api, reason)) => {
                if log_limit.allow(LogKind::BadRequest) {
                    warn!(?peer, api = %api, reason = %reason, "closing connection: bad request");
                }
                return;
            }
        };
        if tx.send((pending, reservation)).await.is_err() {
            return;
        }
    }
}

async fn decode_and_dispatch(
    shard: &Rc<Shard>,
    connection: &ConnectionContext,
    body: &mut Bytes,
) -> Result<Pending, (String, String)> {
    if body.len() < 8 {
        return Err(("?".into(), format!("request of {} bytes is shorter than a header", body.len())));
    }
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let api = ApiKey::try_from(key).map_err(|_| (format!("key {key}"), "unknown API key".to_string()))?;
    let name = format!("{api:?} v{version}");
    let header_version = api.request_header_version(version);
    let header =
        RequestHeader::decode(body, header_version).map_err(|e| (name.clone(), format!("bad request header: {e}")))?;
    let ctx = RequestContext {
        api,
        version: header.request_api_version,
        correlation_id: header.correlation_id,
        client_id: header.client_id.unwrap_or_default(),
        peer: connection.peer,
        listener: connection.listener,
        principal: connection.principal.clone(),
        memory: connection.memory.clone(),
        fetch_sessions: connection.fetch_sessions.clone(),
    };
    api::dispatch(shard, &ctx, std::mem::take(body)).await.map_err(|e| (name, e.to_string()))
}

/// Why a connection is closed for stalling.
enum Stall {
    /// Nothing read or written for `connections.max.idle.ms`.
    Idle,
    /// A request began to arrive and did not finish within `weir.request.receive.timeout.ms`.
    SlowRequest,
}

struct StallLimits {
    idle: Duration,
    receive: Duration,
}

impl StallLimits {
    /// Resolves when the connection has stalled; re-reads the activity marks each time it
    /// wakes, so a busy connection never sees it resolve. Dropping it cancels nothing but a
    /// timer (the frame read it races keeps its state in the `FrameReader`).
    async fn watch(&self, last_activity: &Cell<Instant>, frame_started: &Cell<Option<Instant>>) -> Stall {
        loop {
            let idle_at = last_activity.get() + self.idle;
            let slow_at = frame_started.get().map(|t| t + self.receive);
            let now = Instant::now();
            if slow_at.is_some_and(|at| now >= at) {
                return Stall::SlowRequest;
            }
            if now >= idle_at {
                return Stall::Idle;
            }
            let next = slow_at.map_or(idle_at, |at| at.min(idle_at));
            // A request may begin while this sleeps: wake at least every half receive
            // timeout to notice it (a stalled request is closed within 1.5 times the limit).
            glommio::timer::sleep((next - now).min(self.receive / 2)).await;
        }
    }
}

async fn write_responses<W: futures::io::AsyncWrite + Unpin>(
    peer: Option<SocketAddr>,
    fd: RawFd,
    mut writer: W,
    rx: local_channel::LocalReceiver<InFlight>,
    last_activity: Rc<Cell<Instant>>,
) {
    while let Some((pending, _reservation)) = rx.recv().await {
        match pending.await {
            Reply::Frame(buf) => {
                if writer.write_all(buf.chunk()).await.is_err() {
                    return;
                }
                last_activity.set(Instant::now());
            }
            Reply::Parts(parts) => {
                if write_parts(fd, &mut writer, &parts).await.is_err() {
                    return;
                }
                last_activity.set(Instant::now());
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                info!(?peer, reason = %reason, "closing connection");
                let _ = writer.flush().await;
                return;
            }
        }
    }
    let _ = writer.flush().await;
}

/// The most parts one `sendmsg` takes (Linux allows 1024).
const PARTS_PER_SEND: usize = 64;

/// Writes a frame's `parts` in order, each `sendmsg` taking as many as the socket has room
/// for. When it has none, the rest of the current part goes through `writer`, which waits
/// for room the way every other write does.
async fn write_parts<W: futures::io::AsyncWrite + Unpin>(
    fd: RawFd,
    writer: &mut W,
    parts: &[Bytes],
) -> std::io::Result<()> {
    // A response with nothing referenced is one part: written as any frame, no slice list.
    if let [whole] = parts {
        return writer.write_all(whole).await;
    }
    let (mut next, mut skip) = (0usize, 0usize);
    while next < parts.len() {
        let slices: Vec<IoSlice<'_>> = parts[next..]
            .iter()
            .take(PARTS_PER_SEND)
            .enumerate()
            .map(|(i, p)| IoSlice::new(if i == 0 { &p[skip..] } else { p }))
            .collect();
        match sendmsg::<()>(fd, &slices, &[], MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL, None) {
            Ok(mut sent) => {
                while sent > 0 {
                    let left = parts[next].len() - skip;
                    if sent < left {
                        skip += sent;
                        break;
                    }
                    sent -= left;
                    (next, skip) = (next + 1, 0);
                }
            }
            Err(Errno::EAGAIN) => {
                writer.write_all(&parts[next][skip..]).await?;
                (next, skip) = (next + 1, 0);
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
