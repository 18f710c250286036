//! What an earlier run left when it was killed before its guards ran: its
//! scratch directory, the processes started with files in it, its pinned
//! BPF objects. (Its namespaces are swept by `NetNs::new`.)

use std::path::{Path, PathBuf};

/// The label of the demo's scratch directory (`strait-gw-<pid>-<seq>-demo`).
pub const SCRATCH_LABEL: &str = "demo";

fn dead(pid: &str) -> bool {
    pid.parse::<u32>()
        .is_ok_and(|pid| pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists())
}

/// Sweeps every leftover of runs whose process is gone.
pub fn stale_runs() {
    for dir in stale_scratch_dirs() {
        let marker = dir.display().to_string();
        for pid in processes_using(&dir) {
            println!("sweeping process {pid} left by an earlier run (uses {marker})");
        }
        println!("sweeping {marker}, left by an earlier run");
        let _ = std::fs::remove_dir_all(&dir);
    }
    let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("strait-t")
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if dead(pid) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Kills what still runs with files of `dir` (a virtual kubelet whose
/// controller is gone, a gateway whose demo was killed); returns their pids.
pub fn processes_using(dir: &Path) -> Vec<i32> {
    let pids = processes_mentioning(&dir.display().to_string());
    for &pid in &pids {
        // SAFETY: kill(2) of a process that names the demo's own directory
        // on its command line or in its environment: one the demo started.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    pids
}

fn stale_scratch_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            name.ends_with(&format!("-{SCRATCH_LABEL}"))
                && name
                    .strip_prefix("strait-gw-")
                    .and_then(|r| r.split('-').next())
                    .is_some_and(dead)
        })
        .map(|entry| entry.path())
        .collect()
}

fn processes_mentioning(marker: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            ["cmdline", "environ"].iter().any(|file| {
                std::fs::read(format!("/proc/{pid}/{file}"))
                    .is_ok_and(|bytes| String::from_utf8_lossy(&bytes).contains(marker))
            })
        })
        .collect()
}
