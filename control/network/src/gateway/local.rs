//! The local-simulation way of running a gateway: `strait-gateway --config`
//! as a supervised child process of the controller (optionally inside a
//! network namespace through `nsenter`), restarted when it dies.
//!
//! Each gateway gets a directory `<state-dir>/<namespace>.<name>/` with
//! [`GatewayFiles`]: the controller writes `config.yaml` and `peer.key`, the
//! gateway writes `public.key` and `status.json`; its output goes to
//! `gateway.log`.
//!
//! With [`NatAgents`], each gateway also gets its NAT agent, `strait-fabric
//! nat run --from-cluster`, in the same network namespace: attached to the
//! gateway's tunnel interface, following the NatConfigurations of the
//! gateway's peering, with its maps pinned under `<pin-root>/<interface>`
//! (removed when the gateway goes away) and its output in `nat.log`. It is
//! restarted when it dies and when the gateway process restarts (a new
//! gateway process makes a new interface, which the agent attaches to).

use std::{
    collections::HashMap,
    fs::OpenOptions,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use tokio::{process::Command, sync::watch, task::JoinHandle};
use tracing::{info, warn};

/// Wait before starting a gateway again after it exited, so a gateway that
/// fails at once does not spin.
const RESTART_DELAY: Duration = Duration::from_millis(300);
/// How long a stopping gateway gets to remove its interface after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// The files of one local gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayFiles {
    pub dir: PathBuf,
    /// `--config`, written by the controller from the CRs.
    pub config: PathBuf,
    /// The peer's public key (from the `PublicKey` CR), re-read by the gateway.
    pub peer_key: PathBuf,
    /// This gateway's public key, written by the gateway.
    pub public_key: PathBuf,
    /// `--status-file`, refreshed by the gateway 4 times a second.
    pub status: PathBuf,
    pub log: PathBuf,
    /// The NAT agent's output.
    pub nat_log: PathBuf,
}

impl GatewayFiles {
    fn new(state_dir: &Path, namespace: &str, name: &str) -> Self {
        let dir = state_dir.join(format!("{namespace}.{name}"));
        Self {
            config: dir.join("config.yaml"),
            peer_key: dir.join("peer.key"),
            public_key: dir.join("public.key"),
            status: dir.join("status.json"),
            log: dir.join("gateway.log"),
            nat_log: dir.join("nat.log"),
            dir,
        }
    }
}

/// What the supervisor knows about a gateway process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessState {
    pub pid: Option<u32>,
    /// When the current (or last) process started.
    pub started: Option<SystemTime>,
    /// Times the process exited without being asked to (restarted since).
    pub crashes: u64,
    /// How the last unrequested exit looked, for a person.
    pub last_exit: Option<String>,
    /// When it happened.
    pub last_exit_time: Option<SystemTime>,
}

impl ProcessState {
    pub fn running(&self) -> bool {
        self.pid.is_some()
    }
}

/// How to run the gateways' NAT agents (local simulation).
#[derive(Debug, Clone)]
pub struct NatAgents {
    /// The `strait-fabric` binary.
    pub binary: PathBuf,
    /// bpffs directory under which each agent pins its maps and links, in
    /// `<pin_root>/<gateway interface>`.
    pub pin_root: PathBuf,
    /// `KUBECONFIG` of the agents (how the API server is reached from the
    /// gateways' network namespace); the controller's own when `None`.
    pub kubeconfig: Option<PathBuf>,
    /// How often an agent looks at its NatConfigurations.
    pub poll_interval: Duration,
}

/// What one gateway's NAT agent follows and where it attaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatAgentSpec {
    /// The gateway's tunnel interface.
    pub interface: String,
    /// Namespace of the peering's NatConfigurations (the gateway's).
    pub namespace: String,
    /// Label selector of the peering's NatConfigurations, if any.
    pub selector: Option<String>,
    /// Name the agent reports under in the NatConfigurations' `status.hosts`.
    pub host: String,
    /// The gateway process the agent was started for: a new one has a new
    /// interface, so the agent restarts with it.
    pub gateway_pid: u32,
}

struct Supervised {
    config: String,
    state: Arc<Mutex<ProcessState>>,
    /// `true` asks the supervisor to stop for good; a new value of the
    /// generation asks it to restart with the new configuration.
    control: watch::Sender<(bool, u64)>,
    task: JoinHandle<()>,
}

