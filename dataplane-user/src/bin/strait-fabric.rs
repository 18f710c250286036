//! strait-fabric: the node agent of Strait's eBPF dataplane.
use std::{ffi::CString, path::PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use strait_api::networking::{NatConfiguration, NatConfigurationSpec};
use strait_common::{fabric::LocalEndpoints, Direction};
use strait_dataplane::{
    bpffs::PinDir,
    cluster::{ClusterFabric, Follow},
    counter::{ip_proto_name, CounterSnapshot},
    fabric::{self, FabricConfig, FabricStats},
    forward::{ForwardCounts, ForwardOutcome, NatForward},
    nat::{
        follow::{self, Follower},
        parse_config, NatPlan, NatTables,
    },
    programs::{Dataplane, TcProgram},
    tc::{self, AttachMode},
    DEFAULT_PIN_DIR,
};
use tracing_subscriber::EnvFilter;

/// Strait's node agent: loads and attaches the eBPF TC programs and reads
/// their pinned maps. Programs and maps stay in the kernel after it exits.
#[derive(Parser, Debug)]
#[command(name = "strait-fabric", version, about, long_about = None)]
struct Cli {
    /// bpffs directory where maps and links are pinned.
    #[arg(long, global = true, env = "STRAIT_PIN_DIR", default_value = DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Attach the traffic counters to interfaces (replacing ours atomically if present).
    Attach {
        /// Interface to attach to (repeatable).
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        #[arg(long, value_enum, default_value_t = Directions::Both)]
        direction: Directions,
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        attach_mode: AttachMode,
    },
    /// Detach the traffic counters from interfaces.
    Detach {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        #[arg(long, value_enum, default_value_t = Directions::Both)]
        direction: Directions,
    },
    /// Load the Geneve fabric: attach decapsulation to the underlay and
    /// encapsulation to the listed interfaces, and reconcile the pinned route
    /// maps with the config. Safe to re-run: programs are swapped in place and
    /// routes updated entry by entry, so traffic keeps flowing.
    Apply {
        /// YAML fabric config (underlay, encapInterfaces, localEndpoints, routes, internalNodes).
        #[arg(long)]
        config: PathBuf,
    },
    /// Run as the node agent: apply the fabric config, re-apply it whenever
    /// the file changes (a bad edit is logged and the last good state kept),
    /// and serve Prometheus metrics, until SIGTERM or SIGINT. Programs and
    /// maps stay in place when it stops.
    Run {
        /// YAML fabric config, as for `apply`.
        #[arg(long)]
        config: PathBuf,
        /// Address for GET /metrics and /healthz (none when omitted).
        #[arg(long)]
        metrics_address: Option<std::net::SocketAddr>,
        /// How often to check the config file (and with --from-cluster the
        /// CRs) for changes.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        poll_interval: std::time::Duration,
        /// Also follow the cluster (kubeconfig or in-cluster): every
        /// RouteConfiguration's routes (a node) and/or every InternalNode (a
        /// gateway) are added to the file's; a deleted CR's entries leave
        /// the pinned maps.
        #[arg(long, value_enum, value_name = "KINDS")]
        from_cluster: Option<Follow>,
    },
    /// Print the pinned traffic counters.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Stateless 1:1 prefix translation (NAT) on a gateway's peer interface.
    Nat {
        #[command(subcommand)]
        command: NatCommand,
    },
}

#[derive(Subcommand, Debug)]
enum NatCommand {
    /// Validate a NatConfiguration (a whole object, admitted like the API
    /// server would, or a bare spec; YAML) and swap it into the NAT tables
    /// atomically.
    Apply {
        #[arg(long)]
        config: PathBuf,
    },
    /// Attach the NAT programs to the interfaces facing the peer, on ingress
    /// and egress: every mapping translates both ways.
    Attach {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        attach_mode: AttachMode,
        /// How translated packets from the peer go on: `fast` routes the
        /// plainly forwardable ones in eBPF (route lookup, TTL, redirect to
        /// the egress device), leaving the rest (TTL expiring, too big, local
        /// delivery, unresolved neighbours) to the kernel; `stack` hands all
        /// of them to the kernel, so netfilter's forward hooks see them.
        #[arg(long, value_enum, default_value_t = ForwardMode::Fast)]
        forward: ForwardMode,
    },
    /// Print what the forwarding fast path did, per outcome.
    Stats,
    /// Detach the NAT programs from interfaces.
    Detach {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
    },
    /// Print the active NAT table.
    Show,
    /// Run as the gateway's NAT agent: merge the `--config` file and, with
    /// `--from-cluster`, every selected NatConfiguration CR into one table,
    /// apply it atomically whenever one of them changes (a deleted CR's
    /// entries leave the tables; a CR that is refused keeps its last applied
    /// spec), and report each CR's outcome for this host in its
    /// `status.hosts`, until SIGTERM or SIGINT. Tables and programs stay in
    /// place when it stops.
    Run {
        /// Static mappings (a NatConfiguration object or a bare spec),
        /// re-read when the file changes.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Follow NatConfiguration CRs (kubeconfig or in-cluster config).
        #[arg(long)]
        from_cluster: bool,
        /// Only CRs of this namespace (all namespaces when omitted).
        #[arg(long, requires = "from_cluster")]
        namespace: Option<String>,
        /// Only CRs matching this label selector, e.g.
        /// strait.dev/remote-cluster-id=cluster-b (empty: all).
        #[arg(long, short = 'l', requires = "from_cluster")]
        selector: Option<String>,
        /// Name of this gateway in the CRs' status (default: $NODE_NAME,
        /// else the host name).
        #[arg(long, env = "NODE_NAME")]
        host: Option<String>,
        /// Attach the NAT programs to these interfaces once a table is
        /// applied; an interface that does not exist yet is waited for, and
        /// one that is made again (a restarted gateway) is attached again.
        #[arg(long = "iface")]
        ifaces: Vec<String>,
        /// How often to check the file and the CRs for changes.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        poll_interval: std::time::Duration,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ForwardMode {
    Fast,
    Stack,
}

impl From<ForwardMode> for NatForward {
    fn from(mode: ForwardMode) -> Self {
        match mode {
            ForwardMode::Fast => NatForward::Fast,
            ForwardMode::Stack => NatForward::Stack,
        }
    }
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Directions {
    Ingress,
    Egress,
    Both,
}

impl Directions {
    fn list(self) -> &'static [Direction] {
        match self {
            Directions::Ingress => &[Direction::Ingress],
            Directions::Egress => &[Direction::Egress],
            Directions::Both => &Direction::ALL,
        }
    }
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Attach {
            ifaces,
            direction,
            attach_mode,
        } => {
            // Refuse before pinning anything, so a typo leaves no state behind.
            for iface in &ifaces {
                tc::check_iface(iface)?;
            }
            let pin_dir = PinDir::create(&cli.pin_dir)?;
            let mut dp = Dataplane::load(pin_dir).context("loading the dataplane")?;
            for iface in &ifaces {
                for &dir in direction.list() {
                    let done = tc::attach(&mut dp, TcProgram::Count(dir), iface, attach_mode)?;
                    println!(
                        "attached counter to {} {} ({}{})",
                        done.iface,
                        done.direction,
                        done.mode.as_str(),
                        if done.replaced {
                            ", replaced the previous program"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
        Command::Apply { config } => print!("{}", apply_fabric(&cli.pin_dir, &config)?),
        Command::Run {
            config,
            metrics_address,
            poll_interval,
            from_cluster,
        } => {
            let cluster = from_cluster.map(ClusterSource::connect).transpose()?;
            run_agent(
                &cli.pin_dir,
                &config,
                metrics_address,
                poll_interval,
                cluster,
            )?
        }
        Command::Detach { ifaces, direction } => {
            let pin_dir = PinDir::open(&cli.pin_dir)?;
            for iface in &ifaces {
                for &dir in direction.list() {
                    let mode = tc::detach(&pin_dir, TcProgram::Count(dir), iface)?;
                    println!(
                        "detached counter from {iface} {} ({})",
                        dir.as_str(),
                        mode.as_str()
                    );
                }
            }
        }
        Command::Stats { json } => {
            let pin_dir = PinDir::open(&cli.pin_dir)?;
            let snapshot = CounterSnapshot::read_pinned(&pin_dir)
                .with_context(|| format!("reading counters pinned in {}", cli.pin_dir.display()))?;
            let fabric = FabricStats::read_pinned(&pin_dir).ok();
            if json {
                let out = serde_json::json!({ "counters": snapshot, "fabric": fabric });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                print_table(&snapshot);
                if let Some(fabric) = fabric {
                    print_fabric(&fabric);
                }
            }
        }
        Command::Nat { command } => run_nat(&cli.pin_dir, command)?,
    }
    Ok(())
}

fn run_nat(pin_dir: &std::path::Path, command: NatCommand) -> Result<()> {
    match command {
        NatCommand::Apply { config } => {
            let yaml = std::fs::read_to_string(&config)
                .with_context(|| format!("reading {}", config.display()))?;
            let spec = parse_config(&yaml).with_context(|| format!("in {}", config.display()))?;
            let plan =
                NatPlan::from_spec(&spec).with_context(|| format!("in {}", config.display()))?;
            let pins = PinDir::create(pin_dir)?;
            // Loading creates (or reuses) the pinned maps the tables live in.
            let dp = Dataplane::load(pins).context("loading the dataplane")?;
            let applied = NatTables::open_pinned(dp.pin_dir())?.apply(&plan)?;
            println!(
                "applied {} NAT entries as generation {} in {:?}",
                applied.entries, applied.generation, applied.elapsed
            );
        }
        NatCommand::Attach {
            ifaces,
            attach_mode,
            forward,
        } => {
            for iface in &ifaces {
                tc::check_iface(iface)?;
            }
            let mut dp = Dataplane::load_with_nat_forward(PinDir::create(pin_dir)?, forward.into())
                .context("loading the dataplane")?;
            for iface in &ifaces {
                // Ethernet or L3-only programs, by the interface's link type.
                for program in tc::nat_programs(iface)? {
                    let done = tc::attach(&mut dp, program, iface, attach_mode)?;
                    println!(
                        "attached {} to {} {} ({})",
                        program.name(),
                        done.iface,
                        done.direction,
                        done.mode.as_str()
                    );
                }
            }
        }
        NatCommand::Detach { ifaces } => {
            let pins = PinDir::open(pin_dir)?;
            for iface in &ifaces {
                for direction in Direction::ALL {
                    // Whichever variant is there: the interface may have
                    // been recreated with another link type since.
                    let mode = match tc::detach(&pins, TcProgram::Nat(direction), iface) {
                        Err(strait_dataplane::Error::NotAttached { .. }) => {
                            tc::detach(&pins, TcProgram::NatL3(direction), iface)?
                        }
                        other => other?,
                    };
                    println!(
                        "detached {} NAT from {iface} ({})",
                        direction.as_str(),
                        mode.as_str()
                    );
                }
            }
        }
        NatCommand::Run {
            config,
            from_cluster,
            namespace,
            selector,
            host,
            ifaces,
            poll_interval,
        } => run_nat_agent(
            pin_dir,
            NatAgent {
                config,
                from_cluster,
                namespace,
                selector,
                host,
                ifaces,
                poll_interval,
            },
        )?,
        NatCommand::Stats => {
            let counts = ForwardCounts::read_pinned(&PinDir::open(pin_dir)?)?;
            for outcome in ForwardOutcome::ALL {
                println!("{} {}", outcome.as_str(), counts.get(outcome));
            }
        }
        NatCommand::Show => {
            let tables = NatTables::open_pinned(&PinDir::open(pin_dir)?)?;
            let generation = tables.active_generation()?;
            let entries = tables.active_entries()?;
            println!("generation {generation}, {} ranges", entries.len());
            for t in entries {
                println!("{t}");
            }
        }
    }
    Ok(())
}

/// What `nat run` follows.
struct NatAgent {
    config: Option<PathBuf>,
    from_cluster: bool,
    namespace: Option<String>,
    selector: Option<String>,
    host: Option<String>,
    ifaces: Vec<String>,
    poll_interval: std::time::Duration,
}

/// The NatConfiguration CRs `nat run --from-cluster` follows.
struct NatCrs {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    api: kube::Api<NatConfiguration>,
    params: kube::api::ListParams,
}

impl NatCrs {
    fn connect(namespace: Option<&str>, selector: Option<&str>) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Kubernetes client's runtime")?;
        let client = runtime
            .block_on(kube::Client::try_default())
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster config)")?;
        let api = match namespace {
            Some(ns) => kube::Api::namespaced(client.clone(), ns),
            None => kube::Api::all(client.clone()),
        };
        let mut params = kube::api::ListParams::default();
        if let Some(selector) = selector.filter(|s| !s.is_empty()) {
            params = params.labels(selector);
        }
        Ok(Self {
            runtime,
            client,
            api,
            params,
        })
    }

    fn list(&self) -> Result<Vec<NatConfiguration>> {
        Ok(self
            .runtime
            .block_on(self.api.list(&self.params))
            .context("listing NatConfigurations")?
            .items)
    }
}

fn host_name(flag: Option<String>) -> Result<String> {
    if let Some(host) = flag.filter(|h| !h.is_empty()) {
        return Ok(host);
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading the host name (or give --host)")?;
    Ok(name.trim().to_owned())
}

fn read_nat_file(path: &std::path::Path) -> Result<NatConfigurationSpec> {
    let yaml =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_config(&yaml).with_context(|| format!("in {}", path.display()))
}

/// The loop of `nat run`: every poll, the file and the CRs are read and
/// merged; the tables are swapped when the merge changed, and a CR's
/// status entry is written when its outcome for this host changed.
fn run_nat_agent(pin_dir: &std::path::Path, agent: NatAgent) -> Result<()> {
    use std::{
        collections::BTreeMap,
        sync::{atomic::AtomicBool, Arc},
    };
    if agent.config.is_none() && !agent.from_cluster {
        bail!("nothing to follow: give --config FILE, --from-cluster, or both");
    }
    let host = host_name(agent.host)?;
    let crs = agent
        .from_cluster
        .then(|| NatCrs::connect(agent.namespace.as_deref(), agent.selector.as_deref()))
        .transpose()?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let mut dp = Dataplane::load(PinDir::create(pin_dir)?).context("loading the dataplane")?;
    let mut tables = NatTables::open_pinned(dp.pin_dir())?;
    let mut follower = Follower::default();
    let mut applied: Option<NatPlan> = None;
    // The interface index each interface's programs are attached to: the
    // interface may appear after the agent starts (a gateway container
    // starting next to it) or be made again (a restarted gateway).
    let mut attached: BTreeMap<String, u32> = BTreeMap::new();
    // What each CR's status last said for this host.
    let mut reported: BTreeMap<(String, String), (i64, Option<String>)> = BTreeMap::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let file = match agent.config.as_deref().map(read_nat_file).transpose() {
            Ok(file) => file,
            Err(e) => {
                tracing::error!(
                    error = format!("{e:#}"),
                    "config refused; keeping the last applied table"
                );
                sleep_unless_stopped(agent.poll_interval, &stop);
                continue;
            }
        };
        let listed = match crs.as_ref().map(NatCrs::list).transpose() {
            Ok(listed) => listed.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = format!("{e:#}"), "keeping the last applied table");
                sleep_unless_stopped(agent.poll_interval, &stop);
                continue;
            }
        };
        match follower.merge(file.as_ref(), &listed) {
            Ok(merged) => {
                let mut apply_error = None;
                if applied.as_ref() != Some(&merged.plan) {
                    match tables.apply(&merged.plan) {
                        Ok(done) => {
                            tracing::info!(
                                entries = done.entries,
                                ranges = done.ranges,
                                generation = done.generation,
                                crs = listed.len(),
                                "NAT table applied"
                            );
                            applied = Some(merged.plan);
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "applying the NAT table");
                            apply_error = Some(format!("applying the NAT table on {host}: {e}"));
                        }
                    }
                }
                if applied.is_some() {
                    attach_nat(&mut dp, &agent.ifaces, &mut attached)?;
                }
                if let Some(crs) = &crs {
                    reported.retain(|key, _| {
                        merged
                            .outcomes
                            .iter()
                            .any(|o| (&o.namespace, &o.name) == (&key.0, &key.1))
                    });
                    for outcome in &merged.outcomes {
                        let key = (outcome.namespace.clone(), outcome.name.clone());
                        let now = (
                            outcome.generation,
                            outcome.error.clone().or(apply_error.clone()),
                        );
                        if reported.get(&key) == Some(&now) {
                            continue;
                        }
                        let written = crs.runtime.block_on(follow::report(
                            &crs.client,
                            &host,
                            outcome,
                            apply_error.as_deref(),
                        ));
                        match written {
                            Ok(()) => {
                                reported.insert(key, now);
                            }
                            Err(e) => tracing::warn!(
                                namespace = %outcome.namespace,
                                name = %outcome.name,
                                error = %e,
                                "writing the NatConfiguration status"
                            ),
                        }
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "config refused; keeping the last applied table")
            }
        }
        sleep_unless_stopped(agent.poll_interval, &stop);
    }
    tracing::info!("stopping; NAT tables and programs stay in place");
    Ok(())
}

/// Attaches the NAT programs to each interface that exists and has not
/// got them yet under its current index; a missing interface is waited for.
fn attach_nat(
    dp: &mut Dataplane,
    ifaces: &[String],
    attached: &mut std::collections::BTreeMap<String, u32>,
) -> Result<()> {
    for iface in ifaces {
        match tc::check_iface(iface) {
            Ok(index) if attached.get(iface) == Some(&index) => {}
            Ok(index) => {
                let programs = tc::nat_programs(iface)?;
                // Verified both at once: most of the time to the first
                // packet translated.
                dp.load_classifiers(&programs)?;
                for program in programs {
                    tc::attach(dp, program, iface, AttachMode::Auto)?;
                }
                tracing::info!(%iface, index, "NAT programs attached");
                attached.insert(iface.clone(), index);
            }
            Err(strait_dataplane::Error::NoSuchInterface(_)) => {
                // Index 0 (never a real one) marks "waiting, said so".
                match attached.insert(iface.clone(), 0) {
                    Some(0) => {}
                    Some(_) => {
                        tracing::warn!(%iface, "the interface is gone; attaching again when it is back")
                    }
                    None => {
                        tracing::info!(%iface, "waiting for the interface to attach the NAT programs")
                    }
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn sleep_unless_stopped(duration: std::time::Duration, stop: &std::sync::atomic::AtomicBool) {
    let until = std::time::Instant::now() + duration;
    while std::time::Instant::now() < until && !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Applies a fabric config; returns a human summary of what it did.
fn apply_fabric(pin_dir: &std::path::Path, config_path: &std::path::Path) -> Result<String> {
    let config = FabricConfig::from_file(config_path)?;
    apply_fabric_config(pin_dir, &config, &config_path.display().to_string())
}

fn apply_fabric_config(
    pin_dir: &std::path::Path,
    config: &FabricConfig,
    source: &str,
) -> Result<String> {
    use std::fmt::Write as _;
    let mut summary = String::new();
    // Refuse before pinning anything, so a typo leaves no state behind.
    for iface in &config.encap_interfaces {
        tc::check_iface(iface)?;
    }
    let underlay = tc::check_iface(&config.underlay)?;
    let underlay_mtu = tc::interface_mtu(&config.underlay)?;
    let tables = config
        .tables(underlay, underlay_mtu)
        .with_context(|| format!("invalid fabric config {source}"))?;
    for (ipv6, present) in [
        (false, LocalEndpoints::HAS_V4),
        (true, LocalEndpoints::HAS_V6),
    ] {
        if tables.local.present & present != 0 && !tc::forwarding_enabled(&config.underlay, ipv6)? {
            let family = if ipv6 { "ipv6" } else { "ipv4" };
            bail!(
                "{family} forwarding is off on {underlay}: the fabric routes outer packets through it; \
                 set net.{family}.conf.{underlay}.forwarding=1",
                underlay = config.underlay
            );
        }
    }
    let mut dp = Dataplane::load(PinDir::create(pin_dir)?).context("loading the dataplane")?;
    // Routes before programs: a freshly attached encap program never runs on empty tables.
    let applied = fabric::apply_tables(&mut dp, &tables)?;
    let decap = tc::attach(
        &mut dp,
        TcProgram::GeneveDecap,
        &config.underlay,
        config.attach_mode,
    )?;
    println!(
        "decapsulating Geneve on {} ({})",
        decap.iface,
        decap.mode.as_str()
    );
    for iface in &config.encap_interfaces {
        let done = tc::attach(&mut dp, TcProgram::GeneveEncap, iface, config.attach_mode)?;
        println!(
            "steering {} into the fabric ({})",
            done.iface,
            done.mode.as_str()
        );
    }
    writeln!(
        summary,
        "routes: {} written, {} removed; {} VNIs; overlay MTU {} (underlay {})",
        applied.routes_written,
        applied.routes_removed,
        applied.vnis,
        config.overlay_mtu(underlay_mtu),
        underlay_mtu
    )?;
    Ok(summary)
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected e.g. 500ms, 2s or 1m"))?;
    match unit {
        "ms" => Ok(std::time::Duration::from_millis(n)),
        "s" | "" => Ok(std::time::Duration::from_secs(n)),
        "m" => Ok(std::time::Duration::from_secs(n * 60)),
        _ => Err(format!("{text:?}: unknown unit {unit:?} (ms, s or m)")),
    }
}

fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The API the agent follows with `--from-cluster`.
struct ClusterSource {
    runtime: tokio::runtime::Runtime,
    client: kube::Client,
    kinds: Follow,
}

impl ClusterSource {
    fn connect(kinds: Follow) -> Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the Kubernetes client's runtime")?;
        let client = runtime
            .block_on(kube::Client::try_default())
            .context("connecting to the Kubernetes API (kubeconfig or in-cluster config)")?;
        Ok(Self {
            runtime,
            client,
            kinds,
        })
    }

    /// The file's config with the CRs' routes and nodes.
    fn config(&self, config_path: &std::path::Path) -> Result<FabricConfig> {
        let base = FabricConfig::from_file(config_path)?;
        let crs = self
            .runtime
            .block_on(ClusterFabric::fetch(&self.client, self.kinds))
            .context("listing RouteConfigurations and InternalNodes")?;
        Ok(crs.over(&base))
    }
}

fn run_agent(
    pin_dir: &std::path::Path,
    config_path: &std::path::Path,
    metrics_address: Option<std::net::SocketAddr>,
    poll_interval: std::time::Duration,
    cluster: Option<ClusterSource>,
) -> Result<()> {
    if let Some(cluster) = cluster {
        return run_agent_from_cluster(
            pin_dir,
            config_path,
            metrics_address,
            poll_interval,
            &cluster,
        );
    }
    use std::sync::{atomic::AtomicBool, Arc};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    // The first apply must succeed: an agent that never programmed anything is not ready.
    let summary = apply_fabric(pin_dir, config_path)?;
    tracing::info!(config = %config_path.display(), %summary, "fabric applied");
    let listener = match metrics_address {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("binding {address}"))?;
            listener.set_nonblocking(true)?;
            tracing::info!(%address, "serving /metrics and /healthz");
            Some(listener)
        }
        None => None,
    };
    let mut seen = modified(config_path);
    let mut next_check = std::time::Instant::now() + poll_interval;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(listener) = &listener {
            serve_pending(listener, pin_dir);
        }
        if std::time::Instant::now() >= next_check {
            next_check = std::time::Instant::now() + poll_interval;
            let now = modified(config_path);
            if now != seen {
                seen = now;
                match apply_fabric(pin_dir, config_path) {
                    Ok(summary) => {
                        tracing::info!(config = %config_path.display(), %summary, "fabric re-applied")
                    }
                    Err(e) => {
                        tracing::error!(config = %config_path.display(), error = format!("{e:#}"), "config refused; keeping the last applied state")
                    }
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tracing::info!("stopping; programs and maps stay attached and pinned");
    Ok(())
}

/// The agent loop of `run --from-cluster`: the file and the CRs are read
/// every poll, and applied when the merged config changed.
fn run_agent_from_cluster(
    pin_dir: &std::path::Path,
    config_path: &std::path::Path,
    metrics_address: Option<std::net::SocketAddr>,
    poll_interval: std::time::Duration,
    cluster: &ClusterSource,
) -> Result<()> {
    use std::sync::{atomic::AtomicBool, Arc};
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("installing signal handlers")?;
    }
    let source = format!("{} and the cluster's CRs", config_path.display());
    let mut applied = cluster.config(config_path)?;
    let summary = apply_fabric_config(pin_dir, &applied, &source)?;
    tracing::info!(%source, %summary, "fabric applied");
    let listener = match metrics_address {
        Some(address) => {
            let listener = std::net::TcpListener::bind(address)
                .with_context(|| format!("binding {address}"))?;
            listener.set_nonblocking(true)?;
            Some(listener)
        }
        None => None,
    };
    let mut next_check = std::time::Instant::now() + poll_interval;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        if let Some(listener) = &listener {
            serve_pending(listener, pin_dir);
        }
        if std::time::Instant::now() >= next_check {
            next_check = std::time::Instant::now() + poll_interval;
            match cluster.config(config_path) {
                Ok(wanted) if wanted != applied => {
                    match apply_fabric_config(pin_dir, &wanted, &source) {
                        Ok(summary) => {
                            tracing::info!(%source, %summary, "fabric re-applied");
                            applied = wanted;
                        }
                        Err(e) => {
                            tracing::error!(%source, error = format!("{e:#}"), "config refused; keeping the last applied state")
                        }
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "reading the config; keeping the last applied state"
                    )
                }
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    tracing::info!("stopping; programs and maps stay attached and pinned");
    Ok(())
}

/// Answers every connection waiting on the (non-blocking) listener.
fn serve_pending(listener: &std::net::TcpListener, pin_dir: &std::path::Path) {
    use std::io::{Read as _, Write as _};
    while let Ok((mut conn, _)) = listener.accept() {
        let timeout = Some(std::time::Duration::from_secs(1));
        if conn.set_nonblocking(false).is_err()
            || conn.set_read_timeout(timeout).is_err()
            || conn.set_write_timeout(timeout).is_err()
        {
            continue;
        }
        let mut request = [0u8; 1024];
        let n = conn.read(&mut request).unwrap_or(0);
        let line = String::from_utf8_lossy(&request[..n]);
        let (status, body) = if line.starts_with("GET /metrics ") {
            match PinDir::open(pin_dir).and_then(|dir| strait_dataplane::metrics::render(&dir)) {
                Ok(body) => ("200 OK", body),
                Err(e) => ("500 Internal Server Error", format!("{e}\n")),
            }
        } else if line.starts_with("GET /healthz ") {
            ("200 OK", "ok\n".to_owned())
        } else {
            ("404 Not Found", "try /metrics or /healthz\n".to_owned())
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

fn print_fabric(stats: &FabricStats) {
    println!();
    println!("{:<24} {:>12} {:>14}", "FABRIC", "PACKETS", "BYTES");
    for row in &stats.counters {
        println!("{:<24} {:>12} {:>14}", row.name, row.packets, row.bytes);
    }
    if stats.drops.total() > 0 {
        println!("{:<24} {:>12}", "DROPPED", "PACKETS");
        for (reason, n) in &stats.drops.0 {
            println!("{:<24} {n:>12}", reason.as_str());
        }
    }
}

fn print_table(snapshot: &CounterSnapshot) {
    if snapshot.rows.is_empty() {
        println!("traffic counters: nothing counted (see `strait-fabric attach`)");
        return;
    }
    println!(
        "{:<16} {:<8} {:<6} {:<7} {:>12} {:>14}",
        "INTERFACE", "DIR", "CLASS", "PROTO", "PACKETS", "BYTES"
    );
    for row in &snapshot.rows {
        println!(
            "{:<16} {:<8} {:<6} {:<7} {:>12} {:>14}",
            iface_name(row.ifindex),
            row.direction,
            row.class,
            ip_proto_name(row.ip_proto),
            row.packets,
            row.bytes
        );
    }
    if snapshot.overflow > 0 {
        println!(
            "warning: {} packets not counted: counter map full",
            snapshot.overflow
        );
    }
}

/// The interface's name in this network namespace, else `#index`.
fn iface_name(ifindex: u32) -> String {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: if_indextoname writes at most IF_NAMESIZE bytes into `buf`.
    let ptr = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr().cast()) };
    if ptr.is_null() {
        return format!("#{ifindex}");
    }
    CString::from_vec_with_nul(
        buf.iter()
            .take_while(|&&b| b != 0)
            .copied()
            .chain([0])
            .collect(),
    )
    .ok()
    .and_then(|s| s.into_string().ok())
    .map_or_else(
        || format!("#{ifindex}"),
        |name| format!("{name} (#{ifindex})"),
    )
}
