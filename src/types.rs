//! Small value types shared by every layer: who owns what, and where a record lives.

use std::fmt;

/// A Kafka offset: the position of a record in its partition.
pub type Offset = i64;

/// Index of a data shard (0-based, among data shards only; the control shard is separate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ShardId(pub usize);

/// A topic name and a partition number: the unit of ownership and ordering.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self { topic: topic.into(), partition }
    }

    /// The partition's directory name, as Kafka lays it out: `<topic>-<partition>`.
    pub fn dir_name(&self) -> String {
        format!("{}-{}", self.topic, self.partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps are.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A producer's `acks`: how much durability it waits for before the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acks {
    /// `acks=0`: no answer at all; the append is all there is.
    None,
    /// `acks=1`: answered once the leader has written the batch to its segment file.
    Leader,
    /// `acks=all` (-1): answered once the batch is durable (fsynced).
    All,
}

impl Acks {
    /// Kafka's wire value; `None` for anything else (INVALID_REQUIRED_ACKS).
    pub fn from_wire(acks: i16) -> Option<Acks> {
        match acks {
            0 => Some(Acks::None),
            1 => Some(Acks::Leader),
            -1 => Some(Acks::All),
            _ => None,
        }
    }
}

/// What a ListOffsets request asks for in one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// -1: the offset the next record will get (as consumers see it: the high watermark).
    Latest,
    /// -2: the log start offset.
    Earliest,
    /// -3: the record with the largest timestamp (KIP-734).
    MaxTimestamp,
    /// -4: the first offset on local disk (KIP-405, v8+): the log start, since Weir keeps
    /// every segment locally.
    EarliestLocal,
    /// -5: the last offset in tiered storage (KIP-1005, v9+): none, nothing is tiered.
    LatestTiered,
    /// The first offset whose timestamp is at or after this one (ms).
    AtTime(i64),
}

impl OffsetSpec {
    /// Kafka's wire value; `None` for a negative value Kafka gives no meaning (INVALID_REQUEST).
    pub fn from_wire(timestamp: i64) -> Option<OffsetSpec> {
        match timestamp {
            -1 => Some(OffsetSpec::Latest),
            -2 => Some(OffsetSpec::Earliest),
            -3 => Some(OffsetSpec::MaxTimestamp),
            -4 => Some(OffsetSpec::EarliestLocal),
            -5 => Some(OffsetSpec::LatestTiered),
            ts if ts >= 0 => Some(OffsetSpec::AtTime(ts)),
            _ => None,
        }
    }
}

/// A Kafka error code on the wire: 0 for no error.
pub fn wire_code(error: Option<kafka_protocol::ResponseError>) -> i16 {
    error.map_or(0, |e| e.code())
}

/// Checks an invariant: a broken one is a bug. Debug builds panic with the message; release
/// builds log it as an error and evaluate to `false`, so the caller refuses the request
/// instead of acting on broken state.
#[macro_export]
macro_rules! invariant {
    ($cond:expr, $($msg:tt)+) => {{
        let held: bool = $cond;
        if !held {
            debug_assert!(held, $($msg)+);
            tracing::error!(invariant = stringify!($cond), "invariant broken: {}", format_args!($($msg)+));
        }
        held
    }};
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_values_map_to_the_typed_vocabulary() {
        assert_eq!(Acks::from_wire(-1), Some(Acks::All));
        assert_eq!(Acks::from_wire(0), Some(Acks::None));
        assert_eq!(Acks::from_wire(1), Some(Acks::Leader));
        assert_eq!(Acks::from_wire(2), None);
        assert_eq!(OffsetSpec::from_wire(-1), Some(OffsetSpec::Latest));
        assert_eq!(OffsetSpec::from_wire(-2), Some(OffsetSpec::Earliest));
        assert_eq!(OffsetSpec::from_wire(-3), Some(OffsetSpec::MaxTimestamp));
        assert_eq!(OffsetSpec::from_wire(0), Some(OffsetSpec::AtTime(0)));
        assert_eq!(OffsetSpec::from_wire(-4), Some(OffsetSpec::EarliestLocal));
        assert_eq!(OffsetSpec::from_wire(-5), Some(OffsetSpec::LatestTiered));
        assert_eq!(OffsetSpec::from_wire(-6), None);
        assert_eq!(wire_code(None), 0);
        assert_eq!(wire_code(Some(kafka_protocol::ResponseError::NotLeaderOrFollower)), 6);
    }
}
