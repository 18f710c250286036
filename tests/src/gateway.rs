//! Two simulated clusters' gateways on a simulated internet: a bridge in
//! its own namespace, each gateway namespace attached by a veth. Runs the
//! `strait-gateway` binary (or Debian's wireguard-go configured with `wg`)
//! in them, each process stopped and its files removed on drop.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use strait_gateway::GatewayStatus;

use crate::{
    bins,
    netns::{run, Error},
    NetNs,
};

/// The internet: a bridge every attached namespace can reach the others on.
/// Underlay addresses are 198.18.10.<n>/24 and fd00:10::<n>/64.
pub struct Internet {
    pub ns: NetNs,
    ports: AtomicU32,
}

impl Internet {
    pub fn new() -> Result<Self, Error> {
        let ns = NetNs::new("inet")?;
        ns.ip(&["link", "add", "br0", "type", "bridge"])?;
        ns.ip(&["link", "set", "br0", "up"])?;
        Ok(Internet {
            ns,
            ports: AtomicU32::new(0),
        })
    }

    /// Plugs `host` in as `eth0` with underlay host number `n`.
    pub fn attach(&self, host: &NetNs, n: u8) -> Result<(), Error> {
        let port = format!("port{}", self.ports.fetch_add(1, Ordering::Relaxed));
        run(Command::new("ip").args([
            "link",
            "add",
            "eth0",
            "netns",
            host.name(),
            "type",
            "veth",
            "peer",
            "name",
            &port,
            "netns",
            self.ns.name(),
        ]))?;
        self.ns.ip(&["link", "set", &port, "master", "br0", "up"])?;
        host.ip(&["addr", "add", &format!("198.18.10.{n}/24"), "dev", "eth0"])?;
        host.ip(&["addr", "add", &format!("fd00:10::{n}/64"), "dev", "eth0"])?;
        host.ip(&["link", "set", "eth0", "up"])?;
        Ok(())
    }
}

pub fn underlay_v4(n: u8) -> String {
    format!("198.18.10.{n}")
}

pub fn underlay_v6(n: u8) -> String {
    format!("fd00:10::{n}")
}

/// A directory for one test's files, removed on drop.
pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    pub fn new(label: &str) -> Result<Self, Error> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "strait-gw-{}-{}-{label}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).map_err(|e| Error::Command {
            command: format!("mkdir {}", dir.display()),
            detail: e.to_string(),
        })?;
        Ok(Scratch { dir })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A unique interface name (the userspace implementations keep their UAPI
/// socket under /var/run/wireguard/<name>.sock, shared by all namespaces).
pub fn unique_ifname(prefix: &str) -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}{}{}",
        std::process::id() % 10_000,
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
    .chars()
    .take(15)
    .collect()
}

/// A process in a namespace: SIGTERM, then SIGKILL, on drop.
pub struct Process {
    child: Option<Child>,
    pub log: PathBuf,
}

impl Process {
    pub fn spawn(ns: &NetNs, program: &Path, args: &[&str], log: PathBuf) -> Result<Self, Error> {
        let err = |e: std::io::Error| Error::Command {
            command: format!("{} {args:?}", program.display()),
            detail: e.to_string(),
        };
        let mut command = ns.command(program);
        command.args(args).stdin(Stdio::null());
        Self::from_command(command, log).map_err(err)
    }

