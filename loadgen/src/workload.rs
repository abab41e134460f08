//! Workload files: TOML under `config/workloads/`, parsed strictly (unknown keys are errors)
//! and validated with messages that name the offending field.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("cannot read workload file {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("workload file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("workload file {path}: field `{field}`: {message}")]
    Invalid { path: PathBuf, field: &'static str, message: String },
}

/// A parsed and validated workload. Field docs are the TOML keys.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Name used for the results directory; defaults to the file name without `.toml`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Seconds measured after the warm-up.
    pub duration_s: u64,
    /// Seconds run before measuring; their samples are left out of the final histograms.
    #[serde(default)]
    pub warmup_s: u64,
    pub topics: Topics,
    pub messages: Messages,
    pub producers: Producers,
    #[serde(default)]
    pub consumers: Consumers,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Topics {
    /// Topics are named `<prefix>-0` ... `<prefix>-<count-1>`.
    pub prefix: String,
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Partitions per topic (used when the topic is created; an existing topic keeps its own).
    pub partitions: u32,
    #[serde(default = "one_i16")]
    pub replication_factor: i16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Messages {
    /// Value size in bytes: a number, or `{ min = A, max = B }` for a uniform distribution.
    pub size: MessageSize,
    /// Keyed partitioning (Kafka's murmur2 of the key) instead of round-robin.
    #[serde(default)]
    pub keyed: bool,
    /// Distinct keys when `keyed`.
    #[serde(default = "default_key_count")]
    pub key_count: u32,
    /// Payload bytes come from this file (relative to the workload file) instead of random bytes.
    #[serde(default)]
    pub payload_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Producers {
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Messages per second over all producers; 0 = as fast as possible (closed loop).
    #[serde(default)]
    pub rate: f64,
    /// 0, 1 or "all" (-1 is accepted too).
    #[serde(default)]
    pub acks: Acks,
    #[serde(default)]
    pub compression: CompressionKind,
    #[serde(default)]
    pub linger_ms: u64,
    #[serde(default = "default_batch_size")]
    pub batch_size: u32,
    /// Produce requests in flight per connection.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Which batches a request carries (see [`Drain`]).
    #[serde(default)]
    pub drain: Drain,
    /// Kafka's `enable.idempotence`: a producer id from InitProducerId and a sequence per
    /// batch (needs acks = "all" and at most 5 requests in flight).
    #[serde(default)]
    pub idempotent: bool,
    /// Transactional producers (idempotent too): each writes in transactions it commits.
    #[serde(default)]
    pub transactions: Option<Transactions>,
}

/// When a transactional producer commits: after `records` records or `interval_ms`, whichever
/// comes first (0: that limit is off; at least one must be on).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Transactions {
    #[serde(default)]
    pub records: u64,
    #[serde(default)]
    pub interval_ms: u64,
    /// Kafka's `transaction.timeout.ms`.
    #[serde(default = "default_transaction_timeout_ms")]
    pub timeout_ms: u32,
}

impl Producers {
    /// Whether producers have a producer id and sequence their batches.
    pub fn idempotent(&self) -> bool {
        self.idempotent || self.transactions.is_some()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Consumers {
    #[serde(default = "one_u32")]
    pub count: u32,
    /// Long-poll wait of each fetch.
    #[serde(default = "default_fetch_max_wait_ms")]
    pub fetch_max_wait_ms: u32,
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    #[serde(default = "default_partition_max_bytes")]
    pub partition_max_bytes: u32,
    /// Kafka's `isolation.level`.
    #[serde(default)]
    pub isolation: Isolation,
}

impl Default for Consumers {
    fn default() -> Self {
        Consumers {
            count: 1,
            fetch_max_wait_ms: default_fetch_max_wait_ms(),
            fetch_max_bytes: default_fetch_max_bytes(),
            partition_max_bytes: default_partition_max_bytes(),
            isolation: Isolation::default(),
        }
    }
}

/// What a consumer reads: everything, or committed transactions only (up to the last stable
/// offset, aborted transactions left out).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Isolation {
    #[default]
    ReadUncommitted,
    ReadCommitted,
}

impl Isolation {
    pub fn wire(self) -> i8 {
        match self {
            Isolation::ReadUncommitted => 0,
            Isolation::ReadCommitted => 1,
        }
    }
}

fn one_u32() -> u32 {
    1
}
fn one_i16() -> i16 {
    1
}
fn default_key_count() -> u32 {
    1000
}
fn default_batch_size() -> u32 {
    16384
}
fn default_max_in_flight() -> u32 {
    5
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_transaction_timeout_ms() -> u32 {
    60_000
}
fn default_fetch_max_wait_ms() -> u32 {
    500
}
fn default_fetch_max_bytes() -> u32 {
    50 * 1024 * 1024
}
fn default_partition_max_bytes() -> u32 {
    1024 * 1024
}

/// Message value size: fixed, or uniform in `min..=max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum MessageSize {
    Fixed(u32),
    Uniform { min: u32, max: u32 },
}

impl MessageSize {
    pub fn max(&self) -> u32 {
        match *self {
            MessageSize::Fixed(n) => n,
            MessageSize::Uniform { max, .. } => max,
        }
    }

    pub fn mean(&self) -> f64 {
        match *self {
            MessageSize::Fixed(n) => n as f64,
            MessageSize::Uniform { min, max } => (min as f64 + max as f64) / 2.0,
        }
    }
}

impl fmt::Display for MessageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            MessageSize::Fixed(n) => write!(f, "{n} B"),
            MessageSize::Uniform { min, max } => write!(f, "uniform {min}..{max} B"),
        }
    }
}

