//! Running a gateway from a plan: pick the datapath, publish the public key,
//! follow the peer's key, probe, and report status until told to stop.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime},
};

use crate::{
    backend::{self, Backend, KernelProbe, UserspaceDatapath, WireguardMode},
    config::PeerKeySource,
    defguard::{interface_configuration, DefguardDevice, FirstHandshakeDriver},
    fast::FastDevice,
    metrics, mtu, probe,
    status::{assess, ProbeState},
    Error, GatewayStatus, PeerStats, Plan, PrivateKey, PublicKey, Role,
};

/// Options beyond the configuration file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub wireguard: WireguardMode,
    pub datapath: UserspaceDatapath,
    pub status_file: Option<PathBuf>,
    pub metrics_address: Option<SocketAddr>,
    pub probe_interval: Duration,
    /// How long a rotated public key is published before it is used, so
    /// the peer can prepare a session for it.
    pub rotation_notice: Duration,
}

enum Datapath {
    Defguard(DefguardDevice),
    Fast(FastDevice),
}

impl Datapath {
    fn stats(&self, peer_key: &PublicKey) -> PeerStats {
        match self {
            Datapath::Defguard(d) => d.stats(peer_key),
            Datapath::Fast(f) => f.stats(),
        }
    }

    /// Sets the tunnel's MTU; returns the one applied.
    fn set_mtu(&self, interface: &str, mtu: u32) -> Result<u32, Error> {
        match self {
            Datapath::Fast(f) => f.set_mtu(mtu),
            Datapath::Defguard(_) => mtu::set_interface_mtu(interface, mtu)
                .map(|()| mtu)
                .map_err(Error::io(format!("setting the tunnel MTU to {mtu}"))),
        }
    }
}

/// Signals the run loop reacts to.
pub struct Controls {
    pub stop: Arc<AtomicBool>,
    /// Set to rotate our own key (SIGHUP).
    pub rotate: Arc<AtomicBool>,
}

