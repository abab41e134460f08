//! Files and offsets: segmented logs, their indexes and recovery. Knows nothing of Kafka
//! requests; `partition` gives it Kafka's meaning. See docs/STORAGE.md for the on-disk layout.

pub mod device;
pub mod index;
pub mod leader_epochs;
pub mod log;
pub mod open_files;
pub mod segment;
mod stamped_run;

pub use log::{
    AppendInfo, Log, LogConfig, LogError, ReadResult, PREALLOCATE_FLOOR_MAX_BYTES, PREALLOCATE_FLOOR_MIN_BYTES,
};

/// Replaces `dir/name` with `bytes` durably: a temporary file, synced, renamed over the old
/// one, and the directory synced (a crash leaves the old file or the new, whole). Blocking:
/// run it off the executor thread.
pub fn replace_file_durably(dir: &std::path::Path, name: &str, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(name);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_data()?;
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(dir)?.sync_all()
}
