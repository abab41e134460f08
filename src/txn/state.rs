//! One transactional id's state, as Kafka's `TransactionMetadata` keeps it, and the
//! transitions the coordinator's requests make. Sans-IO: each request is a function of the
//! state, the request and the clock, which answers at once or names the value to write to
//! `__transaction_state`; the coordinator writes it and, once durable, takes it
//! ([`TxnMetadata::complete`]). While a write is in flight the id is *pending*, and other
//! requests for it get CONCURRENT_TRANSACTIONS (clients retry those).
//!
//! ```text
//! Empty | CompleteCommit | CompleteAbort --AddPartitions--> Ongoing --EndTxn--> PrepareCommit | PrepareAbort
//! PrepareCommit --markers written--> CompleteCommit      PrepareAbort --markers written--> CompleteAbort
//! Ongoing --InitProducerId (a new instance) or timeout--> (epoch bumped) PrepareAbort
//! ```

use std::collections::BTreeSet;

use kafka_protocol::ResponseError;

/// Kafka's `TransactionState`, with its codes in `__transaction_state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn code(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_code(code: i8) -> Option<Self> {
        Some(match code {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's name (DescribeTransactions, ListTransactions' state filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    /// Markers are being written: the outcome is decided, not yet in every partition.
    pub fn is_prepared(self) -> bool {
        matches!(self, TxnState::PrepareCommit | TxnState::PrepareAbort)
    }
}

/// What `__transaction_state` holds for a transactional id (Kafka's `TransactionLogValue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnValue {
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The partitions in the transaction (topic, partition), offsets topics included.
    pub partitions: BTreeSet<(String, i32)>,
    pub last_update_ms: i64,
    /// When the transaction began (its first AddPartitions); -1 when none is open.
    pub start_ms: i64,
}

/// The epoch a bump may reach; past it a producer gets a new id (Kafka's
/// `isProducerEpochExhausted`: `Short.MaxValue - 1`).
const EPOCH_MAX: i16 = i16::MAX - 1;

/// The limits the coordinator enforces.
#[derive(Debug, Clone, Copy)]
pub struct TxnLimits {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `weir.transaction.partitions.max`: partitions one transaction may span.
    pub max_partitions: usize,
}

/// One transactional id at its coordinator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub transactional_id: String,
    /// What is durable in `__transaction_state`.
    pub value: TxnValue,
    /// The epoch before the last bump (a retried InitProducerId that lost its answer names it).
    pub last_epoch: i16,
    /// A value being written; requests meanwhile get CONCURRENT_TRANSACTIONS.
    pub pending: Option<TxnValue>,
}

/// What an InitProducerId leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitStep {
    /// Answer now: the producer id and epoch, or an error.
    Reply(Result<(i64, i16), ResponseError>),
    /// Write this value; once durable, answer with its producer id and epoch.
    Write(TxnValue),
    /// A transaction of the previous instance is open: it is aborted with the epoch bumped
    /// (fencing that instance); this value (PrepareAbort) is written first. The request is
    /// answered CONCURRENT_TRANSACTIONS: the client retries and then gets the next epoch.
    FenceAndAbort(TxnValue),
}

/// What AddPartitionsToTxn, AddOffsetsToTxn and EndTxn lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnStep {
    /// Nothing to write: answer success (a retry of what is already done).
    Done,
    /// Write this value; once durable, answer success.
    Write(TxnValue),
}

