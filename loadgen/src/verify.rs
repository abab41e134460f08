//! Delivery check: every acknowledged record must be consumed exactly once and, per
//! producer and partition, in the order it was produced.

use serde::{Deserialize, Serialize};

use crate::consumer::ConsumerReport;
use crate::producer::ProducerReport;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Records the producers generated.
    pub produced: u64,
    /// Of those, acknowledged by the broker (acks=0: written to the socket).
    pub acknowledged: u64,
    /// Records with our header the consumers received, duplicates excluded.
    pub consumed_unique: u64,
    /// Acknowledged records no consumer received.
    pub missing: u64,
    /// Records received more than once.
    pub duplicates: u64,
    /// Records received after a later record of the same producer and partition.
    pub out_of_order: u64,
    /// Unacknowledged records that were received anyway (a timed-out request the broker did
    /// write, for instance): not an error.
    pub unacknowledged_but_consumed: u64,
    /// Records without the load generator's header.
    pub foreign: u64,
}

impl Delivery {
    pub fn exactly_once_in_order(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.out_of_order == 0
    }
}

/// Compares what producers had acknowledged with what consumers received.
pub fn check(producers: &[ProducerReport], consumers: &[ConsumerReport]) -> Delivery {
    let mut d = Delivery::default();
    // Partition (global index) -> (consumer, position in its parts).
    let mut owner = std::collections::HashMap::new();
    for (ci, c) in consumers.iter().enumerate() {
        d.foreign += c.foreign;
        for (pi, p) in c.parts.iter().enumerate() {
            owner.insert(p.index, (ci, pi));
            for t in &p.producers {
                d.duplicates += t.duplicates;
                d.out_of_order += t.out_of_order;
                d.consumed_unique += t.seen;
            }
        }
    }
    for pr in producers {
        for part in &pr.parts {
            d.produced += part.sent;
            let unacked: u64 = part.unacked.iter().map(|(a, b)| b - a).sum();
            d.acknowledged += part.sent.saturating_sub(unacked);
            let tracker =
                owner.get(&part.index).and_then(|&(ci, pi)| consumers[ci].parts[pi].producers.get(pr.id as usize));
            let Some(t) = tracker else {
                d.missing += part.sent.saturating_sub(unacked);
                continue;
            };
            // Walk 0..sent, skipping the unacknowledged ranges (sorted).
            let mut next = 0u64;
            for &(a, b) in &part.unacked {
                d.missing += t.missing_in(next..a.max(next));
                d.unacknowledged_but_consumed += (a.max(next)..b).filter(|&s| t.contains(s)).count() as u64;
                next = next.max(b);
            }
            d.missing += t.missing_in(next..part.sent.max(next));
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::{PartSeen, SeqTracker};
    use crate::producer::PartReport;

    fn seen(seqs: &[u64]) -> SeqTracker {
        let mut t = SeqTracker::default();
        for &s in seqs {
            t.observe(s);
        }
        t
    }

    #[test]
    fn all_delivered_once_in_order() {
        let p = vec![ProducerReport { id: 0, parts: vec![PartReport { index: 3, sent: 4, unacked: vec![] }] }];
        let c = vec![ConsumerReport {
            id: 0,
            parts: vec![PartSeen { index: 3, producers: vec![seen(&[0, 1, 2, 3])], next_offset: 4 }],
            foreign: 0,
        }];
        let d = check(&p, &c);
        assert!(d.exactly_once_in_order(), "{d:?}");
        assert_eq!((d.produced, d.acknowledged, d.consumed_unique), (4, 4, 4));
    }

    #[test]
    fn gaps_duplicates_reordering_and_unacked_ranges() {
        let p = vec![
            ProducerReport { id: 0, parts: vec![PartReport { index: 0, sent: 10, unacked: vec![(2, 4), (8, 10)] }] },
            ProducerReport { id: 1, parts: vec![PartReport { index: 0, sent: 3, unacked: vec![] }] },
        ];
        // Producer 0: 2..4 and 8..10 unacked; 3 arrived anyway; 6 missing; 5 twice; 7 before 5.
        let c = vec![ConsumerReport {
            id: 0,
            parts: vec![PartSeen {
                index: 0,
                producers: vec![seen(&[0, 1, 3, 4, 7, 5, 5]), seen(&[0, 1, 2])],
                next_offset: 0,
            }],
            foreign: 2,
        }];
        let d = check(&p, &c);
        assert_eq!(d.produced, 13);
        assert_eq!(d.acknowledged, 9);
        assert_eq!(d.missing, 1, "{d:?}");
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.out_of_order, 1);
        assert_eq!(d.unacknowledged_but_consumed, 1);
        assert_eq!(d.foreign, 2);
        assert!(!d.exactly_once_in_order());
    }
}
