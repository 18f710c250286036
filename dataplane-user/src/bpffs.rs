//! The pin directory: where maps and links outlive the process.

use std::{
    ffi::CString,
    fs,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use crate::Error;

/// `BPF_FS_MAGIC` from linux/magic.h.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Layout of one pin directory.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    /// Checks that `root`'s nearest existing ancestor is on bpffs, then creates
    /// `root` and its `links/` subdirectory.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        let existing = root
            .ancestors()
            .find(|p| p.exists())
            .unwrap_or_else(|| Path::new("/"));
        if !is_bpffs(existing)? {
            return Err(Error::NotBpffs { path: root });
        }
        let dir = PinDir { root };
        fs::create_dir_all(dir.links()).map_err(|e| Error::io("creating", dir.links(), e))?;
        Ok(dir)
    }

    /// Opens an existing pin directory without creating anything.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, Error> {
        let root = root.into();
        if !root.exists() {
            return Err(Error::NoPins { path: root });
        }
        if !is_bpffs(&root)? {
            return Err(Error::NotBpffs { path: root });
        }
        Ok(PinDir { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// Opens the map pinned here under `name`, without loading any program.
    pub fn open_map(&self, name: &str) -> Result<aya::maps::Map, aya::maps::MapError> {
        aya::maps::Map::from_map_data(aya::maps::MapData::from_pin(self.map(name))?)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Where the tcx link of one program on one interface is pinned.
    pub fn link(&self, iface: &str, direction: &str) -> PathBuf {
        self.links()
            .join(format!("{}_{direction}", escape_pin_name(iface)))
    }

    /// Removes the directory and everything pinned in it. Attached tcx links
    /// pinned here are detached by this.
    pub fn remove(self) -> Result<(), Error> {
        fs::remove_dir_all(&self.root).map_err(|e| Error::io("removing", &self.root, e))
    }
}

/// bpffs refuses names containing '.', which interface names may have
/// (`eth0.100`): percent-encode it (and '%' itself, to stay reversible).
fn escape_pin_name(name: &str) -> String {
    name.replace('%', "%25").replace('.', "%2E")
}

/// Whether `path` lives on a bpffs mount.
pub fn is_bpffs(path: &Path) -> Result<bool, Error> {
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(|e| {
        Error::io(
            "checking",
            path,
            std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
        )
    })?;
    // SAFETY: statfs(2) only writes into the zeroed buffer we own; the path is
    // a valid NUL-terminated string for the duration of the call.
    let (rc, stat) = unsafe {
        let mut stat: libc::statfs = std::mem::zeroed();
        let rc = libc::statfs(c_path.as_ptr(), &mut stat);
        (rc, stat)
    };
    if rc != 0 {
        return Err(Error::io("statfs", path, std::io::Error::last_os_error()));
    }
    #[allow(
        clippy::unnecessary_cast,
        reason = "f_type's width differs between libcs"
    )]
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_pin_names_never_contain_dots_and_stay_distinct() {
        let dir = PinDir {
            root: PathBuf::from("/sys/fs/bpf/strait"),
        };
        let vlan = dir.link("eth0.100", "ingress");
        assert_eq!(
            vlan,
            PathBuf::from("/sys/fs/bpf/strait/links/eth0%2E100_ingress")
        );
        assert_ne!(dir.link("a%2Eb", "ingress"), dir.link("a.b", "ingress"));
    }
}
