//! The controller listener (the `listeners` entry named in `controller.listener.names`), on
//! the control shard of a node with the controller role. It carries the quorum's Raft
//! messages between voters (one-way frames, `controller::transport`) and Kafka's
//! broker-to-controller RPCs (`controller_api`). Anything else — a client's Produce or
//! Metadata, an unknown key, a malformed frame — closes that connection alone, with one
//! rate-limited log line; nothing a peer sends can stop the quorum.

use std::rc::Rc;
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::io::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::Decodable;
use tracing::{debug, warn};

use super::api::{Reply, RequestError};
use super::controller_api;
use super::frame_reader::FrameReader;
use super::log_limit::{LogKind, LogLimiter};
use crate::client::with_timeout;
use crate::controller::transport::RAFT_MESSAGES_KEY;
use crate::controller::Controller;

pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).map_err(std::io::Error::from)
}

/// Accepts connections for as long as the control shard runs.
pub async fn accept_loop(controller: Rc<Controller>, listener: TcpListener) {
    let window = Duration::from_millis(controller.config().log_rate_limit_window_ms);
    let log_limit = Rc::new(LogLimiter::new(window));
    loop {
        match listener.accept().await {
            Ok(stream) => {
                let (c, l) = (controller.clone(), log_limit.clone());
                glommio::spawn_local(async move { serve(c, stream, l).await }).detach();
            }
            Err(e) => {
                warn!(error = %e, "controller listener: accept failed");
                glommio::timer::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(controller: Rc<Controller>, stream: TcpStream, log_limit: Rc<LogLimiter>) {
    let peer = stream.peer_addr().ok();
    let _ = stream.set_nodelay(true);
    let (reader, mut writer) = stream.split();
    // Peers only (few connections, small frames): outside the clients' memory budget.
    let mut frames = FrameReader::new(reader, None);
    let max = controller.config().request_bytes_max;
    // Peers send every few hundred milliseconds (Raft heartbeats, broker heartbeats): a
    // connection silent or stalled mid-frame for this long is a client gone wrong.
    let idle = Duration::from_millis(controller.config().connection_idle_ms);
    loop {
        let body = match with_timeout(idle, frames.next_frame(max)).await {
            Some(Ok((b, _))) => b,
            Some(Err(e)) => {
                debug!(?peer, error = %e, "controller connection ended");
                return;
            }
            None => {
                debug!(?peer, "controller connection idle past connections.max.idle.ms; closing");
                return;
            }
        };
        let reply = match handle(&controller, body).await {
            Ok(reply) => reply,
            Err(reason) => Reply::Close(reason),
        };
        match reply {
            Reply::Frame(frame) => {
                if writer.write_all(&frame).await.is_err() {
                    return;
                }
            }
            // Only client Fetch answers in parts; written one after another all the same.
            Reply::Parts(parts) => {
                for part in parts {
                    if writer.write_all(&part).await.is_err() {
                        return;
                    }
                }
            }
            Reply::Nothing => {}
            Reply::Close(reason) => {
                if log_limit.allow(LogKind::BadRequest) {
                    warn!(?peer, %reason, "controller listener: closing connection");
                }
                let _ = writer.close().await;
                return;
            }
        }
    }
}

async fn handle(controller: &Rc<Controller>, mut body: Bytes) -> Result<Reply, String> {
    if body.len() < 4 {
        return Err("frame too short for a request header".into());
    }
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    if key == RAFT_MESSAGES_KEY {
        // Header v1: key, version, correlation id, client id (nullable string).
        if body.len() < 10 {
            return Err("truncated raft frame header".into());
        }
        body.advance(8);
        let client_len = body.get_i16();
        body.advance(usize::try_from(client_len).unwrap_or(0).min(body.len()));
        controller.receive_raft(body).map_err(|e| e.to_string())?;
        return Ok(Reply::Nothing);
    }
    let api = ApiKey::try_from(key).map_err(|_| RequestError::UnknownApi(key).to_string())?;
    let Some(entry) = controller_api::supported(api) else {
        return Err(format!("{api:?} is not served on the controller listener (a client connected to it?)"));
    };
    if api != ApiKey::ApiVersions && !(entry.min..=entry.max).contains(&version) {
        return Err(RequestError::UnsupportedVersion { api, version }.to_string());
    }
    let header = RequestHeader::decode(&mut body, api.request_header_version(version))
        .map_err(|e| format!("bad {api:?} request header: {e}"))?;
    let ctx = controller_api::Call { api, version, correlation_id: header.correlation_id };
    (entry.handler)(controller, &ctx, body).await.map_err(|e| e.to_string())
}
