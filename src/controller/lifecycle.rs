//! The broker's side of its life in the cluster (KIP-631), run on the control shard of a
//! node with the broker role: register with the active controller (a random incarnation id
//! per process start), heartbeat every `broker.heartbeat.interval.ms` with this node's
//! metadata offset, register again when the controller no longer knows the epoch, and at a
//! stop ask for a controlled shutdown (the controller fences the broker before it goes, so
//! clients are told at once instead of after the session timeout).
//!
//! Calls go through the controller: in place when this node is the active controller,
//! otherwise as BrokerRegistration / BrokerHeartbeat over the controller listener.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::broker_registration_request::Listener;
use kafka_protocol::messages::{BrokerHeartbeatRequest, BrokerId, BrokerRegistrationRequest};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::{info, warn};
use uuid::Uuid;

use super::remote::Route;
use super::{CommitError, Controller, Heartbeat};
use crate::cluster::records::BrokerRegistration;

/// Heartbeats while fenced come this often, so a starting broker is unfenced quickly.
const FENCED_HEARTBEAT: Duration = Duration::from_millis(100);

pub struct BrokerLifecycle {
    controller: Rc<Controller>,
    incarnation: Uuid,
    epoch: Cell<i64>,
    fenced: Cell<bool>,
    shutting_down: Cell<bool>,
    /// The last error logged, so a repeating one is logged once.
    last_error: std::cell::RefCell<Option<String>>,
}

/// What one heartbeat came to.
struct Answer {
    fenced: bool,
    shut_down: bool,
}

impl BrokerLifecycle {
    /// Starts registering and heartbeating, until the executor ends.
    pub fn start(controller: Rc<Controller>) -> Rc<BrokerLifecycle> {
        let lifecycle = Rc::new(BrokerLifecycle {
            controller,
            incarnation: Uuid::new_v4(),
            epoch: Cell::new(0),
            fenced: Cell::new(true),
            shutting_down: Cell::new(false),
            last_error: std::cell::RefCell::new(None),
        });
        let l = lifecycle.clone();
        glommio::spawn_local(async move { l.run().await }).detach();
        lifecycle
    }

    async fn run(&self) {
        let config = self.controller.config().clone();
        let interval = Duration::from_millis(config.broker_heartbeat_interval_ms);
        loop {
            if self.epoch.get() == 0 {
                match self.register().await {
                    Ok(epoch) => {
                        self.epoch.set(epoch);
                        self.controller.broker_epoch.set(epoch);
                        *self.last_error.borrow_mut() = None;
                        info!(broker = config.node_id, epoch, incarnation = %self.incarnation, "registered with the active controller");
                    }
                    Err(e) => self.log_error(format!("broker registration failed: {e}")),
                }
            } else {
                let sent = Instant::now();
                match self.heartbeat().await {
                    Ok(answer) => {
                        *self.last_error.borrow_mut() = None;
                        if !answer.fenced {
                            self.controller.controller_contact(sent).await;
                        }
                        if answer.fenced != self.fenced.get() {
                            self.fenced.set(answer.fenced);
                            if answer.fenced {
                                warn!(broker = config.node_id, "the active controller fenced this broker");
                            }
                        }
                    }
                    Err(HeartbeatError::Stale) => {
                        warn!(
                            broker = config.node_id,
                            "the controller no longer knows this broker's epoch; registering again"
                        );
                        self.epoch.set(0);
                    }
                    Err(HeartbeatError::Other(e)) => self.log_error(format!("broker heartbeat failed: {e}")),
                }
            }
            let pause =
                if self.fenced.get() || self.epoch.get() == 0 { FENCED_HEARTBEAT.min(interval) } else { interval };
            glommio::timer::sleep(pause).await;
        }
    }

    fn log_error(&self, message: String) {
        let mut last = self.last_error.borrow_mut();
        if last.as_deref() != Some(message.as_str()) {
            warn!("{message}");
            *last = Some(message);
        }
    }

    fn deadline(&self) -> Instant {
        Instant::now() + Duration::from_millis(self.controller.config().quorum_request_timeout_ms)
    }

