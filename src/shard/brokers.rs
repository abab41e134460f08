//! A shard's connections to the other brokers, for the calls one broker makes of another
//! on a client's behalf: a transaction's markers (WriteTxnMarkers) and KIP-890's check of a
//! transactional batch with its coordinator (AddPartitionsToTxn v4). Connections are kept
//! between calls, a few per broker; one that failed is dropped and the next call connects
//! again. The client id names the calling broker, and the handlers of those two APIs take
//! them only from a broker (Weir has no authentication yet: this keeps a client tool from
//! writing markers by mistake, it is not a security boundary).

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kafka_protocol::protocol::Request;

use crate::client::{broker_address, ClientError, Connection};
use crate::cluster::MetadataImage;
use crate::config::Config;

/// The client id prefix of broker-to-broker calls (followed by the caller's node id).
pub const BROKER_CLIENT_ID_PREFIX: &str = "weir-broker-";
/// Idle connections kept per broker.
const IDLE_PER_BROKER: usize = 4;

/// Whether a request's client id says it comes from a broker.
pub fn from_broker(client_id: &str) -> bool {
    client_id.starts_with(BROKER_CLIENT_ID_PREFIX)
}

/// Partitions grouped by topic, in topic order, as the requests between brokers carry them.
pub fn by_topic<'a>(partitions: impl IntoIterator<Item = (&'a str, i32)>) -> BTreeMap<&'a str, Vec<i32>> {
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        topics.entry(topic).or_default().push(partition);
    }
    topics
}

pub struct BrokerClients {
    client_id: String,
    /// How long a connect or a call may take.
    timeout: Duration,
    /// Idle connections by broker id, with the address they were opened to.
    idle: RefCell<HashMap<i32, Vec<(String, Connection)>>>,
}

impl BrokerClients {
    pub fn new(config: &Config) -> Self {
        BrokerClients {
            client_id: format!("{BROKER_CLIENT_ID_PREFIX}{}", config.node_id),
            timeout: Duration::from_millis(config.quorum_request_timeout_ms.max(5000)),
            idle: RefCell::default(),
        }
    }

    /// Calls broker `broker` (its address from `image`) at `version` (`None`: the highest
    /// both speak), on a kept connection when there is one to its current address.
    pub async fn call<R: Request>(
        &self,
        image: &MetadataImage,
        broker: i32,
        request: &R,
        version: Option<i16>,
    ) -> Result<R::Response, ClientError> {
        let timeout = self.timeout;
        let addr = image
            .brokers
            .get(&broker)
            .map(|b| broker_address(&b.registration.host, i32::from(b.registration.port)))
            .ok_or_else(|| ClientError::Protocol {
                addr: format!("broker {broker}"),
                message: "not in the cluster's metadata".into(),
            })?;
        let kept = {
            let mut idle = self.idle.borrow_mut();
            let list = idle.entry(broker).or_default();
            list.retain(|(a, _)| *a == addr);
            list.pop()
        };
        let (connection, response) = match kept {
            Some((_, mut c)) => match exchange(&mut c, request, version, timeout).await {
                Ok(r) => (c, r),
                // The broker may have closed a kept connection (a restart): once more, anew.
                Err(ClientError::Disconnected { .. }) => {
                    let mut c = Connection::connect(&addr, &self.client_id, timeout).await?;
                    let r = exchange(&mut c, request, version, timeout).await?;
                    (c, r)
                }
                Err(e) => return Err(e),
            },
            None => {
                let mut c = Connection::connect(&addr, &self.client_id, timeout).await?;
                let r = exchange(&mut c, request, version, timeout).await?;
                (c, r)
            }
        };
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(broker).or_default();
        if list.len() < IDLE_PER_BROKER {
            list.push((addr, connection));
        }
        Ok(response)
    }
}

async fn exchange<R: Request>(
    connection: &mut Connection,
    request: &R,
    version: Option<i16>,
    timeout: Duration,
) -> Result<R::Response, ClientError> {
    match version {
        Some(v) => connection.call_version(request, v, timeout).await,
        None => connection.call(request, timeout).await,
    }
}
