//! strait-fabric: the node agent of Strait's eBPF dataplane.
use std::{ffi::CString, path::PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use strait_common::{fabric::LocalEndpoints, Direction};
use strait_dataplane::{
    bpffs::PinDir,
    counter::{ip_proto_name, CounterSnapshot},
    fabric::{self, FabricConfig, FabricStats},
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
    /// Print the pinned traffic counters.
    Stats {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
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
        Command::Apply { config } => apply_fabric(&cli.pin_dir, &config)?,
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
    }
    Ok(())
}

fn apply_fabric(pin_dir: &std::path::Path, config_path: &std::path::Path) -> Result<()> {
    let config = FabricConfig::from_file(config_path)?;
    // Refuse before pinning anything, so a typo leaves no state behind.
    for iface in &config.encap_interfaces {
        tc::check_iface(iface)?;
    }
    let underlay = tc::check_iface(&config.underlay)?;
    let underlay_mtu = tc::interface_mtu(&config.underlay)?;
    let tables = config
        .tables(underlay, underlay_mtu)
        .with_context(|| format!("invalid fabric config {}", config_path.display()))?;
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
    println!(
        "routes: {} written, {} removed; {} VNIs; overlay MTU {} (underlay {})",
        applied.routes_written,
        applied.routes_removed,
        applied.vnis,
        config.overlay_mtu(underlay_mtu),
        underlay_mtu
    );
    Ok(())
}

fn print_fabric(stats: &FabricStats) {
    println!();
    println!("{:<24} {:>12} {:>14}", "FABRIC", "PACKETS", "BYTES");
    for row in &stats.counters {
        println!("{:<24} {:>12} {:>14}", row.name, row.packets, row.bytes);
    }
    let drops: Vec<_> = stats.drops.iter().filter(|(_, n)| *n > 0).collect();
    if !drops.is_empty() {
        println!("{:<24} {:>12}", "DROPPED", "PACKETS");
        for (reason, n) in drops {
            println!("{reason:<24} {n:>12}");
        }
    }
}

fn print_table(snapshot: &CounterSnapshot) {
    if snapshot.rows.is_empty() {
        println!("no traffic counted yet");
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
