//! What DescribeConfigs reports and AlterConfigs checks: every broker setting and every
//! topic config, with Kafka's type codes, defaults, documentation, whether a broker setting
//! may change at runtime (stored in the metadata as a dynamic broker config), and which
//! broker settings a topic config falls back to (Kafka's synonyms, most specific first).

/// Kafka's config types (`DescribeConfigsResponse.config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Short = 4,
    Long = 5,
    Double = 6,
    List = 7,
}

/// Whether a broker setting can be changed at runtime (IncrementalAlterConfigs on a broker
/// resource), for one broker or as the cluster default. Kafka refuses the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Update {
    ReadOnly,
    Dynamic,
}

/// One broker setting.
#[derive(Debug, Clone, Copy)]
pub struct BrokerConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// Kafka's (or Weir's) default as text; `None` where the default is "unset" (e.g.
    /// `log.retention.ms`, which then falls back to `log.retention.minutes`).
    pub default: Option<&'static str>,
    pub update: Update,
    pub doc: &'static str,
}

/// What a topic config's value must be.
#[derive(Debug, Clone, Copy)]
pub enum Valid {
    /// A whole number in `[min, max]`.
    Between(i64, i64),
    /// A number in `[0, 1]`.
    Ratio,
    Boolean,
    /// One of these strings.
    OneOf(&'static [&'static str]),
    /// A comma-separated list of these strings.
    ListOf(&'static [&'static str]),
}

/// One topic config.
#[derive(Debug, Clone, Copy)]
pub struct TopicConfigDef {
    pub name: &'static str,
    pub ty: ConfigType,
    /// The default when neither the topic nor a broker synonym sets it.
    pub default: &'static str,
    /// Broker settings it falls back to, most specific first (Kafka's synonyms).
    pub synonyms: &'static [&'static str],
    pub valid: Valid,
    /// Whether Weir acts on it; the others are stored and reported only.
    pub applied: bool,
    pub doc: &'static str,
}

const fn broker(
    name: &'static str,
    ty: ConfigType,
    default: Option<&'static str>,
    update: Update,
    doc: &'static str,
) -> BrokerConfigDef {
    BrokerConfigDef { name, ty, default, update, doc }
}

const fn topic(
    name: &'static str,
    ty: ConfigType,
    default: &'static str,
    synonyms: &'static [&'static str],
    valid: Valid,
    applied: bool,
    doc: &'static str,
) -> TopicConfigDef {
    TopicConfigDef { name, ty, default, synonyms, valid, applied, doc }
}

use ConfigType::{Boolean, Double, Int, List, Long, Short, String as Str};
use Update::{Dynamic, ReadOnly};

const LONG_MAX: i64 = i64::MAX;
const INT_MAX: i64 = i32::MAX as i64;

