//! strait-fabric: the node agent of Strait's eBPF dataplane.
use std::{ffi::CString, path::PathBuf};

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand, ValueEnum};
use strait_common::{Direction, NatSide};
use strait_dataplane::{
    bpffs::PinDir,
    counter::{ip_proto_name, CounterSnapshot},
    nat::{parse_config, NatPlan, NatTables},
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
    /// Attach the NAT programs to the interfaces facing the peer: destination
    /// NAT on ingress, source NAT on egress.
    Attach {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        #[arg(long, value_enum, default_value_t = AttachMode::Auto)]
        attach_mode: AttachMode,
    },
    /// Detach the NAT programs from interfaces.
    Detach {
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
    },
    /// Print the active NAT table.
    Show,
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
            if json {
                println!("{}", serde_json::to_string_pretty(&snapshot)?);
            } else {
                print_table(&snapshot);
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
        } => {
            for iface in &ifaces {
                tc::check_iface(iface)?;
            }
            let mut dp =
                Dataplane::load(PinDir::create(pin_dir)?).context("loading the dataplane")?;
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
                for side in NatSide::ALL {
                    // Whichever variant is there: the interface may have
                    // been recreated with another link type since.
                    let mode = match tc::detach(&pins, TcProgram::Nat(side), iface) {
                        Err(strait_dataplane::Error::NotAttached { .. }) => {
                            tc::detach(&pins, TcProgram::NatL3(side), iface)?
                        }
                        other => other?,
                    };
                    println!(
                        "detached {} NAT from {iface} ({})",
                        side.as_str(),
                        mode.as_str()
                    );
                }
            }
        }
        NatCommand::Show => {
            let tables = NatTables::open_pinned(&PinDir::open(pin_dir)?)?;
            let generation = tables.active_generation()?;
            let mut entries = tables.active_entries()?;
            entries.sort_by_key(|t| (t.side, t.from, t.prefix_len));
            println!("generation {generation}, {} entries", entries.len());
            for t in entries {
                println!("{t}");
            }
        }
    }
    Ok(())
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
