//! The active controller's view of broker sessions (sans-IO): registrations, heartbeats,
//! and which brokers to fence or unfence. It decides; the controller commits the records it
//! returns through the quorum, so every node sees the same fencing in the same order.
//!
//! Kafka's rules (KIP-631): a broker registers (with a random incarnation id per process
//! start) and starts fenced; it is unfenced by a heartbeat once its metadata has caught up
//! to its own registration; it is fenced when no heartbeat arrived for
//! `broker.session.timeout.ms`, or when it asks to shut down (controlled shutdown). Another
//! process registering a node id whose broker is alive is refused (DUPLICATE_BROKER_REGISTRATION).
//! Sessions are held only by the active controller: a new one gives every registered broker
//! a full session from the moment it took over.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::cluster::records::{BrokerRegistration, MetadataRecord};
use crate::cluster::MetadataImage;
use kafka_protocol::ResponseError;

/// What a registration comes to.
#[derive(Debug, PartialEq, Eq)]
pub enum Registered {
    /// The same process registered already (a retry): its epoch.
    Again(i64),
    /// A new registration, to commit; the epoch is the record's.
    New(MetadataRecord),
}

/// A broker's heartbeat (Kafka's BrokerHeartbeat fields).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    pub broker: i32,
    pub epoch: i64,
    pub metadata_offset: i64,
    pub want_fence: bool,
    pub want_shut_down: bool,
}

/// What a heartbeat comes to: a record to commit (if any) and the answer once committed.
#[derive(Debug, PartialEq, Eq)]
pub struct Beat {
    pub record: Option<MetadataRecord>,
    pub caught_up: bool,
    pub fenced: bool,
    pub shut_down: bool,
}

#[derive(Debug)]
struct Session {
    deadline: Instant,
    /// The metadata offset at which the registration was applied: a broker whose own
    /// metadata has reached it is caught up.
    registered_at: u64,
    shutting_down: bool,
}

#[derive(Debug)]
pub struct BrokerSessions {
    timeout: Duration,
    sessions: HashMap<i32, Session>,
}

impl BrokerSessions {
    pub fn new(timeout: Duration) -> BrokerSessions {
        BrokerSessions { timeout, sessions: HashMap::new() }
    }

    /// This controller became active: every registered broker gets a full session now.
    pub fn take_over(&mut self, image: &MetadataImage, now: Instant) {
        self.sessions = image
            .brokers
            .keys()
            .map(|id| (*id, Session { deadline: now + self.timeout, registered_at: 0, shutting_down: false }))
            .collect();
    }

    pub fn register(
        &mut self,
        image: &MetadataImage,
        registration: BrokerRegistration,
        same_process: bool,
        now: Instant,
    ) -> Result<Registered, (ResponseError, String)> {
        if let Some(existing) = image.brokers.get(&registration.id) {
            if existing.registration.incarnation == registration.incarnation {
                return Ok(Registered::Again(existing.registration.epoch));
            }
            let alive = self.sessions.get(&registration.id).is_some_and(|s| s.deadline > now);
            // A registration from this very process (the active controller's own broker)
            // proves the old incarnation is gone.
            if !existing.fenced && alive && !same_process {
                return Err((
                    ResponseError::DuplicateBrokerRegistration,
                    format!(
                        "Another broker is registered with node id {} and is alive (two nodes with the same node.id, \
                         or a restart before broker.session.timeout.ms ran out)",
                        registration.id
                    ),
                ));
            }
        }
        let epoch = image.last_broker_epoch + 1;
        self.sessions.insert(
            registration.id,
            Session { deadline: now + self.timeout, registered_at: u64::MAX, shutting_down: false },
        );
        Ok(Registered::New(MetadataRecord::Broker(BrokerRegistration { epoch, ..registration })))
    }

    /// The registration of `id` was applied at metadata `offset`.
    pub fn registered(&mut self, id: i32, offset: u64) {
        if let Some(s) = self.sessions.get_mut(&id) {
            s.registered_at = offset;
        }
    }

    pub fn heartbeat(&mut self, image: &MetadataImage, beat: Heartbeat, now: Instant) -> Result<Beat, ResponseError> {
        let Heartbeat { broker: id, epoch, metadata_offset, want_fence, want_shut_down } = beat;
        let broker = image.brokers.get(&id).ok_or(ResponseError::StaleBrokerEpoch)?;
        if broker.registration.epoch != epoch {
            return Err(ResponseError::StaleBrokerEpoch);
        }
        let session =
            self.sessions.entry(id).or_insert(Session { deadline: now, registered_at: 0, shutting_down: false });
        session.deadline = now + self.timeout;
        session.shutting_down |= want_shut_down;
        let caught_up = u64::try_from(metadata_offset).is_ok_and(|o| o >= session.registered_at);
        let fence = |fenced| Some(MetadataRecord::BrokerFence { id, epoch, fenced });
        let beat = if session.shutting_down {
            Beat { record: if broker.fenced { None } else { fence(true) }, caught_up, fenced: true, shut_down: true }
        } else if broker.fenced && caught_up && !want_fence {
            Beat { record: fence(false), caught_up, fenced: false, shut_down: false }
        } else if !broker.fenced && want_fence {
            Beat { record: fence(true), caught_up, fenced: true, shut_down: false }
        } else {
            Beat { record: None, caught_up, fenced: broker.fenced, shut_down: false }
        };
        Ok(beat)
    }

