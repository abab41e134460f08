//! Works around glommio's io_uring poll-ring probe. The first `DmaFile` opened on a device
//! (per thread) decides whether the device supports IOPOLL by reading its first block; on
//! an empty file that read succeeds without touching the device, so a device without
//! IOPOLL (virtio, most VMs) is marked pollable and every later read fails with
//! EOPNOTSUPP. Opening a file that has a real first block before any segment avoids it.

use std::cell::RefCell;
use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

const PROBE_FILE: &str = ".weir_io_probe";
const PROBE_BYTES: usize = 4096;

thread_local! {
    static PROBED: RefCell<HashSet<PathBuf>> = RefCell::new(HashSet::new());
}

/// Makes glommio probe the device holding `dir` with a real read (once per thread and dir).
pub async fn ensure_probed(dir: &Path) -> io::Result<()> {
    if PROBED.with(|p| p.borrow().contains(dir)) {
        return Ok(());
    }
    let path = dir.join(PROBE_FILE);
    let p = path.clone();
    glommio::executor()
        .spawn_blocking(move || -> io::Result<()> {
            if std::fs::metadata(&p).map(|m| m.len() as usize >= PROBE_BYTES).unwrap_or(false) {
                return Ok(());
            }
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&p, vec![0u8; PROBE_BYTES])
        })
        .await?;
    let file = glommio::io::DmaFile::open(&path).await.map_err(io::Error::from)?;
    file.close().await.map_err(io::Error::from)?;
    PROBED.with(|p| p.borrow_mut().insert(dir.to_path_buf()));
    Ok(())
}