/// Runs the gateways of this controller as child processes.
pub struct LocalGateways {
    binary: PathBuf,
    state_dir: PathBuf,
    netns: Option<PathBuf>,
    args: Vec<String>,
    nat: Option<NatAgents>,
    running: Mutex<HashMap<(String, String), Supervised>>,
    nat_running: Mutex<HashMap<(String, String), Supervised>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl LocalGateways {
    /// Gateways run as `binary` with their files under `state_dir`; with
    /// `netns`, inside that network namespace (`nsenter --net=NETNS`).
    pub fn new(binary: PathBuf, state_dir: PathBuf, netns: Option<PathBuf>) -> Self {
        Self {
            binary,
            state_dir,
            netns,
            args: Vec::new(),
            nat: None,
            running: Mutex::new(HashMap::new()),
            nat_running: Mutex::new(HashMap::new()),
        }
    }

    /// Runs a NAT agent next to every gateway.
    pub fn with_nat_agents(mut self, nat: NatAgents) -> Self {
        self.nat = Some(nat);
        self
    }

    /// Whether gateways get a NAT agent.
    pub fn nat_agents(&self) -> Option<&NatAgents> {
        self.nat.as_ref()
    }

    /// Where gateway `interface`'s NAT agent pins its maps.
    pub fn nat_pin_dir(&self, interface: &str) -> Option<PathBuf> {
        self.nat.as_ref().map(|nat| nat.pin_root.join(interface))
    }

    /// Extra arguments for every gateway (for example `--wireguard=userspace`).
    pub fn with_args(mut self, args: Vec<String>) -> Self {
        self.args = args;
        self
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<(String, String), Supervised>> {
        self.running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn lock_nat(&self) -> MutexGuard<'_, HashMap<(String, String), Supervised>> {
        self.nat_running
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn files(&self, namespace: &str, name: &str) -> GatewayFiles {
        GatewayFiles::new(&self.state_dir, namespace, name)
    }

    /// Writes the peer's public key for the gateway to pick up (only when
    /// it changed: the gateway treats a new key as the peer's rotation).
    pub fn write_peer_key(&self, namespace: &str, name: &str, key: &str) -> Result<(), LocalError> {
        let files = self.files(namespace, name);
        let content = format!("{}\n", key.trim());
        if std::fs::read_to_string(&files.peer_key).ok().as_deref() == Some(content.as_str()) {
            return Ok(());
        }
        write_file(&files.dir, &files.peer_key, &content)
    }

    /// Writes the private key from the gateway's Secret where the gateway
    /// reads it (`private.key`, mode 0600, like a mounted Secret), and
    /// returns that path.
    pub fn write_private_key(
        &self,
        namespace: &str,
        name: &str,
        key: &str,
    ) -> Result<PathBuf, LocalError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let files = self.files(namespace, name);
        let path = files.dir.join("private.key");
        let content = format!("{}\n", key.trim());
        if std::fs::read_to_string(&path).ok().as_deref() == Some(content.as_str()) {
            return Ok(path);
        }
        let err = |source| LocalError::Write {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(&files.dir).map_err(err)?;
        let tmp = path.with_extension("tmp");
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(err)?;
        std::io::Write::write_all(&mut file, content.as_bytes()).map_err(err)?;
        std::fs::rename(&tmp, &path).map_err(err)?;
        Ok(path)
    }

    /// Makes sure the gateway runs with `config` (YAML): started if it is not
    /// supervised yet, restarted if its configuration changed.
    pub fn ensure(&self, namespace: &str, name: &str, config: &str) -> Result<(), LocalError> {
        let files = self.files(namespace, name);
        let key = (namespace.to_owned(), name.to_owned());
        let mut running = self.lock();
        if let Some(supervised) = running.get_mut(&key) {
            if supervised.config == config && !supervised.task.is_finished() {
                return Ok(());
            }
            write_file(&files.dir, &files.config, config)?;
            supervised.config = config.to_owned();
            info!(%namespace, %name, "gateway configuration changed: restarting it");
            supervised
                .control
                .send_modify(|(_, generation)| *generation += 1);
            return Ok(());
        }
        write_file(&files.dir, &files.config, config)?;
        let child = self.command(&files);
        running.insert(key, Supervised::start(child, config.to_owned()));
        Ok(())
    }

    /// Makes sure the gateway's NAT agent runs as `spec` says: started if
    /// it is not supervised yet, restarted if `spec` changed. Does nothing
    /// without [`NatAgents`].
    pub async fn ensure_nat(
        &self,
        namespace: &str,
        name: &str,
        spec: &NatAgentSpec,
    ) -> Result<(), LocalError> {
        let Some(nat) = &self.nat else {
            return Ok(());
        };
        let files = self.files(namespace, name);
        let child = self.nat_command(nat, &files, spec);
        // The whole command line (with the gateway's pid) is the agent's
        // configuration: any change restarts it.
        let config = format!("{:?} gateway pid {}", child.args, spec.gateway_pid);
        let key = (namespace.to_owned(), name.to_owned());
        let previous = {
            let mut running = self.lock_nat();
            match running.get(&key) {
                Some(s) if s.config == config && !s.task.is_finished() => return Ok(()),
                _ => running.remove(&key),
            }
        };
        // The old agent is gone before the new one opens the same pins.
        if let Some(previous) = previous {
            info!(%namespace, %name, "NAT agent configuration changed: restarting it");
            previous.stop(namespace, name, "NAT agent").await;
        }
        std::fs::create_dir_all(&files.dir).map_err(|source| LocalError::Write {
            path: files.dir.clone(),
            source,
        })?;
        self.lock_nat()
            .insert(key, Supervised::start(child, config));
        Ok(())
    }

    /// The supervisor's view of the gateway's NAT agent, if it is supervised.
    pub fn nat_state(&self, namespace: &str, name: &str) -> Option<ProcessState> {
        self.lock_nat()
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|s| lock(&s.state).clone())
    }

    /// The supervisor's view of the gateway, if it is supervised.
    pub fn state(&self, namespace: &str, name: &str) -> Option<ProcessState> {
        self.lock()
            .get(&(namespace.to_owned(), name.to_owned()))
            .map(|s| lock(&s.state).clone())
    }

    /// Stops the gateway's NAT agent and the gateway (SIGTERM, so it
    /// removes its interface), and removes their files: the agent's pins
    /// under `<pin-root>/<interface>` and the gateway's directory.
    pub async fn stop(
        &self,
        namespace: &str,
        name: &str,
        interface: &str,
    ) -> Result<(), LocalError> {
        let key = (namespace.to_owned(), name.to_owned());
        let nat = self.lock_nat().remove(&key);
        if let Some(nat) = nat {
            nat.stop(namespace, name, "NAT agent").await;
        }
        let gateway = self.lock().remove(&key);
        if let Some(gateway) = gateway {
            gateway.stop(namespace, name, "gateway").await;
        }
        if let Some(pins) = self.nat_pin_dir(interface) {
            remove_dir(&pins)?;
        }
        remove_dir(&self.files(namespace, name).dir)
    }

    fn command(&self, files: &GatewayFiles) -> Child {
        let mut args = vec![
            "--config".to_owned(),
            files.config.display().to_string(),
            "--status-file".to_owned(),
            files.status.display().to_string(),
        ];
        args.extend(self.args.iter().cloned());
        let (program, args) = self.in_netns(&self.binary, args);
        Child {
            what: "gateway",
            program,
            args,
            env: Vec::new(),
            log: files.log.clone(),
            // A fresh process starts without the old one's status, so the
            // gap between the two shows instead of a stale "Connected".
            clear_on_start: Some(files.status.clone()),
        }
    }

    fn nat_command(&self, nat: &NatAgents, files: &GatewayFiles, spec: &NatAgentSpec) -> Child {
        let pins = nat.pin_root.join(&spec.interface);
        let mut args = vec![
            format!("--pin-dir={}", pins.display()),
            "nat".to_owned(),
            "run".to_owned(),
            "--from-cluster".to_owned(),
            format!("--namespace={}", spec.namespace),
            format!("--host={}", spec.host),
            format!("--iface={}", spec.interface),
            format!("--poll-interval={}ms", nat.poll_interval.as_millis()),
        ];
        if let Some(selector) = &spec.selector {
            args.push(format!("--selector={selector}"));
        }
        let (program, args) = self.in_netns(&nat.binary, args);
        Child {
            what: "NAT agent",
            program,
            args,
            env: nat
                .kubeconfig
                .iter()
                .map(|k| ("KUBECONFIG".to_owned(), k.display().to_string()))
                .collect(),
            log: files.nat_log.clone(),
            clear_on_start: None,
        }
    }

    /// `binary args`, inside the gateways' network namespace if they have one.
    fn in_netns(&self, binary: &Path, args: Vec<String>) -> (PathBuf, Vec<String>) {
        match &self.netns {
            Some(netns) => {
                let mut wrapped = vec![
                    format!("--net={}", netns.display()),
                    "--".to_owned(),
                    binary.display().to_string(),
                ];
                wrapped.extend(args);
                (PathBuf::from("nsenter"), wrapped)
            }
            None => (binary.to_owned(), args),
        }
    }
}

/// A process to supervise.
struct Child {
    /// For logs and messages.
    what: &'static str,
    program: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    /// A file the previous process wrote that must not outlive it.
    clear_on_start: Option<PathBuf>,
}

impl Supervised {
    fn start(child: Child, config: String) -> Self {
        let state = Arc::new(Mutex::new(ProcessState::default()));
        let (control, watch) = watch::channel((false, 0));
        let task = tokio::spawn(supervise(child, state.clone(), watch));
        Supervised {
            config,
            state,
            control,
            task,
        }
    }

    /// Stops the process and waits for it to be gone.
    async fn stop(self, namespace: &str, name: &str, what: &str) {
        self.control.send_modify(|(stop, _)| *stop = true);
        if let Err(error) = self.task.await {
            warn!(%namespace, %name, %error, "{what} supervisor ended abnormally");
        }
    }
}

fn remove_dir(dir: &Path) -> Result<(), LocalError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LocalError::Write {
            path: dir.to_owned(),
            source,
        }),
    }
}

