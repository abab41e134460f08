//! The metadata quorum's durable Raft state, in `<data>/__cluster_metadata/raft/`: the log
//! (`log`: the Raft entries, whose data are metadata records), the hard state (`hardstate`:
//! term, vote, commit) and the latest snapshot (`snapshot`: the serialized metadata image
//! at an applied index). It implements raft-rs's [`Storage`] for reads; the quorum calls
//! the `persist_*` methods with what a `Ready` hands it, before sending the messages that
//! depend on it, so every write here is fsynced before it returns.
//!
//! Runs on the control shard only, inline: metadata writes are rare and small, and the
//! control shard has no client connections to stall (a blocking fsync there delays only
//! the quorum's own next step).
//!
//! Formats: `log` is a sequence of frames `length u32 | crc32c u32 | Entry (protobuf)`;
//! a torn or corrupt tail is cut at open (an entry is acknowledged to no one before its
//! frame is synced). `hardstate` and `snapshot` are `crc32c u32 | protobuf`, replaced
//! whole by write-to-temporary, fsync, rename, fsync of the directory.
//!
//! Membership is static (KIP-595's `controller.quorum.voters`): the conf state always comes
//! from the configured voters, never from the log.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, Storage, StorageError};
use tracing::warn;

/// Bytes of a log frame's header: length and CRC.
const FRAME_HEADER_BYTES: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum RaftStorageError {
    #[error("raft storage I/O failed: {0}")]
    Io(#[from] io::Error),
    #[error("raft storage file {path} is corrupt: {why}")]
    Corrupt { path: PathBuf, why: String },
    #[error("entries from {first} do not follow the log (last index {last}, snapshot index {snapshot})")]
    Gap { first: u64, last: u64, snapshot: u64 },
    #[error(
        "controller.quorum.voters names nodes {configured:?}, but the quorum in {dir} was formed by nodes {stored:?}: \
         every node must be configured with the voters the quorum has (changing them is not supported)"
    )]
    VotersChanged { dir: PathBuf, stored: Vec<i64>, configured: Vec<i64> },
}

pub struct RaftStorage {
    dir: PathBuf,
    hard_state: HardState,
    conf_state: ConfState,
    /// The latest snapshot (its metadata says the index and term it covers).
    snapshot: Snapshot,
    /// Entries after the snapshot, in index order.
    entries: Vec<Entry>,
    /// Where each entry's frame starts in the log file, and the file's length.
    offsets: Vec<u64>,
    /// Bytes of entry data after the snapshot (what a new snapshot would compact).
    entry_bytes: u64,
    log_bytes: u64,
    log: File,
}

