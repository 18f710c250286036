//! Child processes of the demo, and waiting for Ctrl-C under `--keep`.

use std::{
    os::unix::process::CommandExt as _,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::Duration,
};

use anyhow::{Context as _, Result};

use crate::gateway::Process;

/// Starts `command` with its output in `log`, in its own process group (a
/// Ctrl-C meant for the demo does not kill it before the demo cleans up) and
/// terminated by the kernel if the demo dies without cleaning up. Stopped
/// (SIGTERM, then SIGKILL) when the returned guard is dropped.
pub fn spawn(mut command: Command, log: PathBuf) -> Result<Process> {
    command.process_group(0);
    // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and only changes
    // the calling (child) process's own death signal.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.stdin(Stdio::null());
    let what = format!("{command:?}");
    Process::from_command(command, log).with_context(|| format!("starting {what}"))
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Blocks until SIGINT or SIGTERM.
pub fn wait_for_interrupt() {
    let handler = on_interrupt as extern "C" fn(libc::c_int);
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { libc::signal(signal, handler as libc::sighandler_t) };
    }
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
}