/// Either `size = 100` or `size = { min = 64, max = 256 }` (optionally `distribution = "uniform"`).
impl<'de> Deserialize<'de> for MessageSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = MessageSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size in bytes or a table { min = N, max = M }")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<MessageSize, E> {
                u32::try_from(v).map(MessageSize::Fixed).map_err(|_| E::custom(format!("size {v} out of range")))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<MessageSize, E> {
                u32::try_from(v).map(MessageSize::Fixed).map_err(|_| E::custom(format!("size {v} out of range")))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<MessageSize, A::Error> {
                let (mut min, mut max) = (None, None);
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "min" => min = Some(map.next_value::<u32>()?),
                        "max" => max = Some(map.next_value::<u32>()?),
                        "distribution" => {
                            let d: String = map.next_value()?;
                            if d != "uniform" {
                                return Err(de::Error::custom(format!(
                                    "unknown distribution `{d}` (supported: \"uniform\")"
                                )));
                            }
                        }
                        other => return Err(de::Error::unknown_field(other, &["min", "max", "distribution"])),
                    }
                }
                match (min, max) {
                    (Some(min), Some(max)) => Ok(MessageSize::Uniform { min, max }),
                    (None, _) => Err(de::Error::missing_field("min")),
                    (_, None) => Err(de::Error::missing_field("max")),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// Which batches a producer puts into a request to a broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Drain {
    /// Only batches that are full or whose `linger_ms` expired, as librdkafka sends: with many
    /// thinly loaded partitions each request carries the few that expired together.
    #[default]
    Expired,
    /// As Kafka's Java producer (`RecordAccumulator.drain`): once a broker has a ready batch,
    /// the request also takes the open batch of every other partition it leads, up to the
    /// request size limit.
    All,
}

/// Producer acknowledgements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    None,
    #[default]
    Leader,
    All,
}

impl Acks {
    pub fn wire(self) -> i16 {
        match self {
            Acks::None => 0,
            Acks::Leader => 1,
            Acks::All => -1,
        }
    }
}

impl fmt::Display for Acks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Acks::None => "0",
            Acks::Leader => "1",
            Acks::All => "all",
        })
    }
}

impl Serialize for Acks {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Acks::All => s.serialize_str("all"),
            other => s.serialize_i64(other.wire() as i64),
        }
    }
}

