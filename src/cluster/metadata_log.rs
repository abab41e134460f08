//! The single-node metadata log of earlier versions: `<data>/__cluster_metadata/metadata.log`,
//! framed records (`length u32 | crc32c u32 | record`). The metadata quorum replaced it; it
//! is read once, when a data directory from before is first started (its records become
//! the quorum's first snapshot), then removed.

use std::io;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::records::MetadataRecord;

pub struct MetadataLog;

impl MetadataLog {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("__cluster_metadata").join("metadata.log")
    }

    /// Every whole record, in order; a torn or corrupt tail (a crash mid-append, never
    /// acknowledged) ends the log.
    pub fn read(data_dir: &Path) -> io::Result<Vec<MetadataRecord>> {
        let bytes = std::fs::read(Self::path_in(data_dir))?;
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
                    warn!(error = %e, at, "undecodable metadata record ends the old metadata log");
                    break;
                }
            }
            at += 8 + len;
        }
        if at < bytes.len() {
            warn!(valid = at, total = bytes.len(), "old metadata log has a torn tail; it is ignored");
        }
        Ok(records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(r: &MetadataRecord) -> Vec<u8> {
        let body = r.encode();
        let mut out = (body.len() as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn reads_whole_records_and_stops_at_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = MetadataLog::path_in(dir.path());
        std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
        let r1 = MetadataRecord::RemoveTopic { id: uuid::Uuid::new_v4() };
        let r2 = MetadataRecord::ProducerIds { next_producer_id: 7 };
        let mut bytes = frame(&r1);
        bytes.extend(frame(&r2));
        bytes.extend_from_slice(&[0, 0, 0, 50, 1, 2]);
        std::fs::write(&path, bytes).expect("write");
        assert_eq!(MetadataLog::read(dir.path()).expect("read"), vec![r1, r2]);
    }
}
