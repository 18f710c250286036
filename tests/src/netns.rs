//! Network namespaces and veths, driven through iproute2.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::PathBuf,
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// Every namespace we create is named `strait-t<pid>-<seq>-<label>`.
const PREFIX: &str = "strait-t";
const NETNS_DIR: &str = "/run/netns";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("`{command}` failed: {detail}")]
    Command { command: String, detail: String },
    #[error("entering netns {name}: {source}")]
    Enter {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the code run inside netns {0} panicked")]
    Panicked(String),
}

/// Runs `cmd` to completion and returns its output; a non-zero exit is an error
/// carrying the command line and its stderr.
pub fn run(cmd: &mut Command) -> Result<Output, Error> {
    let command = format!("{cmd:?}");
    let output = cmd.output().map_err(|e| Error::Command {
        command: command.clone(),
        detail: e.to_string(),
    })?;
    if !output.status.success() {
        return Err(Error::Command {
            command,
            detail: format!(
                "{}: {}{}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim(),
                String::from_utf8_lossy(&output.stdout).trim()
            ),
        });
    }
    Ok(output)
}

fn ip(args: &[&str]) -> Result<Output, Error> {
    run(Command::new("ip").args(args))
}

/// A network namespace that is deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `strait-t<pid>-<seq>-<label>` with its loopback up.
    pub fn new(label: &str) -> Result<Self, Error> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        sweep_stale();
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let name = format!("{PREFIX}{}-{seq}-{label}", std::process::id());
        ip(&["netns", "add", &name])?;
        let ns = NetNs { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        // No duplicate address detection on interfaces created later: a
        // tentative link-local address makes the first neighbour
        // solicitations go out without a source, and tests flake on it.
        run(ns.command("sysctl").args([
            "-q",
            "-w",
            "net.ipv6.conf.default.accept_dad=0",
            "-w",
            "net.ipv6.conf.all.accept_dad=0",
        ]))?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from(NETNS_DIR).join(&self.name)
    }

    /// `ip -n <ns> args…`
    pub fn ip(&self, args: &[&str]) -> Result<Output, Error> {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        ip(&full)
    }

    /// A command that runs `program` in this namespace's network stack but in
    /// our mount namespace (unlike `ip netns exec`, which remounts /sys and
    /// would hide /sys/fs/bpf).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", self.path().display()))
            .arg("--")
            .arg(program);
        cmd
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its result.
    pub fn enter<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, Error> {
        let file = File::open(self.path()).map_err(|source| Error::Enter {
            name: self.name.clone(),
            source,
        })?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // SAFETY: setns on this thread only, with an fd we hold open;
                    // the thread ends when `f` returns, so nothing else runs in the namespace.
                    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                        return Err(Error::Enter {
                            name: self.name.clone(),
                            source: std::io::Error::last_os_error(),
                        });
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| Error::Panicked(self.name.clone()))?
        })
    }

    /// The index of `iface` in this namespace.
    pub fn ifindex(&self, iface: &str) -> Result<u32, Error> {
        let name = std::ffi::CString::new(iface).map_err(|e| Error::Command {
            command: "if_nametoindex".into(),
            detail: e.to_string(),
        })?;
        // SAFETY: if_nametoindex reads the NUL-terminated string we own.
        let index = self.enter(|| unsafe { libc::if_nametoindex(name.as_ptr()) })?;
        if index == 0 {
            return Err(Error::Command {
                command: format!("if_nametoindex({iface}) in {}", self.name),
                detail: "no such interface".into(),
            });
        }
        Ok(index)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            eprintln!("warning: could not delete netns {}: {e}", self.name);
        }
    }
}

/// One end of a veth pair living in a namespace.
#[derive(Clone, Debug)]
pub struct Veth {
    pub iface: String,
}

impl Veth {
    /// Creates a veth pair between two namespaces, both ends up, each with the
    /// given addresses (CIDR notation, from 198.18.0.0/15 or fd00::/8).
    pub fn pair(
        a: (&NetNs, &str, &[&str]),
        b: (&NetNs, &str, &[&str]),
    ) -> Result<(Veth, Veth), Error> {
        // Both ends are created directly inside their namespaces, so names
        // never meet on the host and parallel tests cannot collide.
        ip(&[
            "link",
            "add",
            "name",
            a.1,
            "netns",
            a.0.name(),
            "type",
            "veth",
            "peer",
            "name",
            b.1,
            "netns",
            b.0.name(),
        ])?;
        for (ns, iface, addrs) in [a, b] {
            for addr in addrs {
                ns.ip(&["addr", "add", addr, "dev", iface])?;
            }
            ns.ip(&["link", "set", iface, "up"])?;
        }
        Ok((
            Veth {
                iface: a.1.to_owned(),
            },
            Veth {
                iface: b.1.to_owned(),
            },
        ))
    }
}

/// Deletes namespaces left behind by earlier runs whose process is gone.
pub fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !PathBuf::from(format!("/proc/{pid}")).exists() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}
