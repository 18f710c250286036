//! `cargo xtask demo`: Strait on one machine, two simulated clusters joined
//! by the real binaries, narrated, ending with a table of what was verified
//! and the line `demo: N verified, M failed`. Needs root.
use anyhow::{bail, Result};
use clap::Parser;

/// Runs the Strait demo (see the README) and cleans up after itself.
#[derive(Parser)]
#[command(name = "strait-demo", about)]
struct Cli {
    /// Leave everything running, with the kubeconfigs printed for kubectl,
    /// until Ctrl-C; then clean up.
    #[arg(long)]
    keep: bool,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the demo creates network namespaces and loads eBPF: run it as root");
    }
    let report = strait_testbed::demo::run(cli.keep)?;
    println!("{}", report.summary());
    if report.failures() > 0 {
        std::process::exit(1);
    }
    Ok(())
}