impl<'de> Deserialize<'de> for Acks {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Acks;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("0, 1, -1 or \"all\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Acks, E> {
                match v {
                    0 => Ok(Acks::None),
                    1 => Ok(Acks::Leader),
                    -1 => Ok(Acks::All),
                    _ => Err(E::custom(format!("acks must be 0, 1, -1 or \"all\", not {v}"))),
                }
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Acks, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Acks, E> {
                match v {
                    "all" | "-1" => Ok(Acks::All),
                    "1" | "leader" => Ok(Acks::Leader),
                    "0" | "none" => Ok(Acks::None),
                    _ => Err(E::custom(format!("acks must be 0, 1, -1 or \"all\", not \"{v}\""))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionKind {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl CompressionKind {
    pub fn codec(self) -> kafka_protocol::records::Compression {
        use kafka_protocol::records::Compression;
        match self {
            CompressionKind::None => Compression::None,
            CompressionKind::Gzip => Compression::Gzip,
            CompressionKind::Snappy => Compression::Snappy,
            CompressionKind::Lz4 => Compression::Lz4,
            CompressionKind::Zstd => Compression::Zstd,
        }
    }
}

impl fmt::Display for CompressionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompressionKind::None => "none",
            CompressionKind::Gzip => "gzip",
            CompressionKind::Snappy => "snappy",
            CompressionKind::Lz4 => "lz4",
            CompressionKind::Zstd => "zstd",
        })
    }
}

/// Largest message value accepted (Kafka's default `message.max.bytes` is about 1 MiB).
pub const MAX_MESSAGE_BYTES: u32 = 16 * 1024 * 1024;
/// Largest total partition count a workload may ask for.
pub const MAX_PARTITIONS: u64 = 100_000;

impl Workload {
    /// Reads, parses and validates `path`; a relative `payload_file` is resolved against the
    /// workload file's directory.
    pub fn load(path: &Path) -> Result<Workload, WorkloadError> {
        let text =
            std::fs::read_to_string(path).map_err(|error| WorkloadError::Read { path: path.to_path_buf(), error })?;
        let mut w = Workload::parse(&text, path)?;
        if let Some(p) = &w.messages.payload_file {
            if p.is_relative() {
                let base = path.parent().unwrap_or(Path::new("."));
                w.messages.payload_file = Some(base.join(p));
            }
        }
        if let Some(p) = &w.messages.payload_file {
            match std::fs::metadata(p) {
                Ok(m) if m.len() > 0 => {}
                Ok(_) => return Err(invalid(path, "messages.payload_file", format!("{} is empty", p.display()))),
                Err(e) => return Err(invalid(path, "messages.payload_file", format!("{}: {e}", p.display()))),
            }
        }
        Ok(w)
    }

    /// Parses and validates workload text; `path` is only used for messages and the default name.
    pub fn parse(text: &str, path: &Path) -> Result<Workload, WorkloadError> {
        let mut w: Workload = toml::from_str(text).map_err(|e| WorkloadError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().to_string(),
        })?;
        if w.name.is_empty() {
            w.name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "workload".into());
        }
        w.validate(path)?;
        Ok(w)
    }

