//! Leader election and in-sync replica upkeep, sans-IO: what the active controller changes
//! in partitions' leadership when brokers come and go.
//!
//! Kafka's rules (KRaft): a fenced broker leaves every ISR it is in, unless it is the last
//! member (then the partition goes offline and waits for it, or for any other member that
//! was in sync with it); a partition whose leader is gone gets the first replica, in
//! assignment order, that is live and in sync. With `unclean.leader.election.enable`, a
//! partition with no live in-sync replica takes any live replica and loses what only the
//! others had. Every leader change bumps the leader epoch; every change the partition epoch.

use super::image::{MetadataImage, PartitionState};
use super::records::{MetadataRecord, PartitionChange};

/// The partition changes `image` needs: leaders for partitions whose leader is gone (or
/// that never had one), fenced brokers out of ISRs. Empty when every partition is settled.
pub fn reconcile(image: &MetadataImage, unclean_default: bool) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for topic in image.topics.values() {
        let unclean = topic
            .configs
            .get("unclean.leader.election.enable")
            .map_or(unclean_default, |v| v.eq_ignore_ascii_case("true"));
        for (p, state) in topic.states.iter().enumerate() {
            let replicas = topic.replicas_of(p as i32);
            if replicas.is_empty() {
                continue;
            }
            if let Some(next) = decide(state, replicas, |b| image.is_live(b), unclean) {
                if next.leader >= 0
                    && next.leader_epoch > state.leader_epoch
                    && next.isr.len() == 1
                    && !state.isr.contains(&next.leader)
                {
                    tracing::warn!(
                        topic = %topic.name,
                        partition = p,
                        leader = next.leader,
                        "unclean leader election: an out-of-sync replica leads; records only the in-sync replicas had are lost"
                    );
                }
                out.push(MetadataRecord::PartitionChange(PartitionChange {
                    topic_id: topic.id,
                    partition: p as i32,
                    leader: next.leader,
                    leader_epoch: next.leader_epoch,
                    partition_epoch: next.partition_epoch,
                    isr: next.isr,
                }));
            }
        }
    }
    out
}

/// The state a partition should move to, or `None` when it is settled.
pub fn decide(
    state: &PartitionState,
    replicas: &[i32],
    live: impl Fn(i32) -> bool,
    unclean: bool,
) -> Option<PartitionState> {
    let live_isr: Vec<i32> = state.isr.iter().copied().filter(|b| live(*b)).collect();
    let leader_stays = state.leader >= 0 && live(state.leader) && state.isr.contains(&state.leader);
    let (leader, isr) = if leader_stays {
        (state.leader, live_isr)
    } else if let Some(l) = replicas.iter().copied().find(|b| live_isr.contains(b)) {
        (l, live_isr)
    } else if let Some(l) = replicas.iter().copied().find(|b| unclean && live(*b)) {
        (l, vec![l])
    } else {
        // Offline: the ISR keeps its last members, one of which must come back to lead.
        let isr = if live_isr.is_empty() { state.isr.clone() } else { live_isr };
        (-1, isr)
    };
    change(state, leader, isr)
}

/// Which election ElectLeaders asks for (Kafka's `election_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Leadership back to the first replica, if it is live and in sync.
    Preferred,
    /// A leader for a partition that has none, from any live replica (may lose records).
    Unclean,
}

/// Why an asked-for election did not happen (Kafka's error codes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionRefused {
    /// The partition already has the leader the election would choose (ELECTION_NOT_NEEDED).
    NotNeeded,
    /// The preferred replica is not live or not in sync (PREFERRED_LEADER_NOT_AVAILABLE).
    PreferredNotAvailable,
    /// No live replica can lead (ELIGIBLE_LEADERS_NOT_AVAILABLE).
    NoEligibleLeader,
}