/// Every broker setting this broker understands (`weir settings` prints them).
pub const BROKER_CONFIGS: &[BrokerConfigDef] = &[
    broker("node.id", Int, Some("0"), ReadOnly, "this node's id as a broker and as a controller"),
    broker("cluster.id", Str, None, ReadOnly, "cluster id reported in Metadata (default: generated once, kept in meta.properties)"),
    broker("process.roles", List, Some("broker,controller"), ReadOnly, "broker, controller, or broker,controller (combined)"),
    broker("controller.quorum.voters", List, Some(""), ReadOnly, "the controller quorum, ID@HOST:PORT,... (empty: this node alone is its quorum)"),
    broker("listeners", Str, Some("PLAINTEXT://127.0.0.1:9092"), ReadOnly, "NAME://HOST:PORT,...: the client listener (PLAINTEXT) and, in a cluster, the controller listener"),
    broker("controller.listener.names", Str, Some("CONTROLLER"), ReadOnly, "names in `listeners` that serve controllers and brokers' RPCs"),
    broker("listener.security.protocol.map", Str, Some("PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT"), ReadOnly, "NAME:PROTOCOL,...; only PLAINTEXT is supported"),
    broker("advertised.listeners", Str, None, ReadOnly, "HOST:PORT clients are told to connect to (default: the client listener)"),
    broker("broker.session.timeout.ms", Int, Some("9000"), ReadOnly, "a broker without a heartbeat for this long is fenced"),
    broker("broker.heartbeat.interval.ms", Int, Some("2000"), ReadOnly, "how often brokers heartbeat to the active controller"),
    broker("controller.quorum.election.timeout.ms", Int, Some("1000"), ReadOnly, "a candidate's election timeout"),
    broker("controller.quorum.fetch.timeout.ms", Int, Some("2000"), ReadOnly, "a voter that hears nothing from the leader for this long starts an election"),
    broker("controller.quorum.request.timeout.ms", Int, Some("2000"), ReadOnly, "how long one broker-to-controller RPC may take"),
    broker("log.dirs", Str, Some("data"), ReadOnly, "data directory, one; log.dir is accepted too"),
    broker("num.partitions", Int, Some("1"), ReadOnly, "partitions of auto-created topics and of CreateTopics with -1"),
    broker("default.replication.factor", Int, Some("1"), ReadOnly, "replicas of auto-created topics and of CreateTopics with -1"),
    broker("min.insync.replicas", Int, Some("1"), Dynamic, "acks=all produce needs at least this many in-sync replicas (topic: min.insync.replicas)"),
    broker("unclean.leader.election.enable", Boolean, Some("false"), Dynamic, "let an out-of-sync replica lead when no in-sync one is alive, losing data (topic: unclean.leader.election.enable)"),
    broker("replica.lag.time.max.ms", Long, Some("30000"), ReadOnly, "a follower not caught up for this long leaves the ISR"),
    broker("replica.fetch.max.bytes", Int, Some("1048576"), ReadOnly, "bytes a follower fetches per partition"),
    broker("replica.fetch.response.max.bytes", Int, Some("10485760"), ReadOnly, "bytes a follower fetches per request"),
    broker("replica.fetch.wait.max.ms", Int, Some("500"), ReadOnly, "how long a follower's fetch waits for new records"),
    broker("replica.fetch.backoff.ms", Int, Some("1000"), ReadOnly, "pause after a failed follower fetch"),
    broker("num.replica.fetchers", Int, Some("1"), ReadOnly, "fetchers, each one connection, per leader a follower fetches from"),
    broker("auto.leader.rebalance.enable", Boolean, Some("true"), ReadOnly, "hand leadership back to preferred replicas"),
    broker("leader.imbalance.check.interval.seconds", Long, Some("300"), ReadOnly, "how often leader imbalance is checked"),
    broker("leader.imbalance.per.broker.percentage", Int, Some("10"), ReadOnly, "share of a broker's preferred partitions it may not lead before they are handed back"),
    broker("offsets.topic.replication.factor", Short, Some("3"), ReadOnly, "replicas of __consumer_offsets, at most the brokers registered when it is created"),
    broker("auto.create.topics.enable", Boolean, Some("true"), ReadOnly, "create unknown topics on Metadata/Produce"),
    broker("log.segment.bytes", Int, Some("1073741824"), Dynamic, "roll a segment at this size (topic: segment.bytes)"),
    broker("log.roll.ms", Long, None, Dynamic, "roll a segment at this age; wins over log.roll.hours (topic: segment.ms)"),
    broker("log.roll.hours", Int, Some("168"), Dynamic, "roll a segment at this age, in hours (topic: segment.ms)"),
    broker("log.index.interval.bytes", Int, Some("4096"), Dynamic, "bytes of log between sparse index entries (topic: index.interval.bytes)"),
    broker("log.retention.hours", Int, Some("168"), Dynamic, "delete a partition's oldest segments once this old (-1: forever; topic: retention.ms)"),
    broker("log.retention.minutes", Int, None, Dynamic, "as log.retention.hours, in minutes; wins over it"),
    broker("log.retention.ms", Long, None, Dynamic, "as log.retention.hours, in ms; wins over both"),
    broker("log.retention.bytes", Long, Some("-1"), Dynamic, "delete a partition's oldest segments while its log is larger (-1: no limit; topic: retention.bytes)"),
    broker("log.retention.check.interval.ms", Long, Some("300000"), ReadOnly, "how often retention runs"),
    broker("log.cleanup.policy", List, Some("delete"), Dynamic, "delete, compact or compact,delete for topics that set none (topic: cleanup.policy)"),
    broker("log.cleaner.min.compaction.lag.ms", Long, Some("0"), Dynamic, "a record is compacted only once this old (topic: min.compaction.lag.ms)"),
    broker("log.cleaner.max.compaction.lag.ms", Long, Some("9223372036854775807"), Dynamic, "the active segment of a compacted topic rolls once this old (topic: max.compaction.lag.ms)"),
    broker("max.request.partition.size.limit", Int, Some("2000"), ReadOnly, "most partitions in one DescribeTopicPartitions answer; clients page with a cursor"),
    broker("log.segment.delete.delay.ms", Long, Some("60000"), Dynamic, "a deleted segment's files stay this long before they are unlinked (topic: file.delete.delay.ms)"),
    broker("log.flush.interval.ms", Long, Some("1000"), ReadOnly, "longest time acks=0/1 data stays unsynced"),
    broker("weir.log.flush.interval.bytes", Long, Some("1048576"), ReadOnly, "a partition syncs once this many written bytes wait for it, before log.flush.interval.ms: a sync carries at most about this much"),
    broker("log.message.timestamp.type", Str, Some("CreateTime"), Dynamic, "CreateTime or LogAppendTime (topic: message.timestamp.type)"),
    broker("socket.request.max.bytes", Int, Some("104857600"), ReadOnly, "largest request frame; larger closes the connection"),
    broker("message.max.bytes", Int, Some("1048588"), Dynamic, "largest record batch; larger gets MESSAGE_TOO_LARGE (topic: max.message.bytes)"),
    broker("fetch.max.bytes", Int, Some("57671680"), ReadOnly, "cap on the record bytes of one Fetch response"),
    broker("max.connections", Int, Some("10000"), Dynamic, "open client connections across all shards; more are closed"),
    broker("max.connections.per.ip", Int, Some("2147483647"), ReadOnly, "open connections from one address; more are closed"),
    broker("max.connections.per.ip.overrides", Str, Some(""), ReadOnly, "per-address limits, HOST:COUNT,... (hosts resolved at start)"),
    broker("connections.max.idle.ms", Long, Some("600000"), ReadOnly, "close a connection with nothing read or written for this long"),
    broker("weir.shutdown.close.timeout.ms", Long, Some("120000"), ReadOnly, "how long the shards may take to sync and close their logs at a stop; past it the stop is unclean"),
    broker("weir.log.rate.limit.window.ms", Long, Some("10000"), ReadOnly, "bad frames, bad requests and refused connections are logged once per kind per window, then counted"),
    broker("weir.request.receive.timeout.ms", Long, Some("30000"), ReadOnly, "close a connection whose request does not arrive whole within this once begun"),
    broker("queued.max.requests", Int, Some("64"), ReadOnly, "requests one connection may have in flight, pipelined"),
    broker("queued.max.request.bytes", Long, Some("268435456"), ReadOnly, "bytes the requests in flight may hold, split among the data shards; past it connections stop reading until answers go out (-1 = no bound)"),
    broker("max.partitions", Int, Some("100000"), ReadOnly, "partitions across all topics; more gets POLICY_VIOLATION"),
    broker("max.broker.partitions", Int, Some("0"), ReadOnly, "partition replicas one broker may hold; more gets POLICY_VIOLATION. 0 = as many as its open-file caches hold (weir.open.files.max)"),
    broker("weir.open.files.max", Long, Some("0"), ReadOnly, "segment files the broker keeps open at once; others are opened when read. 0 = what the descriptor limit (ulimit -n) leaves after listeners, connections and its own files"),
    broker("producer.id.expiration.ms", Int, Some("86400000"), Dynamic, "idle idempotent producers are forgotten after this"),
    broker("transactional.id.expiration.ms", Int, Some("604800000"), ReadOnly, "a transactional id with no transaction for this long is forgotten by its coordinator"),
    broker("transaction.state.log.num.partitions", Int, Some("50"), ReadOnly, "partitions of __transaction_state, fixed once it exists"),
    broker("transaction.state.log.replication.factor", Short, Some("3"), ReadOnly, "replicas of __transaction_state, at most the brokers registered when it is created"),
    broker("transaction.state.log.segment.bytes", Int, Some("104857600"), ReadOnly, "segment size of __transaction_state; sealed segments are compacted"),
    broker("transaction.max.timeout.ms", Int, Some("900000"), ReadOnly, "the longest transaction.timeout.ms a producer may ask for; more gets INVALID_TRANSACTION_TIMEOUT"),
    broker("transaction.abort.timed.out.transaction.cleanup.interval.ms", Int, Some("10000"), ReadOnly, "how often open transactions are checked against their timeout (and aborted past it)"),
    broker("weir.transaction.partitions.max", Int, Some("10000"), ReadOnly, "partitions one transaction may span; more gets INVALID_REQUEST"),
    broker("weir.transactional.ids.max", Int, Some("100000"), ReadOnly, "transactional ids one coordinator shard keeps; a new one past it gets COORDINATOR_NOT_AVAILABLE"),
    broker("producer.id.expiration.check.interval.ms", Int, Some("600000"), ReadOnly, "how often producer expiry runs"),
    broker("log.cleaner.backoff.ms", Long, Some("15000"), ReadOnly, "how often compacted topics are checked for segments to clean"),
    broker("log.cleaner.delete.retention.ms", Long, Some("86400000"), Dynamic, "how long tombstones survive compaction (topic: delete.retention.ms)"),
    broker("offsets.topic.num.partitions", Int, Some("50"), ReadOnly, "partitions of __consumer_offsets, fixed once it exists"),
    broker("offsets.topic.segment.bytes", Int, Some("104857600"), ReadOnly, "segment size of __consumer_offsets; sealed segments are compacted"),
    broker("offsets.retention.minutes", Int, Some("10080"), ReadOnly, "committed offsets of an empty group are dropped after this"),
    broker("offsets.retention.check.interval.ms", Long, Some("600000"), ReadOnly, "how often offset expiry runs"),
    broker("offset.metadata.max.bytes", Int, Some("4096"), ReadOnly, "longest metadata string an offset commit may carry"),
    broker("group.initial.rebalance.delay.ms", Int, Some("3000"), ReadOnly, "first rebalance of an empty group waits this long for more members"),
    broker("group.min.session.timeout.ms", Int, Some("6000"), ReadOnly, "shortest session timeout a member may ask for"),
    broker("group.max.session.timeout.ms", Int, Some("1800000"), ReadOnly, "longest session timeout a member may ask for"),
    broker("group.max.size", Int, Some("2147483647"), ReadOnly, "members one consumer group may have"),
    broker("weir.cores", Int, Some("0"), ReadOnly, "data shards, one executor per core; 0 = one per online CPU"),
    broker("weir.cpu.list", List, Some(""), ReadOnly, "CPUs to pin data shards to, in order, e.g. 2,3 (empty: 0..cores)"),
    broker("weir.pin", Boolean, Some("true"), ReadOnly, "pin executors to CPUs (--unpinned sets false)"),
    broker("weir.io.memory.bytes", Int, Some("524288"), ReadOnly, "io_uring buffer memory per executor, locked memory"),
    broker("weir.preallocate.budget.bytes", Long, Some("2147483648"), ReadOnly, "disk the partitions reserve ahead of their writes at a segment's start, shared: each starts at budget/partitions (64 KiB to 1 MiB) and doubles as it grows"),
    broker("weir.tail.cache.bytes", Int, Some("1048576"), ReadOnly, "recent batches each partition keeps in memory for fetches"),
    broker("max.incremental.fetch.session.cache.slots", Int, Some("1000"), ReadOnly, "incremental fetch sessions (KIP-227) the broker keeps, shared out over its data shards; 0 = none (every fetch is full)"),
    broker("weir.fetch.waiters.max", Int, Some("10000"), ReadOnly, "long-poll fetches a shard parks; beyond it fetches answer at once"),
    broker("weir.shard.channel.capacity", Int, Some("1024"), ReadOnly, "messages queued between two shards"),
    broker("metadata.log.max.record.bytes.between.snapshots", Long, Some("20971520"), ReadOnly, "metadata log bytes after which the image is snapshotted and the log compacted"),
];

