//! A producer's standing with the broker when it is idempotent or transactional: its
//! producer id and epoch (InitProducerId), and for a transactional producer the calls to its
//! transaction coordinator (AddPartitionsToTxn, EndTxn), retried the way Kafka's clients
//! retry them. Request and response only; the producer's event loop decides when.

use std::time::Duration;

use kafka_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use kafka_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, InitProducerIdRequest, ProducerId, TopicName, TransactionalId,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::debug;
use weir::client::{check, find_transaction_coordinator, ClientError, Connection};

use crate::cluster::{self, Cluster, ADMIN_TIMEOUT};

/// How long a call keeps retrying errors Kafka calls retriable (a coordinator loading or
/// moving, a transaction still completing) before the run is told.
const RETRY_FOR: Duration = Duration::from_secs(30);
/// Pause between retries.
const RETRY_BACKOFF: Duration = Duration::from_millis(20);

/// The producer id and epoch stamped on every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub producer_id: i64,
    pub epoch: i16,
}

/// An idempotent producer's identity, from any broker.
pub async fn init_idempotent(cluster: &Cluster) -> Result<Identity, ClientError> {
    let mut conn = any_broker(cluster).await?;
    let mut request = InitProducerIdRequest::default();
    request.transactional_id = None;
    request.transaction_timeout_ms = -1;
    request.producer_id = ProducerId(-1);
    request.producer_epoch = -1;
    let response = conn.call(&request, ADMIN_TIMEOUT).await?;
    check(response.error_code, || "InitProducerId".to_string())?;
    Ok(Identity { producer_id: response.producer_id.0, epoch: response.producer_epoch })
}

/// A transactional producer's session with its coordinator.
pub struct Transactions {
    transactional_id: String,
    timeout_ms: i32,
    coordinator: Connection,
    pub identity: Identity,
}

impl Transactions {
    /// Finds the coordinator of `transactional_id` and takes the id (fencing any earlier
    /// producer with it).
    pub async fn start(cluster: &Cluster, transactional_id: String, timeout_ms: i32) -> Result<Self, ClientError> {
        let coordinator = Self::connect_coordinator(cluster, &transactional_id).await?;
        let mut t = Transactions {
            transactional_id,
            timeout_ms,
            coordinator,
            identity: Identity { producer_id: -1, epoch: -1 },
        };
        let mut request = InitProducerIdRequest::default();
        request.transactional_id = Some(TransactionalId(StrBytes::from_string(t.transactional_id.clone())));
        request.transaction_timeout_ms = t.timeout_ms;
        request.producer_id = ProducerId(-1);
        request.producer_epoch = -1;
        let response = t.retrying(cluster, "InitProducerId", &request, |r| r.error_code).await?;
        t.identity = Identity { producer_id: response.producer_id.0, epoch: response.producer_epoch };
        Ok(t)
    }

    /// The id, as Produce requests carry it.
    pub fn transactional_id(&self) -> TransactionalId {
        TransactionalId(StrBytes::from_string(self.transactional_id.clone()))
    }

    /// Adds partitions to the transaction (before the first batch to each).
    pub async fn add_partitions(
        &mut self,
        cluster: &Cluster,
        topics: &[(TopicName, Vec<i32>)],
    ) -> Result<(), ClientError> {
        let mut request = AddPartitionsToTxnRequest::default();
        request.v3_and_below_transactional_id = self.transactional_id();
        request.v3_and_below_producer_id = ProducerId(self.identity.producer_id);
        request.v3_and_below_producer_epoch = self.identity.epoch;
        request.v3_and_below_topics = topics
            .iter()
            .map(|(name, partitions)| {
                let mut t = AddPartitionsToTxnTopic::default();
                t.name = name.clone();
                t.partitions = partitions.clone();
                t
            })
            .collect();
        let worst = |r: &kafka_protocol::messages::AddPartitionsToTxnResponse| {
            r.results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter().map(|p| p.partition_error_code))
                .find(|c| *c != 0)
                .unwrap_or(r.error_code)
        };
        self.retrying(cluster, "AddPartitionsToTxn", &request, worst).await.map(|_| ())
    }

    /// Commits the transaction (every batch of it must be acknowledged first).
    pub async fn commit(&mut self, cluster: &Cluster) -> Result<(), ClientError> {
        let mut request = EndTxnRequest::default();
        request.transactional_id = self.transactional_id();
        request.producer_id = ProducerId(self.identity.producer_id);
        request.producer_epoch = self.identity.epoch;
        request.committed = true;
        self.retrying(cluster, "EndTxn", &request, |r| r.error_code).await.map(|_| ())
    }

    /// Calls the coordinator until the answer is not a retriable error, finding the
    /// coordinator again when it moved.
    async fn retrying<R: kafka_protocol::protocol::Request>(
        &mut self,
        cluster: &Cluster,
        what: &str,
        request: &R,
        code: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response, ClientError> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        loop {
            let response = self.coordinator.call(request, ADMIN_TIMEOUT).await?;
            let error = ResponseError::try_from_code(code(&response));
            let retriable = matches!(
                error,
                Some(ResponseError::ConcurrentTransactions)
                    | Some(ResponseError::CoordinatorLoadInProgress)
                    | Some(ResponseError::CoordinatorNotAvailable)
                    | Some(ResponseError::NotCoordinator)
            );
            if !retriable || std::time::Instant::now() >= deadline {
                check(code(&response), || format!("{what} for transactional id {}", self.transactional_id))?;
                return Ok(response);
            }
            debug!(what, error = ?error, "retrying a transaction call");
            glommio::timer::sleep(RETRY_BACKOFF).await;
            if matches!(error, Some(ResponseError::NotCoordinator) | Some(ResponseError::CoordinatorNotAvailable)) {
                self.coordinator = Self::connect_coordinator(cluster, &self.transactional_id).await?;
            }
        }
    }

    async fn connect_coordinator(cluster: &Cluster, transactional_id: &str) -> Result<Connection, ClientError> {
        let deadline = std::time::Instant::now() + RETRY_FOR;
        loop {
            let mut conn = any_broker(cluster).await?;
            match find_transaction_coordinator(&mut conn, transactional_id, ADMIN_TIMEOUT).await {
                Ok(found) => return cluster::connect(&found.addr).await,
                // The state topic is being created or loaded.
                Err(ClientError::Broker { error, .. })
                    if error.is_retriable() && std::time::Instant::now() < deadline =>
                {
                    glommio::timer::sleep(RETRY_BACKOFF * 5).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A connection to some broker of the cluster (the lowest id that answers).
async fn any_broker(cluster: &Cluster) -> Result<Connection, ClientError> {
    let mut ids: Vec<&i32> = cluster.brokers.keys().collect();
    ids.sort();
    let mut last = None;
    for id in ids {
        match cluster::connect(&cluster.brokers[id]).await {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| ClientError::Connect {
        addr: "(no broker)".into(),
        source: std::io::Error::other("the cluster lists no broker"),
    }))
}