    /// Fence records for live brokers whose session ran out.
    pub fn expired(&self, image: &MetadataImage, now: Instant) -> Vec<(MetadataRecord, Duration)> {
        image
            .live_brokers()
            .filter_map(|b| {
                let id = b.registration.id;
                let session = self.sessions.get(&id)?;
                (session.deadline <= now).then(|| {
                    let silent = now.saturating_duration_since(session.deadline) + self.timeout;
                    (MetadataRecord::BrokerFence { id, epoch: b.registration.epoch, fenced: true }, silent)
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(9);

    fn registration(id: i32) -> BrokerRegistration {
        BrokerRegistration { id, epoch: 0, incarnation: Uuid::new_v4(), host: "h".into(), port: 9092, rack: None }
    }

    fn hb(broker: i32, epoch: i64, metadata_offset: i64, want_shut_down: bool) -> Heartbeat {
        Heartbeat { broker, epoch, metadata_offset, want_fence: false, want_shut_down }
    }

    fn apply(image: &mut MetadataImage, record: &Option<MetadataRecord>) {
        if let Some(r) = record {
            image.apply(r);
        }
    }

    #[test]
    fn a_broker_registers_fenced_and_is_unfenced_once_caught_up() {
        let mut image = MetadataImage::new(1);
        let mut s = BrokerSessions::new(TIMEOUT);
        let now = Instant::now();
        let reg = registration(1);
        let Ok(Registered::New(record)) = s.register(&image, reg.clone(), false, now) else { panic!("registers") };
        image.apply(&record);
        image.offset = 10;
        s.registered(1, 10);
        assert!(!image.is_live(1));
        assert_eq!(s.register(&image, reg, false, now), Ok(Registered::Again(1)), "a retry gets its epoch back");
        let behind = s.heartbeat(&image, hb(1, 1, 9, false), now).expect("beat");
        assert_eq!((behind.record.clone(), behind.fenced, behind.caught_up), (None, true, false));
        let beat = s.heartbeat(&image, hb(1, 1, 10, false), now).expect("beat");
        assert_eq!(beat.record, Some(MetadataRecord::BrokerFence { id: 1, epoch: 1, fenced: false }));
        apply(&mut image, &beat.record);
        assert!(image.is_live(1));
        assert_eq!(s.heartbeat(&image, hb(1, 0, 10, false), now), Err(ResponseError::StaleBrokerEpoch));
    }

    #[test]
    fn silence_fences_and_a_live_duplicate_is_refused() {
        let mut image = MetadataImage::new(1);
        let mut s = BrokerSessions::new(TIMEOUT);
        let t0 = Instant::now();
        let Ok(Registered::New(record)) = s.register(&image, registration(1), false, t0) else { panic!("registers") };
        image.apply(&record);
        s.registered(1, 0);
        let beat = s.heartbeat(&image, hb(1, 1, 0, false), t0).expect("beat");
        apply(&mut image, &beat.record);
        let refused = s.register(&image, registration(1), false, t0 + Duration::from_secs(1));
        assert!(matches!(refused, Err((ResponseError::DuplicateBrokerRegistration, _))));
        assert!(s.expired(&image, t0 + TIMEOUT - Duration::from_millis(1)).is_empty());
        let expired = s.expired(&image, t0 + TIMEOUT);
        assert_eq!(expired.len(), 1);
        image.apply(&expired[0].0);
        assert!(!image.is_live(1));
        // Fenced, the node id is free for a new process, in a new epoch.
        let Ok(Registered::New(MetadataRecord::Broker(again))) =
            s.register(&image, registration(1), false, t0 + TIMEOUT)
        else {
            panic!("re-registers")
        };
        assert_eq!(again.epoch, 2);
    }

    #[test]
    fn controlled_shutdown_fences_and_stays_fenced() {
        let mut image = MetadataImage::new(1);
        let mut s = BrokerSessions::new(TIMEOUT);
        let now = Instant::now();
        let Ok(Registered::New(record)) = s.register(&image, registration(2), false, now) else { panic!("registers") };
        image.apply(&record);
        s.registered(2, 0);
        let first = s.heartbeat(&image, hb(2, 1, 0, false), now).expect("beat");
        apply(&mut image, &first.record);
        let beat = s.heartbeat(&image, hb(2, 1, 0, true), now).expect("beat");
        assert!(beat.shut_down && beat.fenced);
        apply(&mut image, &beat.record);
        assert!(!image.is_live(2));
        let again = s.heartbeat(&image, hb(2, 1, 0, false), now).expect("beat");
        assert_eq!((again.record, again.fenced, again.shut_down), (None, true, true));
    }

    #[test]
    fn a_new_controller_gives_everyone_a_full_session() {
        let mut image = MetadataImage::new(1);
        let mut s = BrokerSessions::new(TIMEOUT);
        let t0 = Instant::now();
        let Ok(Registered::New(record)) = s.register(&image, registration(3), false, t0) else { panic!("registers") };
        image.apply(&record);
        image.apply(&MetadataRecord::BrokerFence { id: 3, epoch: 1, fenced: false });
        let mut successor = BrokerSessions::new(TIMEOUT);
        let later = t0 + 2 * TIMEOUT;
        successor.take_over(&image, later);
        assert!(successor.expired(&image, later + TIMEOUT / 2).is_empty());
        assert_eq!(successor.expired(&image, later + TIMEOUT).len(), 1);
    }
}