/// Every topic config CreateTopics and AlterConfigs accept.
pub const TOPIC_CONFIGS: &[TopicConfigDef] = &[
    topic(
        "cleanup.policy",
        List,
        "delete",
        &["log.cleanup.policy"],
        Valid::ListOf(&["delete", "compact"]),
        true,
        "delete: old segments go by retention; compact: only the latest record per key is kept; or both",
    ),
    topic(
        "retention.ms",
        Long,
        "604800000",
        &["log.retention.ms", "log.retention.minutes", "log.retention.hours"],
        Valid::Between(-1, LONG_MAX),
        true,
        "delete whole segments once all their records are this old (-1: forever)",
    ),
    topic(
        "retention.bytes",
        Long,
        "-1",
        &["log.retention.bytes"],
        Valid::Between(-1, LONG_MAX),
        true,
        "delete the oldest segments while a partition's log is larger than this (-1: no limit)",
    ),
    topic(
        "segment.bytes",
        Int,
        "1073741824",
        &["log.segment.bytes"],
        Valid::Between(14 * 1024, INT_MAX),
        true,
        "roll the active segment at this size",
    ),
    topic(
        "segment.ms",
        Long,
        "604800000",
        &["log.roll.ms", "log.roll.hours"],
        Valid::Between(1, LONG_MAX),
        true,
        "roll the active segment at this age, so retention can delete it",
    ),
    topic(
        "index.interval.bytes",
        Int,
        "4096",
        &["log.index.interval.bytes"],
        Valid::Between(0, INT_MAX),
        true,
        "bytes of log between sparse offset index entries",
    ),
    topic(
        "max.message.bytes",
        Int,
        "1048588",
        &["message.max.bytes"],
        Valid::Between(0, INT_MAX),
        true,
        "largest record batch a produce may append",
    ),
    topic(
        "message.timestamp.type",
        Str,
        "CreateTime",
        &["log.message.timestamp.type"],
        Valid::OneOf(&["CreateTime", "LogAppendTime"]),
        true,
        "whether records keep the producer's timestamp or get the append time",
    ),
    topic(
        "min.insync.replicas",
        Int,
        "1",
        &["min.insync.replicas"],
        Valid::Between(1, INT_MAX),
        true,
        "acks=all produce needs at least this many in-sync replicas",
    ),
    topic(
        "unclean.leader.election.enable",
        Boolean,
        "false",
        &["unclean.leader.election.enable"],
        Valid::Boolean,
        true,
        "let an out-of-sync replica lead when no in-sync one is alive, losing data",
    ),
    topic(
        "delete.retention.ms",
        Long,
        "86400000",
        &["log.cleaner.delete.retention.ms"],
        Valid::Between(0, LONG_MAX),
        true,
        "how long tombstones of a compacted topic survive compaction",
    ),
    topic(
        "min.compaction.lag.ms",
        Long,
        "0",
        &["log.cleaner.min.compaction.lag.ms"],
        Valid::Between(0, LONG_MAX),
        true,
        "a record is compacted only once this old",
    ),
    topic(
        "max.compaction.lag.ms",
        Long,
        "9223372036854775807",
        &["log.cleaner.max.compaction.lag.ms"],
        Valid::Between(1, LONG_MAX),
        true,
        "the active segment rolls once this old, so compaction reaches every record by then",
    ),
    topic(
        "file.delete.delay.ms",
        Long,
        "60000",
        &["log.segment.delete.delay.ms"],
        Valid::Between(0, LONG_MAX),
        true,
        "a deleted segment's files stay this long before they are unlinked",
    ),
    topic(
        "compression.type",
        Str,
        "producer",
        &[],
        Valid::OneOf(&["uncompressed", "zstd", "lz4", "snappy", "gzip", "producer"]),
        false,
        "stored only: batches are kept as the producer compressed them",
    ),
    topic(
        "min.cleanable.dirty.ratio",
        Double,
        "0.5",
        &[],
        Valid::Ratio,
        false,
        "stored only: compaction runs on every sealed segment of a compacted topic",
    ),
    topic(
        "flush.messages",
        Long,
        "9223372036854775807",
        &[],
        Valid::Between(1, LONG_MAX),
        false,
        "stored only: durability follows acks and log.flush.interval.ms",
    ),
    topic(
        "flush.ms",
        Long,
        "9223372036854775807",
        &[],
        Valid::Between(0, LONG_MAX),
        false,
        "stored only: durability follows acks and log.flush.interval.ms",
    ),
    topic(
        "message.timestamp.difference.max.ms",
        Long,
        "9223372036854775807",
        &[],
        Valid::Between(0, LONG_MAX),
        false,
        "stored only: timestamps are not checked against the broker's clock",
    ),
    topic(
        "message.timestamp.before.max.ms",
        Long,
        "9223372036854775807",
        &[],
        Valid::Between(0, LONG_MAX),
        false,
        "stored only: timestamps are not checked against the broker's clock",
    ),
    topic(
        "message.timestamp.after.max.ms",
        Long,
        "9223372036854775807",
        &[],
        Valid::Between(0, LONG_MAX),
        false,
        "stored only: timestamps are not checked against the broker's clock",
    ),
    topic(
        "preallocate",
        Boolean,
        "false",
        &[],
        Valid::Boolean,
        false,
        "stored only: segments are always preallocated in steps",
    ),
    topic(
        "segment.index.bytes",
        Int,
        "10485760",
        &[],
        Valid::Between(4, INT_MAX),
        false,
        "stored only: indexes grow as needed",
    ),
    topic(
        "segment.jitter.ms",
        Long,
        "0",
        &[],
        Valid::Between(0, LONG_MAX),
        false,
        "stored only: segments roll without jitter",
    ),
];

