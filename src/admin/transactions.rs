//! `weir transactions list|describe`: the transactional ids the cluster's coordinators
//! keep (ListTransactions asked of every broker, as Kafka's admin client does) and one id's
//! state at its coordinator (FindCoordinator, then DescribeTransactions).
//!
//! Runs on the glommio executor the `weir` CLI starts for the command, over
//! [`crate::client`]; every request waits at most 10 s.

use std::fmt::Write as _;
use std::time::Duration;

use kafka_protocol::messages::{DescribeTransactionsRequest, ListTransactionsRequest, ProducerId, TransactionalId};
use kafka_protocol::protocol::StrBytes;

use crate::client::{check, find_transaction_coordinator, read_metadata, ClientError, Connection};

const TIMEOUT: Duration = Duration::from_secs(10);
const CLIENT_ID: &str = "weir-cli";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ListedTransaction {
    pub transactional_id: String,
    pub producer_id: i64,
    pub state: String,
    /// The broker coordinating it.
    pub coordinator: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TransactionReport {
    pub transactional_id: String,
    pub coordinator: i32,
    pub state: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    /// When the open transaction began (ms since the epoch); -1 when none is open.
    pub start_ms: i64,
    /// The partitions in the open transaction, as `topic-partition`.
    pub partitions: Vec<String>,
}

/// Every transactional id, from every broker; `states` and `producers` filter as
/// ListTransactions does.
pub async fn list(
    bootstrap: &str,
    states: &[String],
    producers: &[i64],
) -> Result<Vec<ListedTransaction>, ClientError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let metadata = read_metadata(&mut conn, Some(&[]), TIMEOUT).await?;
    let mut brokers: Vec<(i32, String)> = metadata.brokers.into_iter().collect();
    brokers.sort();
    let mut all = Vec::new();
    for (node, addr) in brokers {
        let mut broker = Connection::connect(&addr, CLIENT_ID, TIMEOUT).await?;
        let mut request = ListTransactionsRequest::default();
        request.state_filters = states.iter().map(|s| StrBytes::from_string(s.clone())).collect();
        request.producer_id_filters = producers.iter().map(|p| ProducerId(*p)).collect();
        let response = broker.call(&request, TIMEOUT).await?;
        check(response.error_code, || format!("ListTransactions at broker {node}"))?;
        if let Some(unknown) = response.unknown_state_filters.first() {
            return Err(ClientError::Protocol {
                addr,
                message: format!("unknown transaction state {unknown} (states: Empty, Ongoing, PrepareCommit, PrepareAbort, CompleteCommit, CompleteAbort, PrepareEpochFence)"),
            });
        }
        all.extend(response.transaction_states.into_iter().map(|t| ListedTransaction {
            transactional_id: t.transactional_id.to_string(),
            producer_id: t.producer_id.0,
            state: t.transaction_state.to_string(),
            coordinator: node,
        }));
    }
    all.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
    Ok(all)
}

/// One transactional id's state, from its coordinator.
pub async fn describe(bootstrap: &str, transactional_id: &str) -> Result<TransactionReport, ClientError> {
    let mut conn = Connection::connect(bootstrap, CLIENT_ID, TIMEOUT).await?;
    let found = find_transaction_coordinator(&mut conn, transactional_id, TIMEOUT).await?;
    let addr = found.addr;
    let mut coordinator = Connection::connect(&addr, CLIENT_ID, TIMEOUT).await?;
    let mut request = DescribeTransactionsRequest::default();
    request.transactional_ids = vec![TransactionalId(StrBytes::from_string(transactional_id.to_string()))];
    let response = coordinator.call(&request, TIMEOUT).await?;
    let t = response.transaction_states.into_iter().next().ok_or_else(|| ClientError::Protocol {
        addr: addr.clone(),
        message: "DescribeTransactions answered nothing".into(),
    })?;
    check(t.error_code, || format!("DescribeTransactions for {transactional_id}"))?;
    Ok(TransactionReport {
        transactional_id: t.transactional_id.to_string(),
        coordinator: found.node_id,
        state: t.transaction_state.to_string(),
        producer_id: t.producer_id.0,
        producer_epoch: t.producer_epoch,
        timeout_ms: t.transaction_timeout_ms,
        start_ms: t.transaction_start_time_ms,
        partitions: t
            .topics
            .iter()
            .flat_map(|d| d.partitions.iter().map(move |p| format!("{}-{p}", d.topic.as_str())))
            .collect(),
    })
}

pub fn format_list(list: &[ListedTransaction]) -> String {
    let mut out = format!("{:<40} {:>12} {:<16} {:>11}\n", "TRANSACTIONAL ID", "PRODUCER ID", "STATE", "COORDINATOR");
    for t in list {
        let _ = writeln!(out, "{:<40} {:>12} {:<16} {:>11}", t.transactional_id, t.producer_id, t.state, t.coordinator);
    }
    out
}

pub fn format_report(t: &TransactionReport) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "transactional id  {}", t.transactional_id);
    let _ = writeln!(out, "coordinator       {}", t.coordinator);
    let _ = writeln!(out, "state             {}", t.state);
    let _ = writeln!(out, "producer          id {} epoch {}", t.producer_id, t.producer_epoch);
    let _ = writeln!(out, "timeout           {} ms", t.timeout_ms);
    if t.start_ms >= 0 {
        let _ = writeln!(out, "started at        {} ms since the epoch", t.start_ms);
    }
    let _ = writeln!(
        out,
        "partitions        {}",
        if t.partitions.is_empty() { "-".into() } else { t.partitions.join(", ") }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_name_every_field() {
        let list = vec![ListedTransaction {
            transactional_id: "app-1".into(),
            producer_id: 1000,
            state: "Ongoing".into(),
            coordinator: 2,
        }];
        let table = format_list(&list);
        assert!(table.contains("app-1") && table.contains("Ongoing") && table.contains("1000"));
        let report = TransactionReport {
            transactional_id: "app-1".into(),
            coordinator: 2,
            state: "Ongoing".into(),
            producer_id: 1000,
            producer_epoch: 3,
            timeout_ms: 60000,
            start_ms: 17,
            partitions: vec!["t-0".into(), "t-1".into()],
        };
        let text = format_report(&report);
        assert!(text.contains("epoch 3") && text.contains("t-0, t-1") && text.contains("60000 ms"));
    }
}