fn write_file(dir: &Path, path: &Path, content: &str) -> Result<(), LocalError> {
    let err = |source| LocalError::Write {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, content).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

fn lock(state: &Mutex<ProcessState>) -> MutexGuard<'_, ProcessState> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs the process until asked to stop, starting it again whenever it
/// exits on its own or its configuration changes.
async fn supervise(
    child: Child,
    state: Arc<Mutex<ProcessState>>,
    mut control: watch::Receiver<(bool, u64)>,
) {
    let Child {
        what,
        program,
        args,
        env,
        log,
        clear_on_start,
    } = child;
    loop {
        if let Some(file) = &clear_on_start {
            let _ = std::fs::remove_file(file);
        }
        let log = OpenOptions::new().create(true).append(true).open(&log);
        let (stdout, stderr) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((out, err)) => (Stdio::from(out), Stdio::from(err)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let mut command = Command::new(&program);
        command
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .kill_on_drop(true);
        // SAFETY: prctl(2) is async-signal-safe and touches only the child
        // between fork and exec. PR_SET_PDEATHSIG survives exec (nsenter
        // execs the gateway), so a controller killed without cleanup does not
        // leave a gateway holding the port and interface for its successor.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let spawned = command.spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(error) => {
                {
                    let mut s = lock(&state);
                    s.pid = None;
                    s.crashes += 1;
                    s.last_exit = Some(format!("could not start {}: {error}", program.display()));
                    s.last_exit_time = Some(SystemTime::now());
                }
                if wait_or_stop(&mut control, RESTART_DELAY * 10).await {
                    return;
                }
                continue;
            }
        };
        {
            let mut s = lock(&state);
            s.pid = child.id();
            s.started = Some(SystemTime::now());
        }
        info!(program = %program.display(), pid = ?child.id(), "{what} process started");
        tokio::select! {
            exit = child.wait() => {
                let exit_text = match exit {
                    Ok(status) => format!("exited with {status}"),
                    Err(error) => format!("could not be waited for: {error}"),
                };
                warn!(program = %program.display(), exit = %exit_text, "{what} process ended; restarting");
                {
                    let mut s = lock(&state);
                    s.pid = None;
                    s.crashes += 1;
                    s.last_exit = Some(exit_text);
                    s.last_exit_time = Some(SystemTime::now());
                }
                if wait_or_stop(&mut control, RESTART_DELAY).await {
                    return;
                }
            }
            _ = control.changed() => {
                terminate(&mut child).await;
                lock(&state).pid = None;
                if control.borrow().0 {
                    return;
                }
            }
        }
    }
}

/// Sleeps `delay`; true when asked to stop meanwhile.
async fn wait_or_stop(control: &mut watch::Receiver<(bool, u64)>, delay: Duration) -> bool {
    let _ = tokio::time::timeout(delay, control.changed()).await;
    control.borrow().0
}

/// SIGTERM, then SIGKILL after [`STOP_GRACE`].
async fn terminate(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        // SAFETY: kill(2) with a pid of our own child process, which has not
        // been reaped yet (we still hold it), so the pid cannot be reused.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(STOP_GRACE, child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}