/// The state an ElectLeaders election moves a partition to.
pub fn elect(
    kind: ElectionType,
    state: &PartitionState,
    replicas: &[i32],
    live: impl Fn(i32) -> bool,
) -> Result<PartitionState, ElectionRefused> {
    match kind {
        ElectionType::Preferred => {
            let Some(&preferred) = replicas.first() else { return Err(ElectionRefused::NoEligibleLeader) };
            if state.leader == preferred {
                return Err(ElectionRefused::NotNeeded);
            }
            if !live(preferred) || !state.isr.contains(&preferred) {
                return Err(ElectionRefused::PreferredNotAvailable);
            }
            change(state, preferred, state.isr.clone()).ok_or(ElectionRefused::NotNeeded)
        }
        ElectionType::Unclean => {
            if state.leader >= 0 && live(state.leader) {
                return Err(ElectionRefused::NotNeeded);
            }
            let in_sync = replicas.iter().copied().find(|b| live(*b) && state.isr.contains(b));
            let any = replicas.iter().copied().find(|b| live(*b));
            match (in_sync, any) {
                (Some(l), _) => change(state, l, state.isr.iter().copied().filter(|b| live(*b)).collect()),
                (None, Some(l)) => change(state, l, vec![l]),
                (None, None) => None,
            }
            .ok_or(ElectionRefused::NoEligibleLeader)
        }
    }
}

/// Brokers whose share of partitions they should lead (as first replica) but do not is
/// above `max_ratio` (Kafka's `leader.imbalance.per.broker.percentage` / 100): the
/// partitions to hand back to them, for the automatic preferred-leader election.
pub fn imbalanced(image: &MetadataImage, max_ratio: f64) -> Vec<(String, i32)> {
    let mut preferred: std::collections::BTreeMap<i32, (usize, Vec<(String, i32)>)> = Default::default();
    for topic in image.topics.values() {
        for (p, state) in topic.states.iter().enumerate() {
            let Some(&first) = topic.replicas_of(p as i32).first() else { continue };
            let entry = preferred.entry(first).or_default();
            entry.0 += 1;
            if state.leader != first && image.is_live(first) && state.isr.contains(&first) {
                entry.1.push((topic.name.clone(), p as i32));
            }
        }
    }
    preferred
        .into_values()
        .filter(|(total, moves)| *total > 0 && moves.len() as f64 / *total as f64 > max_ratio)
        .flat_map(|(_, moves)| moves)
        .collect()
}

