//! Locating Strait's own binaries built in this workspace.

use std::path::PathBuf;

/// Path of a workspace binary: `$STRAIT_BIN_DIR/<name>` if set, else next to
/// the running test executable's profile directory (target/<profile>/).
pub fn path(name: &str) -> Result<PathBuf, String> {
    let dir = match std::env::var_os("STRAIT_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
            // target/<profile>/deps/<test> or target/<profile>/<bin>
            let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
        }
    };
    let bin = dir.join(name);
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: build it first (`cargo build --workspace`, which `cargo xtask test` does)",
            bin.display()
        ))
    }
}