impl TxnMetadata {
    /// InitProducerId for `transactional_id` (`existing`: its metadata, if the coordinator
    /// has it). `expected`: the producer id and epoch the client has (KIP-360, v3+); a fresh
    /// producer id is used when the id is new or its epochs are exhausted.
    pub fn init_producer_id(
        existing: Option<&TxnMetadata>,
        timeout_ms: i32,
        expected: Option<(i64, i16)>,
        fresh_producer_id: i64,
        limits: &TxnLimits,
        now: i64,
    ) -> InitStep {
        if timeout_ms <= 0 || timeout_ms > limits.max_timeout_ms {
            return InitStep::Reply(Err(ResponseError::InvalidTransactionTimeout));
        }
        let fresh = || TxnValue {
            producer_id: fresh_producer_id,
            producer_epoch: 0,
            timeout_ms,
            state: TxnState::Empty,
            partitions: BTreeSet::new(),
            last_update_ms: now,
            start_ms: -1,
        };
        let Some(m) = existing.filter(|m| m.value.state != TxnState::Dead) else {
            return InitStep::Write(fresh());
        };
        if m.pending.is_some() {
            return InitStep::Reply(Err(ResponseError::ConcurrentTransactions));
        }
        let v = &m.value;
        if let Some((pid, epoch)) = expected {
            if pid != v.producer_id {
                return InitStep::Reply(Err(ResponseError::InvalidProducerIdMapping));
            }
            // A retry whose answer was lost: the bump it asked for is done.
            if epoch == m.last_epoch && epoch != v.producer_epoch && v.state == TxnState::Empty {
                return InitStep::Reply(Ok((v.producer_id, v.producer_epoch)));
            }
            if epoch != v.producer_epoch {
                return InitStep::Reply(Err(ResponseError::ProducerFenced));
            }
        }
        match v.state {
            TxnState::Ongoing => InitStep::FenceAndAbort(TxnValue {
                producer_epoch: bump(v.producer_epoch),
                state: TxnState::PrepareAbort,
                last_update_ms: now,
                ..v.clone()
            }),
            TxnState::PrepareCommit | TxnState::PrepareAbort | TxnState::PrepareEpochFence => {
                InitStep::Reply(Err(ResponseError::ConcurrentTransactions))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Dead => {
                if v.producer_epoch >= EPOCH_MAX {
                    InitStep::Write(fresh())
                } else {
                    InitStep::Write(TxnValue {
                        producer_epoch: v.producer_epoch + 1,
                        timeout_ms,
                        state: TxnState::Empty,
                        partitions: BTreeSet::new(),
                        last_update_ms: now,
                        start_ms: -1,
                        ..v.clone()
                    })
                }
            }
        }
    }

    /// The checks every request of a running producer passes: its id is this one's, its
    /// epoch the current one, and nothing is being written.
    fn check_producer(&self, producer_id: i64, epoch: i16) -> Result<(), ResponseError> {
        if self.value.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if self.value.producer_epoch != epoch {
            return Err(ResponseError::ProducerFenced);
        }
        if self.pending.is_some() {
            return Err(ResponseError::ConcurrentTransactions);
        }
        Ok(())
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn, with the group's offsets partition): the
    /// partitions join the transaction, which begins if none is open.
    pub fn add_partitions(
        &self,
        producer_id: i64,
        epoch: i16,
        partitions: &[(String, i32)],
        limits: &TxnLimits,
        now: i64,
    ) -> Result<TxnStep, ResponseError> {
        self.check_producer(producer_id, epoch)?;
        let v = &self.value;
        let (mut all, start_ms) = match v.state {
            TxnState::Ongoing => (v.partitions.clone(), v.start_ms),
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => (BTreeSet::new(), now),
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(ResponseError::ConcurrentTransactions),
            TxnState::PrepareEpochFence | TxnState::Dead => return Err(ResponseError::InvalidTxnState),
        };
        let before = all.len();
        all.extend(partitions.iter().cloned());
        if v.state == TxnState::Ongoing && all.len() == before {
            return Ok(TxnStep::Done);
        }
        if all.len() > limits.max_partitions {
            return Err(ResponseError::InvalidRequest);
        }
        Ok(TxnStep::Write(TxnValue {
            state: TxnState::Ongoing,
            partitions: all,
            last_update_ms: now,
            start_ms,
            ..v.clone()
        }))
    }

    /// Whether `partition` is in this producer's open transaction (KIP-890's check before a
    /// leader takes transactional data for it).
    pub fn verify(&self, producer_id: i64, epoch: i16, partition: &(String, i32)) -> Result<(), ResponseError> {
        if self.value.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if self.value.producer_epoch != epoch {
            return Err(ResponseError::InvalidProducerEpoch);
        }
        // A write in flight that keeps the transaction open (more partitions joining) does not
        // matter; one that ends it does.
        let open =
            self.value.state == TxnState::Ongoing && self.pending.as_ref().is_none_or(|p| p.state == TxnState::Ongoing);
        if !open || !self.value.partitions.contains(partition) {
            return Err(ResponseError::InvalidTxnState);
        }
        Ok(())
    }

    /// EndTxn: decides the transaction (PrepareCommit or PrepareAbort). A retry of a decision
    /// already carried out succeeds; the opposite decision is INVALID_TXN_STATE.
    pub fn end(&self, producer_id: i64, epoch: i16, commit: bool, now: i64) -> Result<TxnStep, ResponseError> {
        self.check_producer(producer_id, epoch)?;
        let v = &self.value;
        match (v.state, commit) {
            (TxnState::Ongoing, _) => Ok(TxnStep::Write(TxnValue {
                state: if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort },
                last_update_ms: now,
                ..v.clone()
            })),
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(TxnStep::Done),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Err(ResponseError::ConcurrentTransactions)
            }
            _ => Err(ResponseError::InvalidTxnState),
        }
    }

