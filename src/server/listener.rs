//! The Kafka listener of one data shard. Every data shard binds the same address with
//! SO_REUSEPORT (glommio's default), so the kernel spreads connections over shards.

use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures::channel::oneshot;
use futures::future::{select, Either};
use glommio::net::TcpListener;
use tracing::{debug, info, warn};

use super::connection::{self, ShutdownSignal};
use super::fetch_sessions::FetchSessionCache;
use super::log_limit::{LogKind, LogLimiter};
use super::request_memory::RequestMemory;
use crate::shard::{ControlRequest, Shard};

pub fn bind(shard: &Shard) -> std::io::Result<TcpListener> {
    TcpListener::bind(shard.config.listen).map_err(std::io::Error::from)
}

/// Accepts connections until `shutdown` fires; each connection runs as its own task.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, shutdown: ShutdownSignal) {
    let window = std::time::Duration::from_millis(shard.config.log_rate_limit_window_ms);
    let log_limit = Rc::new(LogLimiter::new(window));
    let flushing = log_limit.clone();
    let memory = RequestMemory::new(shard.config.queued_request_bytes_per_shard());
    // Session ids start at a random point on each shard and at each start, so an id a client
    // kept from another shard or an earlier run is most likely unknown here (it then gets
    // FETCH_SESSION_ID_NOT_FOUND and starts over) rather than someone else's.
    let seed = uuid::Uuid::new_v4().as_u128() as i32;
    let fetch_sessions =
        Rc::new(RefCell::new(FetchSessionCache::new(shard.config.fetch_session_slots_per_shard(), seed)));
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(window).await;
            flushing.flush();
        }
    })
    .detach();
    loop {
        let accepted = match select(Box::pin(listener.accept()), shutdown.clone()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => return,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                if log_limit.allow(LogKind::AcceptFailed) {
                    warn!(error = %e, "accept failed");
                }
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shard.connections_total.fetch_add(1, Ordering::Relaxed) + 1;
        // A dynamic broker config, read per connection; never past what the descriptor
        // limit holds (see `config::descriptors`).
        let limit = shard.effective_config().connections_max.min(shard.config.descriptors.connections);
        if open > limit {
            shard.connections_total.fetch_sub(1, Ordering::Relaxed);
            if log_limit.allow(LogKind::RefusedConnection) {
                warn!(peer = ?stream.peer_addr().ok(), limit, "refusing connection: max.connections (or the descriptor limit's share for connections) reached");
            }
            drop(stream);
            continue;
        }
        shard.connections_here.set(shard.connections_here.get() + 1);
        debug!(peer = ?stream.peer_addr().ok(), "connection accepted");
        let s = shard.clone();
        let stop = shutdown.clone();
        let limiter = log_limit.clone();
        let memory = memory.clone();
        let sessions = fetch_sessions.clone();
        glommio::spawn_local(async move {
            match admit_per_ip(&s, &stream, &limiter).await {
                PerIp::Unlimited => connection::serve(s.clone(), stream, stop, limiter, memory, sessions).await,
                PerIp::Admitted(ip) => {
                    connection::serve(s.clone(), stream, stop, limiter, memory, sessions).await;
                    let _ = s.send_control(ControlRequest::CloseConnection { ip }).await;
                }
                // Dropping the stream closes it: the client sees a clean close.
                PerIp::Refused => {}
            }
            s.connections_here.set(s.connections_here.get() - 1);
            s.connections_total.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}

/// What `max.connections.per.ip` says of a new connection.
enum PerIp {
    /// No per-address limit is set: nothing is counted.
    Unlimited,
    /// Counted against its address until it closes.
    Admitted(IpAddr),
    /// Its address has as many open as it may: the connection is closed.
    Refused,
}

/// `max.connections.per.ip` (and its overrides), counted by the control shard across every
/// data shard.
async fn admit_per_ip(shard: &Shard, stream: &glommio::net::TcpStream, log_limit: &LogLimiter) -> PerIp {
    if !shard.config.limits_connections_per_ip() {
        return PerIp::Unlimited;
    }
    let Ok(peer) = stream.peer_addr() else { return PerIp::Refused };
    let ip = peer.ip();
    let limit = shard.config.connections_per_ip_limit(ip);
    let (reply, rx) = oneshot::channel();
    if shard.send_control(ControlRequest::OpenConnection { ip, limit, reply }).await.is_err() {
        return PerIp::Refused;
    }
    if rx.await.unwrap_or(false) {
        PerIp::Admitted(ip)
    } else {
        if log_limit.allow(LogKind::RefusedConnection) {
            info!(peer = %ip, limit, "refusing connection: max.connections.per.ip reached");
        }
        PerIp::Refused
    }
}