impl RaftStorage {
    pub fn dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("__cluster_metadata").join("raft")
    }

    /// Opens (creating) the storage in `dir` for a quorum of `voters` (Raft ids).
    pub fn open(dir: &Path, voters: &[u64]) -> Result<RaftStorage, RaftStorageError> {
        if !dir.exists() {
            fs::create_dir_all(dir)?;
            sync_dir(dir.parent().unwrap_or(dir))?;
        }
        check_voters(dir, voters)?;
        let conf_state = ConfState::from((voters.to_vec(), Vec::new()));
        let hard_state = match read_whole(&dir.join("hardstate"))? {
            Some(bytes) => HardState::parse_from_bytes(&bytes).map_err(|e| corrupt(&dir.join("hardstate"), e))?,
            None => HardState::default(),
        };
        let mut snapshot = match read_whole(&dir.join("snapshot"))? {
            Some(bytes) => Snapshot::parse_from_bytes(&bytes).map_err(|e| corrupt(&dir.join("snapshot"), e))?,
            None => Snapshot::default(),
        };
        snapshot.mut_metadata().set_conf_state(conf_state.clone());
        let log_path = dir.join("log");
        let log = OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&log_path)?;
        let mut storage = RaftStorage {
            dir: dir.to_path_buf(),
            hard_state,
            conf_state,
            snapshot,
            entries: Vec::new(),
            offsets: Vec::new(),
            entry_bytes: 0,
            log_bytes: 0,
            log,
        };
        storage.load_log()?;
        Ok(storage)
    }

    /// Reads the log's frames, keeping the entries after the snapshot and cutting a torn tail.
    fn load_log(&mut self) -> Result<(), RaftStorageError> {
        let mut bytes = Vec::new();
        (&self.log).read_to_end(&mut bytes)?;
        let snapshot_index = self.snapshot_index();
        let mut at = 0usize;
        while let Some(header) = bytes.get(at..at + FRAME_HEADER_BYTES) {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            let crc = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let Some(body) = bytes.get(at + FRAME_HEADER_BYTES..at + FRAME_HEADER_BYTES + len) else { break };
            if crc32c::crc32c(body) != crc {
                break;
            }
            let Ok(entry) = Entry::parse_from_bytes(body) else { break };
            let expected = self.last_index_now() + 1;
            if entry.index > snapshot_index {
                if entry.index != expected {
                    return Err(corrupt(
                        &self.dir.join("log"),
                        format!("entry {} where {expected} was due", entry.index),
                    ));
                }
                self.offsets.push(at as u64);
                self.entry_bytes += entry.data.len() as u64;
                self.entries.push(entry);
            }
            at += FRAME_HEADER_BYTES + len;
        }
        if at < bytes.len() {
            warn!(valid = at, total = bytes.len(), "truncating torn raft log tail");
            self.log.set_len(at as u64)?;
            self.log.sync_all()?;
        }
        self.log_bytes = at as u64;
        Ok(())
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn snapshot_index(&self) -> u64 {
        self.snapshot.get_metadata().index
    }

    /// The latest snapshot's data (the serialized image it covers).
    pub fn snapshot_term(&self) -> u64 {
        self.snapshot.get_metadata().term
    }

    pub fn snapshot_data(&self) -> &[u8] {
        &self.snapshot.data
    }

    fn last_index_now(&self) -> u64 {
        self.entries.last().map_or(self.snapshot_index(), |e| e.index)
    }

    /// Bytes of entry data in the log since the snapshot (what a new snapshot would compact).
    pub fn bytes_since_snapshot(&self) -> u64 {
        self.entry_bytes
    }

    /// Appends `entries` durably; entries at indexes the log already has replace them and
    /// everything after (a new leader overwrote an uncommitted suffix).
    /// Makes every later log write fail, as a disk that went away would (tests).
    #[cfg(test)]
    pub fn lose_disk(&mut self) -> io::Result<()> {
        self.log = File::open(self.dir.join("log"))?;
        Ok(())
    }

    pub fn persist_entries(&mut self, entries: &[Entry]) -> Result<(), RaftStorageError> {
        let Some(first) = entries.first().map(|e| e.index) else { return Ok(()) };
        let snapshot_index = self.snapshot_index();
        let last = self.last_index_now();
        if first <= snapshot_index || first > last + 1 {
            return Err(RaftStorageError::Gap { first, last, snapshot: snapshot_index });
        }
        let keep = (first - snapshot_index - 1) as usize;
        if keep < self.entries.len() {
            let cut = self.offsets[keep];
            self.entry_bytes -= self.entries[keep..].iter().map(|e| e.data.len() as u64).sum::<u64>();
            self.entries.truncate(keep);
            self.offsets.truncate(keep);
            self.log.set_len(cut)?;
            self.log_bytes = cut;
        }
        let mut buf = Vec::new();
        for e in entries {
            let body = e.write_to_bytes().map_err(|err| io::Error::other(err.to_string()))?;
            self.offsets.push(self.log_bytes + buf.len() as u64);
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            buf.extend_from_slice(&body);
            self.entry_bytes += e.data.len() as u64;
            self.entries.push(e.clone());
        }
        use std::os::unix::fs::FileExt;
        let end = self.log_bytes + buf.len() as u64;
        // set_len also cuts whatever a failed earlier write left past the new end.
        let written = self
            .log
            .write_all_at(&buf, self.log_bytes)
            .and_then(|_| self.log.set_len(end))
            .and_then(|_| self.log.sync_data());
        if let Err(e) = written {
            // Forget what may not be on disk; the quorum stops on this error.
            let kept = self.entries.len() - entries.len();
            self.entry_bytes -= entries.iter().map(|e| e.data.len() as u64).sum::<u64>();
            self.entries.truncate(kept);
            self.offsets.truncate(kept);
            return Err(e.into());
        }
        self.log_bytes = end;
        Ok(())
    }

    pub fn persist_hard_state(&mut self, hard_state: &HardState) -> Result<(), RaftStorageError> {
        let bytes = hard_state.write_to_bytes().map_err(|e| io::Error::other(e.to_string()))?;
        replace_whole(&self.dir, "hardstate", &bytes)?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    /// Records the commit index (the hard state's other fields unchanged).
    pub fn persist_commit(&mut self, commit: u64) -> Result<(), RaftStorageError> {
        let mut hs = self.hard_state.clone();
        hs.commit = commit;
        self.persist_hard_state(&hs)
    }

    /// Installs a snapshot (from the leader, or taken here) and drops the entries it covers;
    /// entries after it that match are kept.
    pub fn persist_snapshot(&mut self, mut snapshot: Snapshot) -> Result<(), RaftStorageError> {
        snapshot.mut_metadata().set_conf_state(self.conf_state.clone());
        let index = snapshot.get_metadata().index;
        let term = snapshot.get_metadata().term;
        let bytes = snapshot.write_to_bytes().map_err(|e| io::Error::other(e.to_string()))?;
        replace_whole(&self.dir, "snapshot", &bytes)?;
        let matching = self.entries.iter().any(|e| e.index == index && e.term == term);
        let kept: Vec<Entry> =
            if matching { self.entries.iter().filter(|e| e.index > index).cloned().collect() } else { Vec::new() };
        self.snapshot = snapshot;
        self.rewrite_log(kept)?;
        if self.hard_state.commit < index {
            self.persist_commit(index)?;
        }
        Ok(())
    }

    /// Makes `data` the state at index 1 of a fresh quorum (a data directory from before the
    /// quorum existed): a snapshot at index 1, term 1, committed.
    pub fn adopt_as_snapshot(&mut self, data: Vec<u8>) -> Result<(), RaftStorageError> {
        let mut snapshot = Snapshot::default();
        snapshot.mut_metadata().index = 1;
        snapshot.mut_metadata().term = 1;
        snapshot.data = data.into();
        let mut hs = self.hard_state.clone();
        hs.term = hs.term.max(1);
        hs.commit = hs.commit.max(1);
        self.persist_hard_state(&hs)?;
        self.persist_snapshot(snapshot)
    }

    /// Replaces the log file with one holding `entries` (after a snapshot compacted it).
    fn rewrite_log(&mut self, entries: Vec<Entry>) -> Result<(), RaftStorageError> {
        let mut buf = Vec::new();
        let mut offsets = Vec::with_capacity(entries.len());
        for e in &entries {
            let body = e.write_to_bytes().map_err(|err| io::Error::other(err.to_string()))?;
            offsets.push(buf.len() as u64);
            buf.extend_from_slice(&(body.len() as u32).to_be_bytes());
            buf.extend_from_slice(&crc32c::crc32c(&body).to_be_bytes());
            buf.extend_from_slice(&body);
        }
        let tmp = self.dir.join("log.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
        fs::rename(&tmp, self.dir.join("log"))?;
        sync_dir(&self.dir)?;
        self.log = OpenOptions::new().read(true).write(true).open(self.dir.join("log"))?;
        self.entry_bytes = entries.iter().map(|e| e.data.len() as u64).sum();
        self.entries = entries;
        self.offsets = offsets;
        self.log_bytes = buf.len() as u64;
        Ok(())
    }
}

impl Storage for RaftStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let first = self.snapshot_index() + 1;
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last_index_now() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let mut out = self.entries[(low - first) as usize..(high - first) as usize].to_vec();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let snapshot = self.snapshot.get_metadata();
        if idx == snapshot.index {
            return Ok(snapshot.term);
        }
        if idx < snapshot.index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - snapshot.index - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.snapshot_index() + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index_now())
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot_index() < request_index {
            return Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable));
        }
        Ok(self.snapshot.clone())
    }
}