    /// The value that completes a prepared transaction once its markers are written.
    pub fn completed(&self, now: i64) -> Option<TxnValue> {
        let state = match self.value.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        Some(TxnValue { state, partitions: BTreeSet::new(), last_update_ms: now, start_ms: -1, ..self.value.clone() })
    }

    /// An open transaction past its timeout: aborted with the epoch bumped, so the producer
    /// that left it cannot add to it or commit it.
    pub fn timed_out(&self, now: i64) -> Option<TxnValue> {
        let v = &self.value;
        let expired = v.state == TxnState::Ongoing
            && self.pending.is_none()
            && v.start_ms >= 0
            && now.saturating_sub(v.start_ms) > i64::from(v.timeout_ms);
        expired.then(|| TxnValue {
            producer_epoch: bump(v.producer_epoch),
            state: TxnState::PrepareAbort,
            last_update_ms: now,
            ..v.clone()
        })
    }

    /// A write of `value` begins.
    pub fn begin_write(&mut self, value: TxnValue) {
        self.pending = Some(value);
    }

    /// The write in flight is durable: it becomes the state.
    pub fn complete(&mut self) {
        if let Some(v) = self.pending.take() {
            if v.producer_epoch != self.value.producer_epoch {
                self.last_epoch = self.value.producer_epoch;
            }
            self.value = v;
        }
    }

    /// The write in flight failed: the state stays what was durable.
    pub fn abandon_write(&mut self) {
        self.pending = None;
    }

    /// A transactional id new to the coordinator, with the value about to be written.
    pub fn new_pending(transactional_id: String, value: TxnValue) -> TxnMetadata {
        TxnMetadata {
            transactional_id,
            value: TxnValue { state: TxnState::Dead, ..value.clone() },
            last_epoch: -1,
            pending: Some(value),
        }
    }
}

