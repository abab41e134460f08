//! The Kafka listener of one data shard. Every data shard binds the same address with
//! SO_REUSEPORT (glommio's default), so the kernel spreads connections over shards.

use std::rc::Rc;
use std::sync::atomic::Ordering;

use futures::future::{select, Either};
use glommio::net::TcpListener;
use tracing::{debug, warn};

use super::connection::{self, ShutdownSignal};
use crate::shard::Shard;

pub fn bind(shard: &Shard) -> std::io::Result<TcpListener> {
    TcpListener::bind(shard.config.listen).map_err(std::io::Error::from)
}

/// Accepts connections until `shutdown` fires; each connection runs as its own task.
pub async fn accept_loop(shard: Rc<Shard>, listener: TcpListener, shutdown: ShutdownSignal) {
    loop {
        let accepted = match select(Box::pin(listener.accept()), shutdown.clone()).await {
            Either::Left((accepted, _)) => accepted,
            Either::Right(_) => return,
        };
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let open = shard.connections_total.fetch_add(1, Ordering::Relaxed) + 1;
        if open > shard.config.connections_max {
            shard.connections_total.fetch_sub(1, Ordering::Relaxed);
            warn!(peer = ?stream.peer_addr().ok(), limit = shard.config.connections_max, "refusing connection: max.connections reached");
            drop(stream);
            continue;
        }
        shard.connections_here.set(shard.connections_here.get() + 1);
        debug!(peer = ?stream.peer_addr().ok(), "connection accepted");
        let s = shard.clone();
        let stop = shutdown.clone();
        glommio::spawn_local(async move {
            connection::serve(s.clone(), stream, stop).await;
            s.connections_here.set(s.connections_here.get() - 1);
            s.connections_total.fetch_sub(1, Ordering::Relaxed);
        })
        .detach();
    }
}