    /// Starts `command` with stdout and stderr in `log`.
    pub fn from_command(mut command: Command, log: PathBuf) -> Result<Self, std::io::Error> {
        let out = std::fs::File::create(&log)?;
        let child = command.stdout(out.try_clone()?).stderr(out).spawn()?;
        Ok(Process {
            child: Some(child),
            log,
        })
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Stops the process (SIGTERM, SIGKILL after 3 s) and waits for it.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // SAFETY: as in `signal`.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A running strait-gateway and its files.
pub struct Gateway {
    pub process: Process,
    pub status_file: PathBuf,
    pub public_key_file: PathBuf,
    pub config_file: PathBuf,
}

impl Gateway {
    /// Writes `config` (YAML) and starts the gateway in `ns` with `args`.
    pub fn start(
        ns: &NetNs,
        scratch: &Scratch,
        name: &str,
        config: &str,
        args: &[&str],
    ) -> Result<Self, Error> {
        let config_file = scratch.path(&format!("{name}.yaml"));
        std::fs::write(&config_file, config).map_err(|e| Error::Command {
            command: format!("writing {}", config_file.display()),
            detail: e.to_string(),
        })?;
        let status_file = scratch.path(&format!("{name}.status"));
        let _ = std::fs::remove_file(&status_file);
        let binary = bins::path("strait-gateway").map_err(|detail| Error::Command {
            command: "strait-gateway".into(),
            detail,
        })?;
        let config_arg = config_file.display().to_string();
        let status_arg = status_file.display().to_string();
        let mut full = vec![
            "--config",
            config_arg.as_str(),
            "--status-file",
            status_arg.as_str(),
            "--probe-interval-ms",
            "200",
        ];
        full.extend_from_slice(args);
        let process = Process::spawn(ns, &binary, &full, scratch.path(&format!("{name}.log")))?;
        Ok(Gateway {
            process,
            status_file,
            public_key_file: scratch.path(&format!("{name}.pub")),
            config_file,
        })
    }

    pub fn status(&self) -> Option<GatewayStatus> {
        GatewayStatus::read(&self.status_file).ok()
    }

    /// Waits until `check` holds for the status, up to `limit`.
    pub fn wait_status(
        &mut self,
        limit: Duration,
        check: impl Fn(&GatewayStatus) -> bool,
    ) -> Result<GatewayStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            let status = self.status();
            if let Some(s) = status.as_ref().filter(|s| check(s)) {
                return Ok(s.clone());
            }
            if !self.process.alive() || Instant::now() >= deadline {
                return Err(format!(
                    "gateway status {status:?} after {limit:?}; log:\n{}",
                    self.process.log_text()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Configuration of a strait-gateway server on `port`.
pub fn server_config(
    interface: &str,
    port: u16,
    peer_key_file: &Path,
    public_key_file: &Path,
    tunnel: &Tunnel,
    extra: &str,
) -> String {
    format!(
        "interface: {interface}\nserver: {{ endpoint: {{ port: {port} }} }}\npeerPublicKeyFile: {}\npublicKeyFile: {}\n{}{extra}",
        peer_key_file.display(),
        public_key_file.display(),
        tunnel.yaml(true)
    )
}

/// Configuration of a strait-gateway client dialling `server:port`.
pub fn client_config(
    interface: &str,
    server: &str,
    port: u16,
    peer_key_file: &Path,
    public_key_file: &Path,
    tunnel: &Tunnel,
    extra: &str,
) -> String {
    format!(
        "interface: {interface}\nclient: {{ endpoint: {{ addresses: [\"{server}\"], port: {port} }} }}\npeerPublicKeyFile: {}\npublicKeyFile: {}\n{}{extra}",
        peer_key_file.display(),
        public_key_file.display(),
        tunnel.yaml(false)
    )
}

/// Tunnel addressing: server .1, client .2 of 198.19.255.0/30 and fd00:ff::/126.
pub struct Tunnel;

impl Tunnel {
    pub const SERVER_V4: &'static str = "198.19.255.1";
    pub const CLIENT_V4: &'static str = "198.19.255.2";
    pub const SERVER_V6: &'static str = "fd00:ff::1";
    pub const CLIENT_V6: &'static str = "fd00:ff::2";

    fn yaml(&self, server: bool) -> String {
        let (own4, own6, peer4, peer6) = if server {
            (
                Self::SERVER_V4,
                Self::SERVER_V6,
                Self::CLIENT_V4,
                Self::CLIENT_V6,
            )
        } else {
            (
                Self::CLIENT_V4,
                Self::CLIENT_V6,
                Self::SERVER_V4,
                Self::SERVER_V6,
            )
        };
        format!(
            "tunnel:\n  addresses: [{own4}/30, \"{own6}/126\"]\n  peerAddresses: [{peer4}, \"{peer6}\"]\n"
        )
    }
}

/// Debian's wireguard-go with its interface configured by `wg` and `ip`.
pub struct WireguardGo {
    pub process: Process,
    pub interface: String,
    pub public_key: String,
}

impl WireguardGo {
    /// Starts wireguard-go in `ns` with a fresh key, `listen_port` (0: any),
    /// one peer, and the given tunnel addresses.
    pub fn start(
        ns: &NetNs,
        scratch: &Scratch,
        listen_port: u16,
        peer_key: &str,
        peer_endpoint: Option<&str>,
        own: [&str; 2],
        peer: [&str; 2],
    ) -> Result<Self, Error> {
        let interface = unique_ifname("wgo");
        let process = Process::spawn(
            ns,
            Path::new("wireguard-go"),
            &["-f", &interface],
            scratch.path(&format!("{interface}.log")),
        )?;
        let socket = PathBuf::from(format!("/var/run/wireguard/{interface}.sock"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !socket.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let key_file = scratch.path(&format!("{interface}.key"));
        let key = run(Command::new("wg").arg("genkey"))?;
        std::fs::write(&key_file, &key.stdout).map_err(|e| Error::Command {
            command: "writing the wireguard-go key".into(),
            detail: e.to_string(),
        })?;
        let public = run(Command::new("sh")
            .arg("-c")
            .arg(format!("wg pubkey < {}", key_file.display())))?;
        let public_key = String::from_utf8_lossy(&public.stdout).trim().to_owned();
        let port = listen_port.to_string();
        let allowed = format!("{}/32,{}/128", peer[0], peer[1]);
        let mut args = vec![
            "set",
            &interface,
            "private-key",
            key_file.to_str().unwrap_or_default(),
            "listen-port",
            &port,
            "peer",
            peer_key,
            "allowed-ips",
            &allowed,
        ];
        if let Some(endpoint) = peer_endpoint {
            args.extend(["endpoint", endpoint, "persistent-keepalive", "5"]);
        }
        run(ns.command("wg").args(&args))?;
        ns.ip(&["addr", "add", &format!("{}/30", own[0]), "dev", &interface])?;
        ns.ip(&["addr", "add", &format!("{}/126", own[1]), "dev", &interface])?;
        ns.ip(&["link", "set", &interface, "up"])?;
        Ok(WireguardGo {
            process,
            interface,
            public_key,
        })
    }

    /// Replaces the peer `old` with `new`, allowed `allowed_ips`
    /// (comma-separated CIDRs), for when a key is only known later.
    pub fn replace_peer(
        &self,
        ns: &NetNs,
        old: &str,
        new: &str,
        allowed_ips: &str,
    ) -> Result<(), Error> {
        run(ns.command("wg").args([
            "set",
            &self.interface,
            "peer",
            old,
            "remove",
            "peer",
            new,
            "allowed-ips",
            allowed_ips,
        ]))
        .map(drop)
    }

    /// `wg show <if> latest-handshakes`: whether a handshake completed.
    pub fn handshake_done(&self, ns: &NetNs) -> bool {
        run(ns
            .command("wg")
            .args(["show", &self.interface, "latest-handshakes"]))
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|t| t.parse::<u64>().ok())
        })
        .is_some_and(|t| t > 0)
    }
}

/// `ping` from `ns` to `to`: how many of `count` echoes came back.
pub fn ping(ns: &NetNs, to: &str, count: u32, interval: &str) -> u32 {
    let out = ns
        .command("ping")
        .args([
            "-n",
            "-q",
            "-c",
            &count.to_string(),
            "-i",
            interval,
            "-W",
            "1",
            to,
        ])
        .output();
    out.ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .and_then(|s| {
            s.lines()
                .find(|l| l.contains("received"))
                .and_then(|l| l.split(", ").nth(1))
                .and_then(|r| r.split_whitespace().next())
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system) a process has used so far, in seconds.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// A placeholder peer key for a wireguard-go server whose client key is
/// published only after it starts (see [`WireguardGo::replace_peer`]).
pub const PLACEHOLDER_KEY: &str = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