pub fn run(plan: &Plan, options: &RunOptions, controls: &Controls) -> Result<(), Error> {
    let kernel_available = KernelProbe::system().wireguard_available();
    let backend = backend::choose(options.wireguard, options.datapath, kernel_available)?;
    tracing::info!(
        backend = backend.name(),
        kernel_available,
        role = plan.role.name(),
        "starting the gateway"
    );
    // Before anything is created: a route over the cluster's own ranges
    // would cut the gateway off from them.
    crate::routes::refuse_local_overlaps(&plan.interface, &plan.routes)?;
    let (mut key, key_from_secret) = match &plan.private_key_file {
        Some(path) => (PrivateKey::from_file(path)?, true),
        None => (PrivateKey::generate(), false),
    };
    let mut public = key.public_key();
    if let Some(path) = &plan.public_key_file {
        public.publish(path)?;
    }
    tracing::info!(public_key = %public, "gateway key");
    let Some(mut peer_key) = wait_for_peer_key(plan, &controls.stop)? else {
        return Ok(());
    };
    let (mtu, fitted_to) = tunnel_mtu(plan);
    tracing::info!(mtu, spec_mtu = plan.mtu, fitted_to = ?fitted_to, "tunnel MTU");
    let datapath = match backend {
        Backend::Fast => Datapath::Fast(FastDevice::start(plan, mtu, key.clone(), peer_key)?),
        Backend::Kernel | Backend::Embedded => {
            let config =
                interface_configuration(plan, mtu, &key, &peer_key, plan.initial_endpoint());
            Datapath::Defguard(DefguardDevice::create(
                backend == Backend::Kernel,
                plan,
                &config,
                &peer_key,
            )?)
        }
    };
    // The fast datapath runs the first-handshake schedule itself; the
    // others are driven on it from here.
    let mut first_handshake = match &datapath {
        Datapath::Defguard(_) => Some(FirstHandshakeDriver::new(plan, &peer_key, Instant::now())),
        Datapath::Fast(_) => None,
    };
    let probe_state = Arc::new(Mutex::new(ProbeState::default()));
    let probing = plan.peer_addresses.first().copied();
    let mut helpers = Vec::new();
    if let Some(target) = probing {
        let prober = probe::Prober::new(target, plan.mtu)?;
        let (state, stop, interval, full_size) = (
            probe_state.clone(),
            controls.stop.clone(),
            options.probe_interval,
            Some(plan.mtu),
        );
        helpers.push(std::thread::spawn(move || {
            probe::run(prober, interval, full_size, state, &stop)
        }));
    }
    let shared_status: Arc<Mutex<Option<GatewayStatus>>> = Arc::new(Mutex::new(None));
    if let Some(address) = options.metrics_address {
        let listener = std::net::TcpListener::bind(address)
            .map_err(Error::io(format!("binding the metrics address {address}")))?;
        tracing::info!(%address, "serving /metrics, /status and /healthz");
        let (status, stop) = (shared_status.clone(), controls.stop.clone());
        helpers.push(std::thread::spawn(move || {
            serve_metrics(&listener, &status, &stop)
        }));
    }

    let mut mtu = mtu;
    let mut fitted_to = fitted_to;
    let mut last_path_check = Instant::now();
    let mut unresponsive = 0;
    let mut pending_rotation: Option<(PrivateKey, Instant)> = None;
    let mut last_peer_key_check = Instant::now();
    let result = loop {
        if controls.stop.load(Ordering::Relaxed) {
            break Ok(());
        }
        if let Datapath::Defguard(d) = &datapath {
            unresponsive = if d.responsive(&plan.interface) {
                0
            } else {
                unresponsive + 1
            };
            if unresponsive >= 2 {
                tracing::warn!(
                    "the embedded WireGuard device stopped answering (it stops by itself on \
                     SIGTERM/SIGINT); shutting down"
                );
                break Ok(());
            }
            if unresponsive > 0 {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        }
        // Our own key: publish the next one, use it after the notice.
        if controls.rotate.swap(false, Ordering::Relaxed) {
            if key_from_secret {
                tracing::warn!(
                    "not rotating: the private key comes from a Secret; rotate the Secret instead"
                );
            } else {
                let next = PrivateKey::generate();
                if let Some(path) = &plan.public_key_file {
                    if let Err(e) = next.public_key().publish(path) {
                        tracing::error!(error = %e, "publishing the rotated public key");
                    }
                }
                tracing::info!(public_key = %next.public_key(), "rotating: new key published");
                pending_rotation = Some((next, Instant::now() + options.rotation_notice));
            }
        }
        if let Some((next, at)) = pending_rotation.take() {
            if Instant::now() >= at {
                if let Err(e) = switch_own_key(&datapath, plan, mtu, &next, &peer_key) {
                    tracing::error!(error = %e, "switching to the rotated key");
                }
                key = next;
                public = key.public_key();
                tracing::info!(public_key = %public, "rotated key in use");
            } else {
                pending_rotation = Some((next, at));
            }
        }
        // The peer's key, when it comes from a file that may change.
        if let PeerKeySource::File(path) = &plan.peer_key {
            if last_peer_key_check.elapsed() >= Duration::from_millis(500) {
                last_peer_key_check = Instant::now();
                match PublicKey::from_file(path) {
                    Ok(new) if new != peer_key => {
                        tracing::info!(peer_key = %new, "the peer's key changed");
                        peer_key = new;
                        switch_peer_key(&datapath, plan, mtu, &key, &peer_key);
                        if first_handshake.is_some() {
                            first_handshake =
                                Some(FirstHandshakeDriver::new(plan, &peer_key, Instant::now()));
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "reading the peer's public key"),
                }
            }
        }
        let stats = datapath.stats(&peer_key);
        if let (Datapath::Defguard(device), Some(driver)) = (&datapath, first_handshake.as_mut()) {
            match driver.tick(device, stats.last_handshake.is_some(), Instant::now()) {
                Ok(true) => tracing::debug!("first handshake started over"),
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "starting the first handshake over"),
            }
        }
        // Path MTU: what the kernel learnt toward the peer (ICMP "too big"
        // answers included) lowers the tunnel MTU, so senders behind the
        // tunnel get told instead of their packets being fragmented or lost.
        // A new endpoint (a server's first handshake, a roaming peer) is
        // fitted at once, with its own family's overhead.
        if let Some(endpoint) = stats.endpoint {
            if fitted_to != Some(endpoint) || last_path_check.elapsed() >= Duration::from_secs(2) {
                last_path_check = Instant::now();
                let wanted = mtu::tunnel_mtu(plan.mtu, mtu::path_mtu_to(endpoint), endpoint.ip());
                let applied = if wanted == mtu {
                    Ok(mtu)
                } else {
                    datapath.set_mtu(&plan.interface, wanted)
                };
                match applied {
                    Ok(applied) => {
                        if applied != mtu {
                            tracing::info!(from = mtu, to = applied, %endpoint, "tunnel MTU fitted to the path");
                            mtu = applied;
                        }
                        fitted_to = Some(endpoint);
                    }
                    Err(e) => tracing::warn!(error = %e, "following the path MTU"),
                }
            }
        }
        let probe = probe_state.lock().map(|p| p.clone()).unwrap_or_default();
        let status = GatewayStatus {
            role: plan.role.name().to_owned(),
            backend: backend.name().to_owned(),
            interface: plan.interface.clone(),
            public_key: public.to_string(),
            mtu,
            underlay: fitted_to.map(|e| mtu::underlay(e).to_owned()),
            peer_mtu: probe.peer_mtu,
            peer_endpoint: stats.endpoint.map(|e| e.to_string()),
            tx_bytes: stats.tx_bytes,
            rx_bytes: stats.rx_bytes,
            probes_sent: probe.sent,
            probes_answered: probe.answered,
            probes_failing: probe.consecutive_failures,
            full_size_probes: probe.full_size.clone(),
            drops: match &datapath {
                Datapath::Fast(f) => f.drops(),
                Datapath::Defguard(_) => Default::default(),
            },
            connection: assess(&stats, &probe, probing.is_some(), SystemTime::now()),
        };
        if let Some(path) = &options.status_file {
            if let Err(e) = status.write(path) {
                tracing::warn!(error = %e, "writing the status file");
            }
        }
        if let Ok(mut s) = shared_status.lock() {
            *s = Some(status);
        }
        // Sooner when the first-handshake schedule is due before the next round.
        let round = Duration::from_millis(250);
        let pause = first_handshake
            .as_ref()
            .and_then(FirstHandshakeDriver::next_due)
            .map_or(round, |due| due.saturating_duration_since(Instant::now()))
            .clamp(Duration::from_millis(10), round);
        std::thread::sleep(pause);
    };
    controls.stop.store(true, Ordering::Relaxed);
    match datapath {
        Datapath::Fast(f) => drop(f),
        Datapath::Defguard(d) => d.remove(),
    }
    for h in helpers {
        let _ = h.join();
    }
    result
}

/// How often a gateway waiting for its peer's key file looks for it.
const PEER_KEY_POLL: Duration = Duration::from_millis(50);

/// An inline key is there at once; a key file may be written by the peer
/// (or its controller) after we start, so wait for it.
fn wait_for_peer_key(plan: &Plan, stop: &AtomicBool) -> Result<Option<PublicKey>, Error> {
    let mut warned = false;
    loop {
        match plan.peer_key.load() {
            Ok(key) => return Ok(Some(key)),
            Err(Error::Read { path, source }) if source.kind() == std::io::ErrorKind::NotFound => {
                if !warned {
                    tracing::info!(path = %path.display(), "waiting for the peer's public key");
                    warned = true;
                }
            }
            Err(e) => return Err(e),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // The peer's client dials as soon as it has our key, usually within
        // the same moment we get its key: notice ours quickly so its first
        // initiations find us listening.
        std::thread::sleep(PEER_KEY_POLL);
    }
}

/// The tunnel MTU to start with, and the peer endpoint it was fitted to.
fn tunnel_mtu(plan: &Plan) -> (u32, Option<SocketAddr>) {
    match (&plan.role, plan.initial_endpoint()) {
        (Role::Client { .. }, Some(first)) => (
            mtu::tunnel_mtu(plan.mtu, mtu::path_mtu_to(first), first.ip()),
            Some(first),
        ),
        // The client may come over either family: no verdict before it does.
        _ => (
            mtu::before_endpoint(plan.mtu, mtu::smallest_interface_mtu(&plan.interface)),
            None,
        ),
    }
}

fn switch_own_key(
    datapath: &Datapath,
    plan: &Plan,
    mtu: u32,
    key: &PrivateKey,
    peer_key: &PublicKey,
) -> Result<(), Error> {
    match datapath {
        Datapath::Fast(f) => {
            f.set_own_key(key.clone());
            Ok(())
        }
        Datapath::Defguard(d) => {
            let endpoint = d.stats(peer_key).endpoint.or(plan.initial_endpoint());
            d.reconfigure(
                &plan.interface,
                &interface_configuration(plan, mtu, key, peer_key, endpoint),
            )
        }
    }
}

fn switch_peer_key(
    datapath: &Datapath,
    plan: &Plan,
    mtu: u32,
    key: &PrivateKey,
    peer_key: &PublicKey,
) {
    match datapath {
        Datapath::Fast(f) => f.set_peer_key(*peer_key),
        Datapath::Defguard(d) => {
            let config = interface_configuration(plan, mtu, key, peer_key, plan.initial_endpoint());
            if let Err(e) = d.reconfigure(&plan.interface, &config) {
                tracing::error!(error = %e, "applying the peer's new key");
            }
        }
    }
}

fn serve_metrics(
    listener: &std::net::TcpListener,
    status: &Mutex<Option<GatewayStatus>>,
    stop: &AtomicBool,
) {
    use std::io::{BufRead as _, BufReader, Write as _};
    if listener.set_nonblocking(true).is_err() {
        return;
    }
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        const TEXT: &str = "text/plain; version=0.0.4";
        let current = || status.lock().ok().and_then(|s| s.clone());
        let starting = ("503 Service Unavailable", TEXT, "starting\n".to_owned());
        let (code, content_type, body) = if line.starts_with("GET /metrics ") {
            current().map_or(starting, |s| ("200 OK", TEXT, metrics::render(&s)))
        } else if line.starts_with("GET /status ") {
            // The status file's JSON, for a controller that cannot read the
            // pod's files (a gateway in a cluster).
            match current().map(|s| serde_json::to_string(&s)) {
                Some(Ok(json)) => ("200 OK", "application/json", json),
                Some(Err(e)) => ("500 Internal Server Error", TEXT, format!("{e}\n")),
                None => starting,
            }
        } else if line.starts_with("GET /healthz ") {
            ("200 OK", TEXT, "ok\n".to_owned())
        } else {
            (
                "404 Not Found",
                TEXT,
                "try /metrics, /status or /healthz\n".to_owned(),
            )
        };
        let mut stream = &stream;
        let _ = write!(
            stream,
            "HTTP/1.1 {code}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}