/// `state` moved to `leader` and `isr`, with its epochs bumped; `None` when nothing changes.
pub fn change(state: &PartitionState, leader: i32, isr: Vec<i32>) -> Option<PartitionState> {
    if leader == state.leader && isr == state.isr {
        return None;
    }
    let leader_epoch = if leader != state.leader { state.leader_epoch + 1 } else { state.leader_epoch };
    Some(PartitionState { leader, leader_epoch, partition_epoch: state.partition_epoch + 1, isr })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(leader: i32, epoch: i32, isr: &[i32]) -> PartitionState {
        PartitionState { leader, leader_epoch: epoch, partition_epoch: 3, isr: isr.to_vec() }
    }

    #[test]
    fn a_new_partition_elects_its_first_live_replica() {
        let s = PartitionState::initial(&[2, 1, 3]);
        let next = decide(&s, &[2, 1, 3], |b| b != 2, false).expect("elects");
        assert_eq!((next.leader, next.leader_epoch, next.isr.clone()), (1, 0, vec![1, 3]));
        assert_eq!(next.partition_epoch, 1);
        let all = decide(&s, &[2, 1, 3], |_| true, false).expect("elects");
        assert_eq!((all.leader, all.isr), (2, vec![2, 1, 3]));
    }

    #[test]
    fn a_settled_partition_stays() {
        assert_eq!(decide(&state(1, 4, &[1, 2]), &[1, 2, 3], |_| true, false), None);
        // An out-of-sync replica coming back does not join the ISR here (the leader asks).
        assert_eq!(decide(&state(1, 4, &[1]), &[1, 2], |_| true, false), None);
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr() {
        let next = decide(&state(1, 4, &[1, 2, 3]), &[1, 2, 3], |b| b != 1, false).expect("moves");
        assert_eq!((next.leader, next.leader_epoch, next.isr), (2, 5, vec![2, 3]));
    }

    #[test]
    fn a_fenced_follower_leaves_the_isr_without_a_leader_change() {
        let next = decide(&state(1, 4, &[1, 2, 3]), &[1, 2, 3], |b| b != 3, false).expect("shrinks");
        assert_eq!((next.leader, next.leader_epoch, next.isr), (1, 4, vec![1, 2]));
    }

    #[test]
    fn with_no_live_in_sync_replica_the_partition_waits_for_one() {
        let lone = state(1, 4, &[1]);
        let offline = decide(&lone, &[1, 2], |b| b == 2, false).expect("offline");
        assert_eq!((offline.leader, offline.leader_epoch, offline.isr.clone()), (-1, 5, vec![1]));
        assert_eq!(decide(&offline, &[1, 2], |b| b == 2, false), None, "broker 2 was not in sync");
        let back = decide(&offline, &[1, 2], |_| true, false).expect("1 is back");
        assert_eq!((back.leader, back.leader_epoch, back.isr), (1, 6, vec![1]));
    }

    #[test]
    fn unclean_election_takes_any_live_replica() {
        let offline = state(-1, 5, &[1]);
        let next = decide(&offline, &[1, 2], |b| b == 2, true).expect("unclean");
        assert_eq!((next.leader, next.leader_epoch, next.isr), (2, 6, vec![2]));
    }

    #[test]
    fn preferred_and_unclean_elections_follow_kafka() {
        let replicas = [1, 2, 3];
        let moved = state(2, 4, &[2, 3, 1]);
        let back = elect(ElectionType::Preferred, &moved, &replicas, |_| true).expect("1 is back in sync");
        assert_eq!((back.leader, back.leader_epoch, back.isr), (1, 5, vec![2, 3, 1]));
        assert_eq!(
            elect(ElectionType::Preferred, &state(1, 4, &[1, 2]), &replicas, |_| true),
            Err(ElectionRefused::NotNeeded)
        );
        assert_eq!(
            elect(ElectionType::Preferred, &state(2, 4, &[2, 3]), &replicas, |_| true),
            Err(ElectionRefused::PreferredNotAvailable),
            "1 is not in sync"
        );
        assert_eq!(elect(ElectionType::Unclean, &moved, &replicas, |_| true), Err(ElectionRefused::NotNeeded));
        let offline = state(-1, 6, &[1]);
        let unclean = elect(ElectionType::Unclean, &offline, &replicas, |b| b == 3).expect("3 is live");
        assert_eq!((unclean.leader, unclean.leader_epoch, unclean.isr), (3, 7, vec![3]));
        assert_eq!(
            elect(ElectionType::Unclean, &offline, &replicas, |_| false),
            Err(ElectionRefused::NoEligibleLeader)
        );
    }

    #[test]
    fn reconcile_covers_every_partition_of_the_image() {
        use crate::cluster::records::BrokerRegistration;
        let mut img = MetadataImage::new(1);
        for id in [1, 2] {
            let registration = BrokerRegistration {
                id,
                epoch: id as i64,
                incarnation: uuid::Uuid::new_v4(),
                host: "h".into(),
                port: 1,
                rack: None,
            };
            img.apply(&MetadataRecord::Broker(registration));
            img.apply(&MetadataRecord::BrokerFence { id, epoch: id as i64, fenced: false });
        }
        let id = uuid::Uuid::new_v4();
        img.apply(&MetadataRecord::Topic {
            name: "t".into(),
            id,
            partitions: 2,
            configs: Default::default(),
            replicas: vec![vec![1, 2], vec![2, 1]],
        });
        let changes = reconcile(&img, false);
        assert_eq!(changes.len(), 2);
        changes.iter().for_each(|c| img.apply(c));
        let tp = |p| crate::types::TopicPartition::new("t", p);
        assert_eq!((img.leader(&tp(0)), img.leader(&tp(1))), (Some(1), Some(2)));
        assert!(reconcile(&img, false).is_empty(), "settled");
        img.apply(&MetadataRecord::BrokerFence { id: 2, epoch: 2, fenced: true });
        let changes = reconcile(&img, false);
        changes.iter().for_each(|c| img.apply(c));
        assert_eq!((img.leader(&tp(0)), img.leader(&tp(1))), (Some(1), Some(1)));
        assert_eq!(img.partition_state(&tp(1)).map(|s| (s.leader_epoch, s.isr.clone())), Some((1, vec![1])));
        // A change decided on an older image is ignored.
        let stale = PartitionChange {
            topic_id: id,
            partition: 1,
            leader: 2,
            leader_epoch: 0,
            partition_epoch: 1,
            isr: vec![2, 1],
        };
        img.apply(&MetadataRecord::PartitionChange(stale));
        assert_eq!(img.leader(&tp(1)), Some(1));
    }
}