pub fn broker_config(name: &str) -> Option<&'static BrokerConfigDef> {
    BROKER_CONFIGS.iter().find(|d| d.name == name)
}

pub fn topic_config(name: &str) -> Option<&'static TopicConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

impl TopicConfigDef {
    /// Checks `value` as Kafka does, with Kafka's message.
    pub fn check(&self, value: &str) -> Result<(), String> {
        let name = self.name;
        let bad = |why: String| Err(format!("Invalid value {value} for configuration {name}: {why}"));
        match self.valid {
            Valid::Between(min, max) => match value.trim().parse::<i64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(()),
                Ok(_) if max == LONG_MAX => bad(format!("Value must be at least {min}")),
                Ok(_) => bad(format!("Value must be between {min} and {max}")),
                Err(_) => bad("Not a number of type ".to_string() + if self.ty == Long { "LONG" } else { "INT" }),
            },
            Valid::Ratio => match value.trim().parse::<f64>() {
                Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
                Ok(_) => bad("Value must be between 0 and 1".into()),
                Err(_) => bad("Not a number of type DOUBLE".into()),
            },
            Valid::Boolean => match value.trim().to_ascii_lowercase().as_str() {
                "true" | "false" => Ok(()),
                _ => bad("Expected value to be either true or false".into()),
            },
            Valid::OneOf(allowed) if allowed.contains(&value.trim()) => Ok(()),
            Valid::OneOf(allowed) => bad(format!("String must be one of: {}", allowed.join(", "))),
            Valid::ListOf(allowed) => {
                let items: Vec<&str> = value.split(',').map(str::trim).collect();
                if items.iter().all(|i| allowed.contains(i)) {
                    Ok(())
                } else {
                    bad(format!("String must be one of: {}", allowed.join(", ")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn every_broker_default_is_what_the_broker_does_without_it() {
        let base = format!("{:?}", Config::from_settings([]).expect("defaults"));
        for d in BROKER_CONFIGS {
            let Some(default) = d.default else { continue };
            let mut with = Config::from_settings([(d.name, default)]).unwrap_or_else(|e| panic!("{}: {e}", d.name));
            with.static_settings.clear();
            let mut with = format!("{with:?}");
            // The text of `listeners` is kept as given.
            if d.name == "listeners" {
                with = with.replace("Some(\"PLAINTEXT://127.0.0.1:9092\")", "None");
            }
            assert_eq!(with, base, "{} = {default} is not the default", d.name);
        }
    }

    #[test]
    fn topic_synonyms_are_broker_settings_and_defaults_pass_their_own_checks() {
        for t in TOPIC_CONFIGS {
            for s in t.synonyms {
                assert!(broker_config(s).is_some(), "{}: synonym {s} is no broker setting", t.name);
            }
            assert_eq!(t.check(t.default), Ok(()), "{}", t.name);
        }
        let retention = topic_config("retention.ms").expect("listed");
        assert!(retention.check("-2").is_err_and(|m| m.contains("at least -1")));
        assert!(retention.check("soon").is_err_and(|m| m.contains("LONG")));
        let policy = topic_config("cleanup.policy").expect("listed");
        assert_eq!(policy.check("compact,delete"), Ok(()));
        assert!(policy.check("compact,shred").is_err());
    }
}
