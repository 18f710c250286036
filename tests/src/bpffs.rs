//! Per-test pin directories on bpffs.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use strait_dataplane::bpffs::{is_bpffs, PinDir};

use crate::netns::{run, Error};

const BPFFS: &str = "/sys/fs/bpf";

/// Mounts bpffs at /sys/fs/bpf unless it is there already.
pub fn ensure_mounted() -> Result<(), Error> {
    if is_bpffs(Path::new(BPFFS)).unwrap_or(false) {
        return Ok(());
    }
    run(Command::new("mount").args(["-t", "bpf", "bpf", BPFFS])).map(|_| ())
}

/// A pin directory unique to this process and call, removed on drop (which
/// also detaches every tcx link pinned in it).
#[derive(Debug)]
pub struct TestPinDir {
    path: PathBuf,
}

impl TestPinDir {
    pub fn new(label: &str) -> Result<Self, Error> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        ensure_mounted()?;
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        Ok(TestPinDir {
            path: PathBuf::from(BPFFS)
                .join(format!("strait-t{}-{seq}-{label}", std::process::id())),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the directory and returns the loader's view of it.
    pub fn pin_dir(&self) -> Result<PinDir, strait_dataplane::Error> {
        PinDir::create(&self.path)
    }
}

impl Drop for TestPinDir {
    fn drop(&mut self) {
        if self.path.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("warning: could not remove {}: {e}", self.path.display());
            }
        }
    }
}
