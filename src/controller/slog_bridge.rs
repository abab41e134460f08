//! raft-rs logs through `slog`; this drain hands its lines, with their key-value pairs, to
//! `tracing`, so the quorum's elections and term changes appear in the broker's log like
//! everything else.

use std::fmt::Write as _;

use slog::{Drain, Level, Never, OwnedKVList, Record, KV};

pub struct TracingDrain;

/// Collects a record's key-value pairs as ` key=value`.
struct Pairs(String);

impl slog::Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, val: &std::fmt::Arguments<'_>) -> slog::Result {
        let _ = write!(self.0, " {key}={val}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), Never> {
        let mut pairs = Pairs(String::new());
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let (msg, kv) = (record.msg().to_string(), pairs.0);
        match record.level() {
            Level::Critical | Level::Error => tracing::error!(target: "raft", "{msg}{kv}"),
            Level::Warning => tracing::warn!(target: "raft", "{msg}{kv}"),
            // Role and term changes are worth an operator's eye; the rest of raft-rs's info
            // lines (configuration dumps at start) are detail.
            Level::Info if is_role_change(&msg) => tracing::info!(target: "raft", "{msg}{kv}"),
            Level::Info => tracing::debug!(target: "raft", "{msg}{kv}"),
            Level::Debug | Level::Trace => tracing::debug!(target: "raft", "{msg}{kv}"),
        }
        Ok(())
    }
}

fn is_role_change(msg: &str) -> bool {
    msg.starts_with("became ") || msg.starts_with("starting a new election")
}