    async fn register(&self) -> Result<i64, String> {
        let config = self.controller.config().clone();
        let registration = BrokerRegistration {
            id: config.node_id,
            epoch: 0,
            incarnation: self.incarnation,
            host: config.advertised.0.clone(),
            port: config.advertised.1,
            rack: None,
        };
        let cluster_id = config.cluster_id.clone().unwrap_or_default();
        let mut request = BrokerRegistrationRequest::default();
        request.broker_id = BrokerId(config.node_id);
        request.cluster_id = StrBytes::from_string(cluster_id.clone());
        request.incarnation_id = self.incarnation;
        let mut listener = Listener::default();
        listener.name = StrBytes::from_string(config.client_listener_name.clone());
        listener.host = StrBytes::from_string(registration.host.clone());
        listener.port = registration.port;
        request.listeners = vec![listener];
        request.previous_broker_epoch = -1;
        let c = &self.controller;
        let retry = |r: &kafka_protocol::messages::BrokerRegistrationResponse| {
            r.error_code == ResponseError::NotController.code()
        };
        match c.remote.call(|| c.call_target(), &request, None, self.deadline(), retry).await.map_err(|e| e.to_string())? {
            Route::Here => c.register_broker(&cluster_id, registration, true).await.map_err(|(_, m)| m),
            Route::There(r) => match ResponseError::try_from_code(r.error_code) {
                None => Ok(r.broker_epoch),
                Some(ResponseError::DuplicateBrokerRegistration) => Err(format!(
                    "another broker is registered with node.id={} and is alive (the same node.id on two nodes, or a restart \
                     before broker.session.timeout.ms ran out); retrying",
                    config.node_id
                )),
                Some(e) => Err(format!("{e:?}")),
            },
        }
    }

    async fn heartbeat(&self) -> Result<Answer, HeartbeatError> {
        let config = self.controller.config().clone();
        let epoch = self.epoch.get();
        let offset = self.controller.image().offset as i64;
        let want_shut_down = self.shutting_down.get();
        let mut request = BrokerHeartbeatRequest::default();
        request.broker_id = BrokerId(config.node_id);
        request.broker_epoch = epoch;
        request.current_metadata_offset = offset;
        request.want_fence = false;
        request.want_shut_down = want_shut_down;
        let c = &self.controller;
        let retry =
            |r: &kafka_protocol::messages::BrokerHeartbeatResponse| r.error_code == ResponseError::NotController.code();
        let routed = c.remote.call(|| c.call_target(), &request, None, self.deadline(), retry).await;
        match routed.map_err(HeartbeatError::Other)? {
            Route::Here => match c
                .broker_heartbeat(Heartbeat {
                    broker: config.node_id,
                    epoch,
                    metadata_offset: offset,
                    want_fence: false,
                    want_shut_down,
                })
                .await
            {
                Ok(beat) => Ok(Answer { fenced: beat.fenced, shut_down: beat.shut_down }),
                Err(ResponseError::StaleBrokerEpoch) => Err(HeartbeatError::Stale),
                Err(e) => Err(HeartbeatError::Other(CommitError::Failed(format!("{e:?}")))),
            },
            Route::There(r) => match ResponseError::try_from_code(r.error_code) {
                None => Ok(Answer { fenced: r.is_fenced, shut_down: r.should_shut_down }),
                Some(ResponseError::StaleBrokerEpoch) => Err(HeartbeatError::Stale),
                Some(e) => Err(HeartbeatError::Other(CommitError::Failed(format!("{e:?}")))),
            },
        }
    }

    /// Waits until this process's registration is unfenced and this node's image says so
    /// (a restarted node's own log may still show its previous incarnation alive).
    pub async fn wait_unfenced(&self) {
        let me = self.controller.config().node_id;
        let mut told = Instant::now();
        let ours = |image: &crate::cluster::MetadataImage| {
            image.brokers.get(&me).is_some_and(|b| !b.fenced && b.registration.incarnation == self.incarnation)
        };
        loop {
            let far = Instant::now() + Duration::from_secs(5);
            if self.controller.image_where(ours, far).await {
                return;
            }
            if told.elapsed() >= Duration::from_secs(5) {
                told = Instant::now();
                info!(
                    broker = me,
                    leader = ?self.controller.leader(),
                    "waiting to be registered and unfenced by the active controller (is a majority of controller.quorum.voters up?)"
                );
            }
        }
    }

    /// Asks the active controller for a controlled shutdown and waits (at most `timeout`)
    /// until it agreed: the broker is fenced, so clients move on before it goes.
    pub async fn controlled_shutdown(&self, timeout: Duration) {
        if self.epoch.get() == 0 {
            return;
        }
        self.shutting_down.set(true);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(answer) = self.heartbeat().await {
                if answer.shut_down {
                    info!("controlled shutdown: the active controller fenced this broker");
                    return;
                }
            }
            glommio::timer::sleep(FENCED_HEARTBEAT).await;
        }
        warn!("controlled shutdown not confirmed by the active controller in time; stopping anyway");
    }
}

enum HeartbeatError {
    Stale,
    Other(CommitError),
}