/// The voters a quorum's storage was formed with, kept in `voters` (Raft ids, one line):
/// opening it with other voters is refused, since votes and terms were counted among them.
fn check_voters(dir: &Path, voters: &[u64]) -> Result<(), RaftStorageError> {
    let path = dir.join("voters");
    let mut configured = voters.to_vec();
    configured.sort_unstable();
    let node_ids = |ids: &[u64]| ids.iter().map(|id| *id as i64 - 1).collect::<Vec<i64>>();
    match read_whole(&path)? {
        Some(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let stored: Vec<u64> = text
                .split(',')
                .map(|id| id.trim().parse().map_err(|_| corrupt(&path, format!("bad voter id `{id}`"))))
                .collect::<Result<_, _>>()?;
            if stored != configured {
                return Err(RaftStorageError::VotersChanged {
                    dir: dir.to_path_buf(),
                    stored: node_ids(&stored),
                    configured: node_ids(&configured),
                });
            }
            Ok(())
        }
        None => {
            let text = configured.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
            Ok(replace_whole(dir, "voters", text.as_bytes())?)
        }
    }
}

fn corrupt(path: &Path, why: impl ToString) -> RaftStorageError {
    RaftStorageError::Corrupt { path: path.to_path_buf(), why: why.to_string() }
}