    fn validate(&self, path: &Path) -> Result<(), WorkloadError> {
        let bad = |field: &'static str, message: String| Err(invalid(path, field, message));
        if !self.name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return bad("name", format!("\"{}\" may only hold letters, digits, '-', '_' and '.'", self.name));
        }
        if self.duration_s == 0 {
            return bad("duration_s", "must be at least 1".into());
        }
        let t = &self.topics;
        if t.prefix.is_empty() || t.prefix.len() > 200 {
            return bad("topics.prefix", "must be 1 to 200 characters".into());
        }
        if !t.prefix.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
            return bad("topics.prefix", format!("\"{}\" may only hold letters, digits, '-', '_' and '.'", t.prefix));
        }
        if t.count == 0 {
            return bad("topics.count", "must be at least 1".into());
        }
        if t.partitions == 0 {
            return bad("topics.partitions", "must be at least 1".into());
        }
        if u64::from(t.count) * u64::from(t.partitions) > MAX_PARTITIONS {
            return bad("topics.partitions", format!("topics x partitions must be at most {MAX_PARTITIONS}"));
        }
        if t.replication_factor < 1 {
            return bad("topics.replication_factor", "must be at least 1".into());
        }
        let m = &self.messages;
        match m.size {
            MessageSize::Fixed(n) if n == 0 || n > MAX_MESSAGE_BYTES => {
                return bad("messages.size", format!("must be 1 to {MAX_MESSAGE_BYTES} bytes, not {n}"));
            }
            MessageSize::Uniform { min, max } if min == 0 || max > MAX_MESSAGE_BYTES || min > max => {
                return bad(
                    "messages.size",
                    format!("needs 1 <= min <= max <= {MAX_MESSAGE_BYTES}, not min = {min}, max = {max}"),
                );
            }
            _ => {}
        }
        if m.keyed && m.key_count == 0 {
            return bad("messages.key_count", "must be at least 1".into());
        }
        let p = &self.producers;
        if p.count == 0 || p.count > 10_000 {
            return bad("producers.count", "must be 1 to 10000".into());
        }
        if !p.rate.is_finite() || p.rate < 0.0 {
            return bad("producers.rate", format!("must be 0 (max throughput) or a positive rate, not {}", p.rate));
        }
        if p.rate > 0.0 && p.rate < f64::from(p.count) / 3600.0 {
            return bad("producers.rate", "is below one message per producer per hour".into());
        }
        if p.batch_size == 0 || p.batch_size > 64 * 1024 * 1024 {
            return bad("producers.batch_size", "must be 1 to 67108864 bytes".into());
        }
        if p.linger_ms > 60_000 {
            return bad("producers.linger_ms", "must be at most 60000".into());
        }
        if p.max_in_flight == 0 || p.max_in_flight > 1000 {
            return bad("producers.max_in_flight", "must be 1 to 1000".into());
        }
        if p.request_timeout_ms == 0 {
            return bad("producers.request_timeout_ms", "must be at least 1".into());
        }
        if p.idempotent() {
            let what = if p.transactions.is_some() { "transactions" } else { "idempotent" };
            if p.acks != Acks::All {
                return bad("producers.acks", format!("must be \"all\" with {what} producers (as in Kafka)"));
            }
            if p.max_in_flight > 5 {
                return bad(
                    "producers.max_in_flight",
                    format!("must be at most 5 with {what} producers (as in Kafka)"),
                );
            }
        }
        if let Some(t) = &p.transactions {
            if t.records == 0 && t.interval_ms == 0 {
                return bad("producers.transactions", "needs `records` or `interval_ms` (when to commit)".into());
            }
            if t.timeout_ms == 0 {
                return bad("producers.transactions.timeout_ms", "must be at least 1".into());
            }
        }
        let c = &self.consumers;
        if c.count > 10_000 {
            return bad("consumers.count", "must be at most 10000".into());
        }
        if c.fetch_max_bytes == 0 || c.partition_max_bytes == 0 {
            return bad("consumers.fetch_max_bytes", "fetch sizes must be at least 1".into());
        }
        Ok(())
    }

    pub fn total_partitions(&self) -> u64 {
        u64::from(self.topics.count) * u64::from(self.topics.partitions)
    }

    pub fn topic_name(&self, i: u32) -> String {
        format!("{}-{}", self.topics.prefix, i)
    }

    /// A short description of the producers' and consumers' delivery settings.
    pub fn delivery(&self) -> String {
        let p = &self.producers;
        let producing = match &p.transactions {
            Some(t) => format!("transactional (commit every {} records / {} ms)", t.records, t.interval_ms),
            None if p.idempotent => "idempotent".to_string(),
            None => "plain".to_string(),
        };
        let reading = match self.consumers.isolation {
            Isolation::ReadCommitted => "read_committed",
            Isolation::ReadUncommitted => "read_uncommitted",
        };
        format!("{producing} producers, {reading} consumers")
    }

    /// True for the open loop (a target rate).
    pub fn fixed_rate(&self) -> bool {
        self.producers.rate > 0.0
    }
}

