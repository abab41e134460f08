//! One client connection: read size-prefixed frames, decode the header, dispatch, and write
//! responses in request order while later requests are already being read (pipelining, up
//! to `queued.max.requests` in flight).
//!
//! Anything Kafka would close the connection for (oversized or garbage frames, unknown API
//! keys, unsupported versions, undecodable bodies) closes this connection alone, with one
//! log line naming the peer, the API and the reason.

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::{Buf, Bytes, BytesMut};
use futures::channel::oneshot;
use futures::future::{select, Either, Shared};
use futures::io::{AsyncReadExt, AsyncWriteExt, BufReader};
use glommio::channels::local_channel;
use glommio::net::TcpStream;
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tracing::{debug, info, warn};

use super::api::{self, Pending, Reply};
use crate::protocol::frame;
use crate::shard::Shard;

/// Bytes the reader asks the socket for at once.
const READ_BUFFER_BYTES: usize = 64 * 1024;

pub type ShutdownSignal = Shared<oneshot::Receiver<()>>;

pub async fn serve(shard: Rc<Shard>, stream: TcpStream, shutdown: ShutdownSignal) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let (reader, writer) = stream.split();
    let (tx, rx) = local_channel::new_bounded::<Pending>(shard.config.inflight_requests_max);
    let reading =
        Box::pin(read_requests(&shard, peer, BufReader::with_capacity(READ_BUFFER_BYTES, reader), tx, shutdown));
    let writing = Box::pin(write_responses(peer, writer, rx));
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
    peer: Option<SocketAddr>,
    mut reader: R,
    tx: local_channel::LocalSender<Pending>,
    shutdown: ShutdownSignal,
) {
    let max = shard.config.request_bytes_max;
    loop {
        let mut prefix = [0u8; 4];
        match select(Box::pin(reader.read_exact(&mut prefix)), shutdown.clone()).await {
            Either::Left((Ok(()), _)) => {}
            Either::Left((Err(_), _)) => return, // peer closed
            Either::Right(_) => return,          // broker stopping: take no new requests
        }
        let len = match frame::body_len(prefix, max) {
            Ok(len) => len,
            Err(e) => {
                warn!(?peer, error = %e, "closing connection: bad frame");
                return;
            }
        };
        let mut body = BytesMut::zeroed(len);
        match select(Box::pin(reader.read_exact(&mut body)), shutdown.clone()).await {
            Either::Left((Ok(()), _)) => {}
            Either::Left((Err(_), _)) => {
                debug!(?peer, "connection closed mid-frame");
                return;
            }
            // Stopping: a client stalled mid-frame does not hold up the drain.
            Either::Right(_) => return,
        }
        let mut body = body.freeze();
        let pending = match decode_and_dispatch(shard, &mut body, peer).await {
            Ok(p) => p,
            Err((api, reason)) => {
                warn!(?peer, api = %api, reason = %reason, "closing connection: bad request");
                return;
            }
        };
        if tx.send(pending).await.is_err() {
            return;
        }
    }
}

async fn decode_and_dispatch(
    shard: &Rc<Shard>,
    body: &mut Bytes,
    peer: Option<SocketAddr>,
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
    api::dispatch(shard, header, std::mem::take(body), peer).await.map_err(|e| (name, e.to_string()))
}

async fn write_responses<W: futures::io::AsyncWrite + Unpin>(
    peer: Option<SocketAddr>,
    mut writer: W,
    rx: local_channel::LocalReceiver<Pending>,
) {
    while let Some(pending) = rx.recv().await {
        match pending.await {
            Reply::Frame(buf) => {
                if writer.write_all(buf.chunk()).await.is_err() {
                    return;
                }
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
