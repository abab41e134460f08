//! Idempotent-producer state of one partition, as Kafka keeps it: for each producer id its
//! epoch and the sequence ranges and offsets of its last five batches, so a retried batch
//! is recognised and answered with its original offsets, a gap is refused, and an old epoch
//! is fenced. Sans-IO: the partition feeds it batch headers and the clock.
//!
//! Runs on the partition's owning shard. Checks are per batch, from the header only.

use std::collections::{HashMap, VecDeque};

use kafka_protocol::ResponseError;

use crate::types::Offset;

/// Batches remembered per producer: the most a client has in flight
/// (`max.in.flight.requests.per.connection` must be <= 5 with idempotence).
pub const BATCHES_REMEMBERED: usize = 5;

/// One remembered batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchRange {
    pub first_seq: i32,
    pub last_seq: i32,
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub timestamp: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub epoch: i16,
    /// Oldest first; at most [`BATCHES_REMEMBERED`].
    pub batches: VecDeque<BatchRange>,
    /// Max timestamp of the last batch (what DescribeProducers reports and expiry uses).
    pub last_timestamp: i64,
    /// The coordinator epoch of the last transaction marker written for this producer
    /// (-1: none): a marker from an older coordinator is refused.
    pub coordinator_epoch: i32,
}

impl ProducerEntry {
    pub fn last_seq(&self) -> Option<i32> {
        self.batches.back().map(|b| b.last_seq)
    }
}

/// The producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    pub producer_id: i64,
    pub epoch: i16,
    pub first_seq: i32,
    /// `lastOffsetDelta` of the batch: records - 1.
    pub offset_delta: i32,
    pub max_timestamp: i64,
}

impl ProducerBatch {
    /// The sequence of the batch's last record; sequences wrap from i32::MAX to 0.
    pub fn last_seq(&self) -> i32 {
        increment_sequence(self.first_seq, self.offset_delta)
    }
}

pub fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

/// What to do with an idempotent batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// New data: append it, then `record` it.
    Append,
    /// A retry of a batch already in the log: answer with these offsets, append nothing.
    Duplicate { first_offset: Offset, last_offset: Offset },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("epoch {got} is older than the producer's epoch {current}")]
    OldEpoch { got: i16, current: i16 },
    #[error("sequence {got} does not follow {last} (epoch {epoch})")]
    OutOfOrder { got: i32, last: i32, epoch: i16 },
    #[error("a new epoch must start at sequence 0, not {0}")]
    NewEpochNotZero(i32),
    #[error("coordinator epoch {got} is older than the last marker's {current}")]
    StaleCoordinator { got: i32, current: i32 },
}

