//! A partition on its owning shard: the log plus the long-poll fetches waiting for it.
//!
//! Runs on the owning data shard. A waiter is a one-shot sender: an append fires every
//! waiter at once, so a parked fetch wakes on the append, not on its timeout. Waiters whose
//! fetch gave up (receiver dropped) are pruned whenever a new one registers.

pub mod producer_state;
pub mod snapshot;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use futures::channel::oneshot;

use self::producer_state::{ProducerBatch, ProducerStateTable};
use crate::protocol::batch::BatchHeader;
use crate::storage::Log;
use crate::types::{Offset, TopicPartition};

/// Buffered bytes per partition beyond which even acks=0 produce waits for the disk.
const WRITE_BACKLOG_BYTES_MAX: u64 = 32 << 20;

/// A parked fetch, shared by every partition it watches; fired once.
pub type Waiter = Rc<RefCell<Option<oneshot::Sender<()>>>>;

pub struct Partition {
    pub tp: TopicPartition,
    pub topic_id: uuid::Uuid,
    pub log: Log,
    waiters: RefCell<Vec<Waiter>>,
    /// A background write is queued (see `shard::ops::schedule_write`).
    pub write_scheduled: Cell<bool>,
    /// Idempotent producers writing to this partition.
    pub producers: RefCell<ProducerStateTable>,
}

impl Partition {
    pub fn new(tp: TopicPartition, topic_id: uuid::Uuid, log: Log) -> Self {
        Self {
            tp,
            topic_id,
            log,
            waiters: RefCell::new(Vec::new()),
            write_scheduled: Cell::new(false),
            producers: RefCell::new(ProducerStateTable::default()),
        }
    }

    /// Rebuilds producer state: the newest snapshot, then the batches after it.
    pub async fn recover_producers(&self) -> Result<(), crate::storage::LogError> {
        let dir = self.log.dir().to_path_buf();
        let end = self.log.next_offset();
        let (mut table, from) = glommio::executor().spawn_blocking(move || snapshot::load_latest(&dir, end)).await;
        self.log
            .for_each_batch(from, |h| {
                if let Some(batch) = producer_batch(h) {
                    table.record(&batch, h.base_offset());
                }
            })
            .await?;
        *self.producers.borrow_mut() = table;
        Ok(())
    }

    /// Writes a snapshot of `table` (the state below `offset`) without blocking the shard.
    pub async fn write_snapshot(&self, table: ProducerStateTable, offset: crate::types::Offset) {
        let dir = self.log.dir().to_path_buf();
        let written = glommio::executor().spawn_blocking(move || snapshot::write(&dir, &table, offset)).await;
        if let Err(e) = written {
            tracing::warn!(partition = %self.tp, error = %e, "producer snapshot not written; recovery will replay more log");
        }
    }

    /// Waits until `last_offset` meets `acks` (-1: synced, 1: written; 0: written only if
    /// the partition is backlogged). The I/O runs in its own task, so a caller that gives up
    /// (a produce timeout, a closed connection) never cancels a write half way.
    pub fn durable(
        self: &Rc<Self>,
        acks: i16,
        last_offset: crate::types::Offset,
    ) -> futures::channel::oneshot::Receiver<Result<(), crate::storage::LogError>> {
        let (tx, rx) = futures::channel::oneshot::channel();
        let p = self.clone();
        glommio::spawn_local(async move {
            let log = &p.log;
            let result = match acks {
                -1 => log.sync_to(last_offset).await,
                1 => log.write_to(last_offset).await,
                _ if log.unwritten_bytes() > WRITE_BACKLOG_BYTES_MAX => log.write_to(last_offset).await,
                _ => Ok(()),
            };
            // Written data is visible now: wake the parked fetches.
            p.notify();
            let _ = tx.send(result);
        })
        .detach();
        rx
    }

    /// Offsets below this are visible to consumers: what has reached the segment files, so
    /// a consumer never sees (nor commits past) a record that a broker crash could take back.
    /// (Kafka's single-node equivalent is the log end in the page cache.)
    pub fn high_watermark(&self) -> Offset {
        self.log.written_offset()
    }

    /// Parks `waiter` until the log grows past `offset`; fires it now if it already has.
    pub fn watch(&self, offset: Offset, waiter: &Waiter) {
        if self.high_watermark() > offset {
            fire(waiter);
            return;
        }
        let mut waiters = self.waiters.borrow_mut();
        waiters.retain(|w| w.borrow().as_ref().is_some_and(|s| !s.is_canceled()));
        waiters.push(waiter.clone());
    }

    /// Wakes every parked fetch (after an append).
    pub fn notify(&self) {
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for w in &waiters {
            fire(w);
        }
    }
}

fn fire(waiter: &Waiter) {
    if let Some(sender) = waiter.borrow_mut().take() {
        let _ = sender.send(());
    }
}

/// The producer fields of an idempotent data batch; `None` for other batches.
pub fn producer_batch(h: &BatchHeader<'_>) -> Option<ProducerBatch> {
    (h.producer_id() >= 0 && !h.is_control()).then(|| ProducerBatch {
        producer_id: h.producer_id(),
        epoch: h.producer_epoch(),
        first_seq: h.base_sequence(),
        offset_delta: h.last_offset_delta(),
        max_timestamp: h.max_timestamp(),
    })
}