/// Reads a `crc32c | body` file; `None` when it does not exist.
fn read_whole(path: &Path) -> Result<Option<Vec<u8>>, RaftStorageError> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let Some((crc, body)) = bytes.split_first_chunk::<4>() else {
        return Err(corrupt(path, "shorter than its checksum"));
    };
    if crc32c::crc32c(body) != u32::from_be_bytes(*crc) {
        return Err(corrupt(path, "checksum mismatch"));
    }
    Ok(Some(body.to_vec()))
}

/// Writes `crc32c | body` to `dir/name` atomically and durably.
fn replace_whole(dir: &Path, name: &str, body: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut f = File::create(&tmp)?;
    f.write_all(&crc32c::crc32c(body).to_be_bytes())?;
    f.write_all(body)?;
    f.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64, data: &[u8]) -> Entry {
        Entry { index, term, data: data.to_vec().into(), ..Default::default() }
    }

    #[test]
    fn entries_hard_state_and_snapshots_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft");
        let mut s = RaftStorage::open(&path, &[1]).expect("open");
        assert_eq!((s.first_index().ok(), s.last_index().ok()), (Some(1), Some(0)));
        s.persist_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b"), entry(3, 1, b"c")]).expect("append");
        // A new leader replaces the uncommitted suffix from index 3.
        s.persist_entries(&[entry(3, 2, b"C"), entry(4, 2, b"d")]).expect("overwrite");
        let hs = HardState { term: 2, vote: 1, commit: 2, ..Default::default() };
        s.persist_hard_state(&hs).expect("hard state");
        drop(s);
        let s = RaftStorage::open(&path, &[1]).expect("reopen");
        assert_eq!(s.last_index().ok(), Some(4));
        assert_eq!(s.term(3).ok(), Some(2));
        let got = s.entries(1, 5, None, GetEntriesContext::empty(false)).expect("entries");
        let data: Vec<&[u8]> = got.iter().map(|e| &e.data[..]).collect();
        assert_eq!(data, vec![&b"a"[..], b"b", b"C", b"d"]);
        assert_eq!(s.bytes_since_snapshot(), 4, "the overwritten entry no longer counts");
        assert_eq!(s.hard_state(), &hs);
        assert_eq!(s.initial_state().expect("state").conf_state.voters, vec![1]);

        let mut s = s;
        let mut snap = Snapshot::default();
        snap.mut_metadata().index = 3;
        snap.mut_metadata().term = 2;
        snap.data = b"image@3".to_vec().into();
        s.persist_snapshot(snap).expect("snapshot");
        drop(s);
        let s = RaftStorage::open(&path, &[1]).expect("reopen after snapshot");
        assert_eq!((s.first_index().ok(), s.last_index().ok()), (Some(4), Some(4)));
        assert_eq!(s.term(3).ok(), Some(2));
        assert_eq!(s.snapshot_data(), b"image@3");
        assert_eq!(s.bytes_since_snapshot(), 1, "only the entry after the snapshot counts");
        assert!(matches!(
            s.entries(2, 4, None, GetEntriesContext::empty(false)),
            Err(raft::Error::Store(StorageError::Compacted))
        ));
    }

    #[test]
    fn a_torn_log_tail_is_cut() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft");
        let mut s = RaftStorage::open(&path, &[1]).expect("open");
        s.persist_entries(&[entry(1, 1, b"a"), entry(2, 1, b"b")]).expect("append");
        drop(s);
        let mut f = OpenOptions::new().append(true).open(path.join("log")).expect("log");
        f.write_all(&[0, 0, 0, 40, 1, 2, 3]).expect("torn frame");
        drop(f);
        let mut s = RaftStorage::open(&path, &[1]).expect("reopen");
        assert_eq!(s.last_index().ok(), Some(2));
        s.persist_entries(&[entry(3, 1, b"c")]).expect("append after the cut");
        drop(s);
        let s = RaftStorage::open(&path, &[1]).expect("reopen");
        assert_eq!(s.last_index().ok(), Some(3));
    }

    #[test]
    fn a_corrupt_hard_state_is_refused_not_guessed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("raft");
        let mut s = RaftStorage::open(&path, &[1]).expect("open");
        let hs = HardState { term: 3, ..Default::default() };
        s.persist_hard_state(&hs).expect("hard state");
        drop(s);
        let mut bytes = fs::read(path.join("hardstate")).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(path.join("hardstate"), bytes).expect("write");
        assert!(matches!(RaftStorage::open(&path, &[1]), Err(RaftStorageError::Corrupt { .. })));
    }
}
