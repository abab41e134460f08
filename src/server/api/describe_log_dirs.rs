//! DescribeLogDirs (key 35), v0-4: this broker's data directory (Weir has one) with every
//! partition replica it holds — its size in bytes and its offset lag (how far its log end
//! is behind the high watermark) — and, from v4, the filesystem's total and usable bytes.
//! `topics` null asks for every partition; otherwise only those named (unknown ones are
//! left out, as Kafka does).
//!
//! v0 is what kafka-python sends; its request and response are byte for byte v1's (v1 only
//! changed how throttling is applied), so v0 is decoded and answered with the v1 codec.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::rc::Rc;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{ApiKey, DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tracing::warn;

use bytes::Bytes;
use kafka_protocol::protocol::Decodable;

use super::{encode_frame, ready, Pending, Reply, RequestContext, RequestError};
use crate::shard::Shard;

pub async fn handle(shard: &Rc<Shard>, ctx: &RequestContext, mut body: Bytes) -> Result<Pending, RequestError> {
    let version = ctx.version.max(1);
    let request = DescribeLogDirsRequest::decode(&mut body, version).map_err(|e| RequestError::Malformed {
        api: ctx.api,
        version: ctx.version,
        reason: e.to_string(),
    })?;
    Ok(ready(answer(shard, version, ctx.correlation_id, request).await))
}

async fn answer(shard: &Rc<Shard>, version: i16, correlation_id: i32, request: DescribeLogDirsRequest) -> Reply {
    let wanted: Option<HashSet<(String, i32)>> = request
        .topics
        .as_ref()
        .map(|topics| topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.topic.0.to_string(), *p))).collect());
    let mut by_topic: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
    for e in shard.all_log_dirs().await {
        if wanted.as_ref().is_some_and(|w| !w.contains(&(e.tp.topic.clone(), e.tp.partition))) {
            continue;
        }
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = e.tp.partition;
        p.partition_size = i64::try_from(e.size).unwrap_or(i64::MAX);
        p.offset_lag = e.offset_lag;
        p.is_future_key = false;
        by_topic.entry(e.tp.topic).or_default().push(p);
    }
    let dir = &shard.config.data_dir;
    let mut result = DescribeLogDirsResult::default();
    result.log_dir =
        StrBytes::from_string(std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone()).display().to_string());
    result.topics = by_topic
        .into_iter()
        .map(|(name, mut partitions)| {
            partitions.sort_by_key(|p| p.partition_index);
            let mut t = DescribeLogDirsTopic::default();
            t.name = TopicName(StrBytes::from_string(name));
            t.partitions = partitions;
            t
        })
        .collect();
    match filesystem_bytes(dir) {
        Ok((total, usable)) => {
            result.total_bytes = total;
            result.usable_bytes = usable;
        }
        Err(e) => {
            warn!(dir = %dir.display(), error = %e, "cannot read the data directory's filesystem size");
            result.error_code = ResponseError::KafkaStorageError.code();
            result.total_bytes = -1;
            result.usable_bytes = -1;
        }
    }
    let mut response = DescribeLogDirsResponse::default();
    response.results = vec![result];
    encode_frame(ApiKey::DescribeLogDirs, version, correlation_id, &response)
}

/// The filesystem's size and the bytes an unprivileged writer may still use (statvfs).
fn filesystem_bytes(dir: &Path) -> std::io::Result<(i64, i64)> {
    let stat = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    let block = stat.fragment_size() as i64;
    Ok(((stat.blocks() as i64).saturating_mul(block), (stat.blocks_available() as i64).saturating_mul(block)))
}
