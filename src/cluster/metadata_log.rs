//! The metadata log on a single node: `<data>/__cluster_metadata/metadata.log`, a file of
//! framed records (`length u32 | crc32c u32 | record`), each synced before it is applied.
//! Replaying it at start rebuilds the image; a torn last frame is cut off.
//!
//! Runs on the control shard. Writes are rare (topic changes), so they go through a blocking
//! thread (`spawn_blocking`) rather than the data path's io_uring files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::warn;

use super::records::MetadataRecord;

pub struct MetadataLog {
    path: PathBuf,
    /// Bytes of whole, synced frames: where the next append goes.
    good_bytes: AtomicU64,
    /// A failed append could not be undone: refuse further appends rather than write
    /// records after a torn frame (replay stops at the first bad frame).
    broken: AtomicBool,
}

impl MetadataLog {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("__cluster_metadata").join("metadata.log")
    }

    /// Reads every record (cutting a torn tail) and returns the log ready for appends.
    pub fn open(data_dir: &Path) -> io::Result<(MetadataLog, Vec<MetadataRecord>)> {
        let path = Self::path_in(data_dir);
        if let Some(parent) = path.parent() {
            if !parent.exists() {
                std::fs::create_dir_all(parent)?;
                File::open(data_dir)?.sync_all()?;
            }
        }
        if !path.exists() {
            File::create(&path)?.sync_all()?;
            if let Some(parent) = path.parent() {
                File::open(parent)?.sync_all()?;
            }
        }
        let mut bytes = Vec::new();
        if path.exists() {
            File::open(&path)?.read_to_end(&mut bytes)?;
        }
        let mut records = Vec::new();
        let mut at = 0usize;
        while let Some(frame) = bytes.get(at..at + 8) {
            let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
            let crc = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
            let Some(body) = bytes.get(at + 8..at + 8 + len) else { break };
            if crc32c::crc32c(body) != crc {
                break;
            }
            match MetadataRecord::decode(body) {
                Ok(r) => records.push(r),
                Err(e) => {
                    warn!(error = %e, at, "undecodable metadata record");
                    break;
                }
            }
            at += 8 + len;
        }
        if at < bytes.len() {
            warn!(path = %path.display(), valid = at, total = bytes.len(), "truncating torn metadata log tail");
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(at as u64)?;
            f.sync_all()?;
        }
        let log = MetadataLog { path, good_bytes: AtomicU64::new(at as u64), broken: AtomicBool::new(false) };
        Ok((log, records))
    }

    /// Appends records durably (written and fsynced) before returning. A failed append is
    /// cut off again, so a later append never lands behind a torn frame.
    pub fn append(&self, records: &[MetadataRecord]) -> io::Result<()> {
        if self.broken.load(Ordering::Acquire) {
            return Err(io::Error::other("the metadata log could not be repaired after a failed write"));
        }
        let mut buf = Vec::new();
        for r in records {
            let body = r.encode();
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        let good = self.good_bytes.load(Ordering::Acquire);
        let f = OpenOptions::new().write(true).open(&self.path)?;
        let end = good + buf.len() as u64;
        // set_len also cuts any stale tail past the new end.
        match f.write_all_at(&buf, good).and_then(|_| f.set_len(end)).and_then(|_| f.sync_data()) {
            Ok(()) => {
                self.good_bytes.store(end, Ordering::Release);
                Ok(())
            }
            Err(e) => {
                if f.set_len(good).and_then(|_| f.sync_data()).is_err() {
                    self.broken.store(true, Ordering::Release);
                }
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replays_and_cuts_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, recs) = MetadataLog::open(dir.path()).expect("open");
        assert!(recs.is_empty());
        let r1 = MetadataRecord::RemoveTopic { id: uuid::Uuid::new_v4() };
        let r2 = MetadataRecord::RemoveTopic { id: uuid::Uuid::new_v4() };
        log.append(&[r1.clone(), r2.clone()]).expect("append");
        let path = MetadataLog::path_in(dir.path());
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut f, &[0, 0, 0, 50, 1, 2]).expect("torn");
        drop(f);
        let (_, recs) = MetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(recs, vec![r1.clone(), r2.clone()]);
        let (log, recs) = MetadataLog::open(dir.path()).expect("reopen twice");
        assert_eq!(recs.len(), 2);
        // Garbage left behind a failed write is overwritten and cut by the next append.
        let mut f = OpenOptions::new().append(true).open(&path).expect("open");
        std::io::Write::write_all(&mut f, &[9u8; 300]).expect("junk");
        drop(f);
        let r3 = MetadataRecord::ProducerIds { next_producer_id: 7 };
        log.append(std::slice::from_ref(&r3)).expect("append");
        let (_, recs) = MetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(recs, vec![r1, r2, r3]);
    }
}
