//! A broker-only node's copy of the committed metadata on disk: the image it last applied,
//! as the records of a snapshot, with the log offset it reflects
//! (`<data>/__cluster_metadata/observer.checkpoint`). At start the node loads it and fetches
//! only what the quorum committed after it, as a Kafka broker keeps `__cluster_metadata`.
//! It only ever holds committed metadata, so a stale one is merely behind: the fetch that
//! follows brings it up to date (or replaces it with the voter's snapshot).
//!
//! Layout: `magic u32 | version u16 | offset u64 | length u32 | crc32c u32 | records`, the
//! CRC over the records. Written to a temporary file, synced, renamed over the old one and
//! the directory synced, so a crash leaves either the old checkpoint or the new one whole.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

const MAGIC: u32 = 0x5745_4f43; // "WEOC"
const VERSION: u16 = 1;
const HEADER_BYTES: usize = 4 + 2 + 8 + 4 + 4;

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join("__cluster_metadata").join("observer.checkpoint")
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("not a metadata checkpoint, or of an unknown version")]
    Foreign,
    #[error("truncated or corrupt (CRC mismatch)")]
    Corrupt,
}

/// The offset and records of the checkpoint in `data_dir`; `Ok(None)` when there is none.
pub fn load(data_dir: &Path) -> Result<Option<(u64, Vec<u8>)>, CheckpointError> {
    let bytes = match fs::read(path_in(data_dir)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    decode(&bytes).map(Some)
}

fn decode(bytes: &[u8]) -> Result<(u64, Vec<u8>), CheckpointError> {
    let header = bytes.get(..HEADER_BYTES).ok_or(CheckpointError::Corrupt)?;
    let u32_at = |at: usize| u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]]);
    if u32_at(0) != MAGIC || u16::from_be_bytes([header[4], header[5]]) != VERSION {
        return Err(CheckpointError::Foreign);
    }
    let mut offset = [0u8; 8];
    offset.copy_from_slice(&header[6..14]);
    let (len, crc) = (u32_at(14) as usize, u32_at(18));
    let records = bytes.get(HEADER_BYTES..).filter(|r| r.len() == len).ok_or(CheckpointError::Corrupt)?;
    if crc32c::crc32c(records) != crc {
        return Err(CheckpointError::Corrupt);
    }
    Ok((u64::from_be_bytes(offset), records.to_vec()))
}

fn encode(offset: u64, records: &[u8]) -> Result<Vec<u8>, CheckpointError> {
    let len = u32::try_from(records.len()).map_err(|_| io::Error::other("metadata image over 4 GiB"))?;
    let mut out = Vec::with_capacity(HEADER_BYTES + records.len());
    out.extend_from_slice(&MAGIC.to_be_bytes());
    out.extend_from_slice(&VERSION.to_be_bytes());
    out.extend_from_slice(&offset.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&crc32c::crc32c(records).to_be_bytes());
    out.extend_from_slice(records);
    Ok(out)
}

/// Replaces the checkpoint in `data_dir` with `records` at `offset`, durably.
pub fn save(data_dir: &Path, offset: u64, records: &[u8]) -> Result<(), CheckpointError> {
    let path = path_in(data_dir);
    let dir = path.parent().ok_or_else(|| io::Error::other("checkpoint path has no directory"))?;
    fs::create_dir_all(dir)?;
    let temporary = path.with_extension("checkpoint.tmp");
    let mut file = fs::File::create(&temporary)?;
    file.write_all(&encode(offset, records)?)?;
    file.sync_data()?;
    fs::rename(&temporary, &path)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_checkpoint_loads_back_and_replaces_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(load(dir.path()).expect("no checkpoint").is_none());
        save(dir.path(), 7, b"first").expect("save");
        save(dir.path(), 42, b"second image").expect("save again");
        assert_eq!(load(dir.path()).expect("load").expect("a checkpoint"), (42, b"second image".to_vec()));
    }

    #[test]
    fn a_damaged_checkpoint_is_refused_not_misread() {
        let good = encode(9, b"records").expect("encode");
        assert!(decode(&good).is_ok());
        for cut in [0, 5, HEADER_BYTES, good.len() - 1] {
            assert!(matches!(decode(&good[..cut]), Err(CheckpointError::Corrupt | CheckpointError::Foreign)), "{cut}");
        }
        let mut flipped = good.clone();
        *flipped.last_mut().expect("a byte") ^= 1;
        assert!(matches!(decode(&flipped), Err(CheckpointError::Corrupt)));
        let mut foreign = good;
        foreign[0] = b'X';
        assert!(matches!(decode(&foreign), Err(CheckpointError::Foreign)));
    }
}