impl SequenceError {
    pub fn error(self) -> ResponseError {
        match self {
            // Kafka (since 2.7) answers a fenced epoch on Produce with INVALID_PRODUCER_EPOCH.
            SequenceError::OldEpoch { .. } => ResponseError::InvalidProducerEpoch,
            SequenceError::OutOfOrder { .. } | SequenceError::NewEpochNotZero(_) => {
                ResponseError::OutOfOrderSequenceNumber
            }
            SequenceError::StaleCoordinator { .. } => ResponseError::TransactionCoordinatorFenced,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    pub producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    /// Checks a client's batch against the state, as Kafka does: a duplicate of one of the
    /// last five batches (same epoch and sequence range) is answered with its offsets; an
    /// older epoch is fenced; a newer epoch must start at 0; otherwise the sequence must
    /// follow the last one. A producer we know nothing of (new, or expired) may start at
    /// any sequence, as Kafka allows since KIP-360.
    pub fn check(&self, batch: &ProducerBatch) -> Result<Verdict, SequenceError> {
        let Some(entry) = self.producers.get(&batch.producer_id) else { return Ok(Verdict::Append) };
        if batch.epoch == entry.epoch {
            let last_seq = batch.last_seq();
            if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == batch.first_seq && b.last_seq == last_seq) {
                return Ok(Verdict::Duplicate { first_offset: dup.first_offset, last_offset: dup.last_offset });
            }
        }
        if batch.epoch < entry.epoch {
            return Err(SequenceError::OldEpoch { got: batch.epoch, current: entry.epoch });
        }
        if batch.epoch > entry.epoch {
            return if batch.first_seq == 0 {
                Ok(Verdict::Append)
            } else {
                Err(SequenceError::NewEpochNotZero(batch.first_seq))
            };
        }
        match entry.last_seq() {
            Some(last) if !in_sequence(last, batch.first_seq) => {
                Err(SequenceError::OutOfOrder { got: batch.first_seq, last, epoch: entry.epoch })
            }
            _ => Ok(Verdict::Append),
        }
    }

    /// Records a batch that was appended at `first_offset` (also used when replaying the
    /// log at start, where no check is made).
    pub fn record(&mut self, batch: &ProducerBatch, first_offset: Offset) {
        let range = BatchRange {
            first_seq: batch.first_seq,
            last_seq: batch.last_seq(),
            first_offset,
            last_offset: first_offset + i64::from(batch.offset_delta),
            timestamp: batch.max_timestamp,
        };
        let entry = self.producers.entry(batch.producer_id).or_insert_with(|| ProducerEntry {
            epoch: batch.epoch,
            batches: VecDeque::with_capacity(BATCHES_REMEMBERED),
            last_timestamp: batch.max_timestamp,
            coordinator_epoch: -1,
        });
        if batch.epoch != entry.epoch {
            entry.epoch = batch.epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == BATCHES_REMEMBERED {
            entry.batches.pop_front();
        }
        entry.batches.push_back(range);
        entry.last_timestamp = batch.max_timestamp;
    }

    /// Whether `epoch` may still write for `producer_id` without a sequence (a coordinator's
    /// batch in the producer's transaction): not once the producer has a newer epoch.
    pub fn check_epoch(&self, producer_id: i64, epoch: i16) -> Result<(), SequenceError> {
        match self.producers.get(&producer_id) {
            Some(e) if epoch < e.epoch => Err(SequenceError::OldEpoch { got: epoch, current: e.epoch }),
            _ => Ok(()),
        }
    }

    /// Whether a transaction marker may be written for `producer_id`, as Kafka checks it:
    /// not from a coordinator older than the one that wrote the producer's last marker (a
    /// zombie coordinator after a leader change), nor for an epoch older than the producer's.
    pub fn check_marker(&self, producer_id: i64, epoch: i16, coordinator_epoch: i32) -> Result<(), SequenceError> {
        match self.producers.get(&producer_id) {
            Some(e) if coordinator_epoch < e.coordinator_epoch => {
                Err(SequenceError::StaleCoordinator { got: coordinator_epoch, current: e.coordinator_epoch })
            }
            _ => self.check_epoch(producer_id, epoch),
        }
    }

    /// Records a transaction marker (appended, or replayed): a newer epoch (the coordinator
    /// fenced the producer) replaces the old one and its batches, so the fenced producer's
    /// late writes are refused; sequences go on across transactions of one epoch.
    pub fn record_marker(&mut self, producer_id: i64, epoch: i16, coordinator_epoch: i32, timestamp: i64) {
        let entry = self.producers.entry(producer_id).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_REMEMBERED),
            last_timestamp: timestamp,
            coordinator_epoch,
        });
        if epoch > entry.epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        entry.coordinator_epoch = entry.coordinator_epoch.max(coordinator_epoch);
        entry.last_timestamp = entry.last_timestamp.max(timestamp);
    }

    /// Forgets producers whose last batch is older than `expiration_ms` (Kafka's
    /// `producer.id.expiration.ms`), except those `keep` names (a transaction is open).
    /// Returns how many were removed.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64, keep: impl Fn(i64) -> bool) -> usize {
        let before = self.producers.len();
        self.producers.retain(|id, e| keep(*id) || now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
        before - self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(pid: i64, epoch: i16, first_seq: i32, records: i32) -> ProducerBatch {
        ProducerBatch { producer_id: pid, epoch, first_seq, offset_delta: records - 1, max_timestamp: 1000 }
    }

    #[test]
    fn duplicates_of_the_last_five_batches_get_their_offsets() {
        let mut t = ProducerStateTable::default();
        let mut offset = 0;
        for i in 0..7 {
            let batch = b(1, 0, i * 10, 10);
            assert_eq!(t.check(&batch), Ok(Verdict::Append));
            t.record(&batch, offset);
            offset += 10;
        }
        // Batches 2..=6 are remembered; 0 and 1 are not.
        assert_eq!(t.check(&b(1, 0, 20, 10)), Ok(Verdict::Duplicate { first_offset: 20, last_offset: 29 }));
        assert_eq!(t.check(&b(1, 0, 60, 10)), Ok(Verdict::Duplicate { first_offset: 60, last_offset: 69 }));
        assert!(matches!(t.check(&b(1, 0, 10, 10)), Err(SequenceError::OutOfOrder { .. })));
        assert_eq!(t.check(&b(1, 0, 70, 3)), Ok(Verdict::Append));
    }

    #[test]
    fn gaps_and_overlaps_are_out_of_order() {
        let mut t = ProducerStateTable::default();
        t.record(&b(1, 0, 0, 5), 0);
        assert_eq!(t.check(&b(1, 0, 6, 1)), Err(SequenceError::OutOfOrder { got: 6, last: 4, epoch: 0 }));
        assert!(t.check(&b(1, 0, 3, 5)).is_err(), "overlap that is not an exact retry");
        assert_eq!(t.check(&b(1, 0, 5, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut t = ProducerStateTable::default();
        t.record(&b(1, 3, 0, 5), 0);
        assert_eq!(t.check(&b(1, 2, 5, 1)), Err(SequenceError::OldEpoch { got: 2, current: 3 }));
        assert_eq!(SequenceError::OldEpoch { got: 2, current: 3 }.error().code(), 47);
        assert_eq!(t.check(&b(1, 4, 7, 1)), Err(SequenceError::NewEpochNotZero(7)));
        assert_eq!(t.check(&b(1, 4, 0, 1)), Ok(Verdict::Append));
        t.record(&b(1, 4, 0, 1), 5);
        assert_eq!(t.producers[&1].batches.len(), 1, "a new epoch forgets the old batches");
        assert_eq!(t.check(&b(1, 3, 0, 5)), Err(SequenceError::OldEpoch { got: 3, current: 4 }));
    }

    #[test]
    fn markers_fence_older_epochs_and_keep_sequences_within_one() {
        let mut t = ProducerStateTable::default();
        t.record(&b(1, 2, 0, 5), 0);
        assert!(t.check_marker(1, 1, 0).is_err(), "a marker from an older epoch is refused");
        t.record_marker(1, 2, 4, 1000);
        assert_eq!(t.check(&b(1, 2, 5, 1)), Ok(Verdict::Append), "sequences go on in the next transaction");
        assert_eq!(
            t.check_marker(1, 2, 3),
            Err(SequenceError::StaleCoordinator { got: 3, current: 4 }),
            "a marker from an older coordinator is refused"
        );
        assert_eq!(SequenceError::StaleCoordinator { got: 3, current: 4 }.error().code(), 52);
        assert_eq!(t.check_marker(1, 2, 5), Ok(()));
        t.record_marker(1, 3, 4, 1000);
        assert_eq!(t.check(&b(1, 2, 5, 1)), Err(SequenceError::OldEpoch { got: 2, current: 3 }));
        t.record_marker(9, 0, 0, 1000);
        assert_eq!(t.producers[&9].batches.len(), 0);
    }

    #[test]
    fn unknown_producers_may_start_anywhere() {
        let t = ProducerStateTable::default();
        assert_eq!(t.check(&b(9, 0, 0, 1)), Ok(Verdict::Append));
        assert_eq!(t.check(&b(9, 0, 42, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut t = ProducerStateTable::default();
        let batch = b(1, 0, i32::MAX - 1, 4); // MAX-1, MAX, 0, 1
        assert_eq!(batch.last_seq(), 1);
        t.record(&batch, 0);
        assert_eq!(t.check(&b(1, 0, 2, 1)), Ok(Verdict::Append));
        assert_eq!(t.check(&b(1, 0, i32::MAX - 1, 4)), Ok(Verdict::Duplicate { first_offset: 0, last_offset: 3 }));
        let mut t = ProducerStateTable::default();
        t.record(&b(1, 0, i32::MAX - 2, 3), 0); // ends exactly at MAX
        assert_eq!(t.check(&b(1, 0, 0, 1)), Ok(Verdict::Append));
    }

    #[test]
    fn expiry_forgets_idle_producers() {
        let mut t = ProducerStateTable::default();
        t.record(&ProducerBatch { producer_id: 1, epoch: 0, first_seq: 0, offset_delta: 0, max_timestamp: 1_000 }, 0);
        t.record(&ProducerBatch { producer_id: 2, epoch: 0, first_seq: 0, offset_delta: 0, max_timestamp: 5_000 }, 1);
        assert_eq!(t.expire(6_000, 2_000, |_| false), 1);
        assert_eq!(t.expire(60_000, 2_000, |id| id == 2), 0, "a producer with a transaction open stays");
        assert!(t.producers.contains_key(&2) && !t.producers.contains_key(&1));
    }
}