fn invalid(path: &Path, field: &'static str, message: String) -> WorkloadError {
    WorkloadError::Invalid { path: path.to_path_buf(), field, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        duration_s = 30
        warmup_s = 5
        [topics]
        prefix = "t"
        count = 2
        partitions = 6
        [messages]
        size = { min = 10, max = 20 }
        keyed = true
        [producers]
        count = 2
        rate = 1000
        acks = "all"
        compression = "lz4"
        linger_ms = 5
        [consumers]
        count = 3
    "#;

    fn parse(text: &str) -> Result<Workload, WorkloadError> {
        Workload::parse(text, Path::new("dir/my-load.toml"))
    }

    #[test]
    fn parses_a_full_workload_with_defaults() {
        let w = parse(GOOD).expect("parses");
        assert_eq!(w.name, "my-load");
        assert_eq!(w.duration_s, 30);
        assert_eq!(w.warmup_s, 5);
        assert_eq!(w.topics.count, 2);
        assert_eq!(w.topics.replication_factor, 1);
        assert_eq!(w.messages.size, MessageSize::Uniform { min: 10, max: 20 });
        assert_eq!(w.producers.acks, Acks::All);
        assert_eq!(w.producers.compression, CompressionKind::Lz4);
        assert_eq!(w.producers.batch_size, 16384);
        assert_eq!(w.producers.max_in_flight, 5);
        assert_eq!(w.producers.drain, Drain::Expired, "librdkafka's way unless asked");
        assert_eq!(w.consumers.count, 3);
        assert_eq!(w.consumers.fetch_max_wait_ms, 500);
        assert!(w.fixed_rate());
        assert_eq!(w.total_partitions(), 12);
        assert_eq!(w.topic_name(1), "t-1");
    }

    #[test]
    fn sizes_and_acks_in_every_spelling() {
        let base = GOOD.replace("size = { min = 10, max = 20 }", "size = 100");
        assert_eq!(parse(&base).expect("fixed").messages.size, MessageSize::Fixed(100));
        let d =
            GOOD.replace("size = { min = 10, max = 20 }", "size = { distribution = \"uniform\", min = 1, max = 1 }");
        assert_eq!(parse(&d).expect("dist").messages.size, MessageSize::Uniform { min: 1, max: 1 });
        for (text, acks) in [("0", Acks::None), ("1", Acks::Leader), ("-1", Acks::All), ("\"all\"", Acks::All)] {
            let w = parse(&GOOD.replace("acks = \"all\"", &format!("acks = {text}"))).expect("acks");
            assert_eq!(w.producers.acks, acks, "{text}");
        }
        for (text, drain) in [("\"expired\"", Drain::Expired), ("\"all\"", Drain::All)] {
            let w = parse(&GOOD.replace("linger_ms = 5", &format!("linger_ms = 5\n        drain = {text}")))
                .expect("drain");
            assert_eq!(w.producers.drain, drain, "{text}");
        }
        let no_consumers = GOOD.replace("[consumers]\n        count = 3", "");
        assert_eq!(parse(&no_consumers).expect("defaults").consumers, Consumers::default());
    }

    /// Every bad file is refused with a message naming the field.
    #[test]
    fn bad_files_name_the_field() {
        let cases: &[(&str, &str, &str)] = &[
            ("acks = \"all\"", "acks = 2", "acks"),
            ("acks = \"all\"", "acks = \"some\"", "acks"),
            ("compression = \"lz4\"", "compression = \"brotli\"", "compression"),
            ("rate = 1000", "rate = -5", "producers.rate"),
            ("rate = 1000", "rate = \"fast\"", "rate"),
            ("partitions = 6", "partitions = 0", "topics.partitions"),
            ("count = 2\n        partitions", "count = 0\n        partitions", "topics.count"),
            ("duration_s = 30", "duration_s = 0", "duration_s"),
            ("duration_s = 30", "", "duration_s"),
            ("size = { min = 10, max = 20 }", "size = { min = 30, max = 20 }", "messages.size"),
            ("size = { min = 10, max = 20 }", "size = 0", "messages.size"),
            ("size = { min = 10, max = 20 }", "size = { min = 1 }", "max"),
            ("size = { min = 10, max = 20 }", "size = { distribution = \"zipf\", min = 1, max = 2 }", "zipf"),
            ("size = { min = 10, max = 20 }", "size = \"big\"", "size"),
            ("linger_ms = 5", "linger_ms = 5\n        lingr_ms = 3", "lingr_ms"),
            ("linger_ms = 5", "linger_ms = 5\n        drain = \"some\"", "drain"),
            ("prefix = \"t\"", "prefix = \"a b\"", "topics.prefix"),
            ("[consumers]", "[consumer]", "consumer"),
            ("acks = \"all\"", "acks = 1\n        idempotent = true", "producers.acks"),
            ("linger_ms = 5", "linger_ms = 5\n        max_in_flight = 6\n        idempotent = true", "max_in_flight"),
            ("linger_ms = 5", "linger_ms = 5\n        transactions = { timeout_ms = 1000 }", "producers.transactions"),
            ("linger_ms = 5", "linger_ms = 5\n        transactions = { records = 5, timeout_ms = 0 }", "timeout_ms"),
            ("[consumers]", "[consumers]\n        isolation = \"read_commited\"", "read_commited"),
        ];
        for (from, to, needle) in cases {
            assert!(GOOD.contains(from), "test case {from:?} does not apply");
            let text = GOOD.replacen(from, to, 1);
            let err = parse(&text).expect_err(&format!("{to:?} must be refused"));
            let msg = err.to_string();
            assert!(msg.contains(needle), "message for {to:?} should name {needle:?}: {msg}");
            assert!(msg.contains("my-load.toml"), "message names the file: {msg}");
        }
    }

    #[test]
    fn transactional_producers_and_read_committed_consumers() {
        let text = GOOD
            .replace("linger_ms = 5", "linger_ms = 5\n        transactions = { records = 500, interval_ms = 100 }")
            .replace("count = 3", "count = 3\n        isolation = \"read_committed\"");
        let w = parse(&text).expect("parses");
        let t = w.producers.transactions.as_ref().expect("transactions");
        assert_eq!((t.records, t.interval_ms, t.timeout_ms), (500, 100, 60_000));
        assert!(w.producers.idempotent(), "transactional producers are idempotent");
        assert_eq!(w.consumers.isolation, Isolation::ReadCommitted);
        assert_eq!(
            w.delivery(),
            "transactional (commit every 500 records / 100 ms) producers, read_committed consumers"
        );
        assert_eq!(parse(GOOD).expect("plain").delivery(), "plain producers, read_uncommitted consumers");
    }

    #[test]
    fn not_toml_at_all() {
        let err = parse("this is = = not toml").expect_err("refused");
        assert!(matches!(err, WorkloadError::Parse { .. }), "{err}");
    }

    #[test]
    fn missing_payload_file_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("w.toml");
        let text = GOOD.replace("keyed = true", "keyed = true\n        payload_file = \"nope.bin\"");
        std::fs::write(&path, text).expect("write");
        let err = Workload::load(&path).expect_err("refused");
        assert!(err.to_string().contains("messages.payload_file"), "{err}");
        std::fs::write(dir.path().join("nope.bin"), b"abc").expect("write payload");
        let w = Workload::load(&path).expect("payload found next to the workload");
        assert_eq!(w.messages.payload_file, Some(dir.path().join("nope.bin")));
    }

    #[test]
    fn shipped_workloads_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/workloads");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).expect("config/workloads") {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "toml") {
                Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
                n += 1;
            }
        }
        assert!(n >= 5, "the standard set is shipped");
    }
}