/// The next epoch when fencing (stays at the last usable one when exhausted; the next
/// InitProducerId then hands out a new producer id).
fn bump(epoch: i16) -> i16 {
    if epoch >= EPOCH_MAX {
        EPOCH_MAX
    } else {
        epoch + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: TxnLimits = TxnLimits { max_timeout_ms: 900_000, max_partitions: 3 };

    fn tp(t: &str, p: i32) -> (String, i32) {
        (t.to_string(), p)
    }

    /// Runs InitProducerId and takes its write, as the coordinator would.
    fn init(m: Option<TxnMetadata>, expected: Option<(i64, i16)>, now: i64) -> TxnMetadata {
        match TxnMetadata::init_producer_id(m.as_ref(), 60_000, expected, 100, &LIMITS, now) {
            InitStep::Write(v) => {
                let mut m = m.unwrap_or_else(|| TxnMetadata::new_pending("t".into(), v.clone()));
                m.begin_write(v);
                m.complete();
                m
            }
            other => panic!("expected a write, got {other:?}"),
        }
    }

    fn apply(m: &mut TxnMetadata, step: Result<TxnStep, ResponseError>) {
        match step.expect("accepted") {
            TxnStep::Write(v) => {
                m.begin_write(v);
                m.complete();
            }
            TxnStep::Done => {}
        }
    }

    #[test]
    fn a_transaction_runs_empty_ongoing_prepare_complete() {
        let mut m = init(None, None, 1);
        assert_eq!((m.value.producer_id, m.value.producer_epoch, m.value.state), (100, 0, TxnState::Empty));
        let step = m.add_partitions(100, 0, &[tp("a", 0), tp("b", 1)], &LIMITS, 5);
        apply(&mut m, step);
        assert_eq!((m.value.state, m.value.start_ms, m.value.partitions.len()), (TxnState::Ongoing, 5, 2));
        assert_eq!(m.add_partitions(100, 0, &[tp("a", 0)], &LIMITS, 6), Ok(TxnStep::Done), "already in");
        assert_eq!(m.verify(100, 0, &tp("b", 1)), Ok(()));
        assert_eq!(m.verify(100, 0, &tp("c", 0)), Err(ResponseError::InvalidTxnState));
        let mut adding = m.clone();
        adding.begin_write(TxnValue { partitions: BTreeSet::new(), ..m.value.clone() });
        assert_eq!(adding.verify(100, 0, &tp("b", 1)), Ok(()), "partitions joining meanwhile do not matter");
        adding.pending.as_mut().expect("pending").state = TxnState::PrepareCommit;
        assert_eq!(adding.verify(100, 0, &tp("b", 1)), Err(ResponseError::InvalidTxnState), "ending does");
        let step = m.end(100, 0, true, 7);
        apply(&mut m, step);
        assert_eq!(m.value.state, TxnState::PrepareCommit);
        assert_eq!(m.end(100, 0, true, 8), Err(ResponseError::ConcurrentTransactions));
        assert_eq!(m.end(100, 0, false, 8), Err(ResponseError::InvalidTxnState));
        assert_eq!(m.add_partitions(100, 0, &[tp("a", 0)], &LIMITS, 8), Err(ResponseError::ConcurrentTransactions));
        let done = m.completed(9).expect("prepared");
        m.begin_write(done);
        m.complete();
        assert_eq!((m.value.state, m.value.partitions.len()), (TxnState::CompleteCommit, 0));
        assert_eq!(m.end(100, 0, true, 10), Ok(TxnStep::Done), "a retried commit succeeds");
        assert_eq!(m.end(100, 0, false, 10), Err(ResponseError::InvalidTxnState));
        // The next transaction.
        let step = m.add_partitions(100, 0, &[tp("c", 0)], &LIMITS, 11);
        apply(&mut m, step);
        assert_eq!((m.value.state, m.value.start_ms), (TxnState::Ongoing, 11));
    }

    #[test]
    fn bad_requests_get_kafkas_errors() {
        let mut m = init(None, None, 1);
        assert_eq!(m.end(100, 0, true, 2), Err(ResponseError::InvalidTxnState), "EndTxn without a transaction");
        assert_eq!(m.add_partitions(7, 0, &[tp("a", 0)], &LIMITS, 2), Err(ResponseError::InvalidProducerIdMapping));
        assert_eq!(m.add_partitions(100, 3, &[tp("a", 0)], &LIMITS, 2), Err(ResponseError::ProducerFenced));
        let four = [tp("a", 0), tp("a", 1), tp("a", 2), tp("a", 3)];
        assert_eq!(m.add_partitions(100, 0, &four, &LIMITS, 2), Err(ResponseError::InvalidRequest));
        m.begin_write(m.value.clone());
        assert_eq!(m.add_partitions(100, 0, &[tp("a", 0)], &LIMITS, 2), Err(ResponseError::ConcurrentTransactions));
        m.abandon_write();
        let step = TxnMetadata::init_producer_id(Some(&m), 1_000_000, None, 5, &LIMITS, 3);
        assert_eq!(step, InitStep::Reply(Err(ResponseError::InvalidTransactionTimeout)));
    }

    #[test]
    fn a_new_instance_bumps_the_epoch_and_fences_the_old_one() {
        let mut m = init(None, None, 1);
        let m2 = init(Some(m.clone()), None, 2);
        assert_eq!((m2.value.producer_id, m2.value.producer_epoch), (100, 1));
        assert_eq!(m2.add_partitions(100, 0, &[tp("a", 0)], &LIMITS, 3), Err(ResponseError::ProducerFenced));
        // With a transaction open, the new instance's InitProducerId aborts it first.
        let step = m.add_partitions(100, 0, &[tp("a", 0)], &LIMITS, 3);
        apply(&mut m, step);
        let InitStep::FenceAndAbort(abort) = TxnMetadata::init_producer_id(Some(&m), 60_000, None, 5, &LIMITS, 4)
        else {
            panic!("an open transaction is aborted first")
        };
        assert_eq!((abort.state, abort.producer_epoch, abort.partitions.len()), (TxnState::PrepareAbort, 1, 1));
        m.begin_write(abort);
        assert_eq!(
            TxnMetadata::init_producer_id(Some(&m), 60_000, None, 5, &LIMITS, 4),
            InitStep::Reply(Err(ResponseError::ConcurrentTransactions))
        );
        m.complete();
        assert_eq!(m.end(100, 0, true, 5), Err(ResponseError::ProducerFenced), "the old instance cannot commit");
        let done = m.completed(6).expect("prepared");
        m.begin_write(done);
        m.complete();
        let m = init(Some(m), None, 7);
        assert_eq!((m.value.producer_epoch, m.value.state), (2, TxnState::Empty));
    }

    #[test]
    fn kip_360_retries_and_exhausted_epochs() {
        let m = init(None, None, 1);
        let m = init(Some(m), Some((100, 0)), 2);
        assert_eq!(m.value.producer_epoch, 1);
        // The answer was lost; the client asks again with what it had.
        let again = TxnMetadata::init_producer_id(Some(&m), 60_000, Some((100, 0)), 5, &LIMITS, 3);
        assert_eq!(again, InitStep::Reply(Ok((100, 1))));
        let wrong = TxnMetadata::init_producer_id(Some(&m), 60_000, Some((99, 1)), 5, &LIMITS, 3);
        assert_eq!(wrong, InitStep::Reply(Err(ResponseError::InvalidProducerIdMapping)));
        let mut old = m.clone();
        old.value.producer_epoch = EPOCH_MAX;
        let renewed = init(Some(old), None, 4);
        assert_eq!((renewed.value.producer_id, renewed.value.producer_epoch), (100, 0), "a fresh id at epoch 0");
    }

    #[test]
    fn an_open_transaction_times_out_into_an_abort_with_a_new_epoch() {
        let mut m = init(None, None, 1);
        assert_eq!(m.timed_out(1_000_000), None, "nothing open");
        let step = m.add_partitions(100, 0, &[tp("a", 0)], &LIMITS, 10);
        apply(&mut m, step);
        assert_eq!(m.timed_out(60_010), None);
        let abort = m.timed_out(60_011).expect("past the timeout");
        assert_eq!((abort.state, abort.producer_epoch), (TxnState::PrepareAbort, 1));
        for state in [TxnState::Empty, TxnState::Ongoing, TxnState::PrepareEpochFence, TxnState::CompleteAbort] {
            assert_eq!(TxnState::from_code(state.code()), Some(state));
        }
    }
}
