//! The metadata log on a single node: `<data>/__cluster_metadata/metadata.log`, a file of
//! framed records (`length u32 | crc32c u32 | record`), each synced before it is applied.
//! Replaying it at start rebuilds the image; a torn last frame is cut off.
//!
//! Runs on the control shard. Writes are rare (topic changes), so they go through a blocking
//! thread (`spawn_blocking`) rather than the data path's io_uring files.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use tracing::warn;

use super::records::MetadataRecord;

pub struct MetadataLog {
    path: PathBuf,
}

impl MetadataLog {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("__cluster_metadata").join("metadata.log")
    }

    /// Reads every record (cutting a torn tail) and returns the log ready for appends.
    pub fn open(data_dir: &Path) -> io::Result<(MetadataLog, Vec<MetadataRecord>)> {
        let path = Self::path_in(data_dir);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
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
        Ok((MetadataLog { path }, records))
    }

    /// Appends records durably (written and fsynced) before returning.
    pub fn append(&self, records: &[MetadataRecord]) -> io::Result<()> {
        let mut buf = Vec::new();
        for r in records {
            let body = r.encode();
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        let mut f = OpenOptions::new().create(true).append(true).open(&self.path)?;
        f.write_all(&buf)?;
        f.sync_data()?;
        Ok(())
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
        f.write_all(&[0, 0, 0, 50, 1, 2]).expect("torn");
        drop(f);
        let (_, recs) = MetadataLog::open(dir.path()).expect("reopen");
        assert_eq!(recs, vec![r1, r2]);
        let (_, recs) = MetadataLog::open(dir.path()).expect("reopen twice");
        assert_eq!(recs.len(), 2);
    }
}
