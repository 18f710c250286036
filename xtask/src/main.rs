//! `cargo xtask <task>`: everything a developer or CI runs, in one place.
mod bootstrap;
mod cmd;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Strait's developer tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and tests need (idempotent; fast when done).
    Bootstrap,
    /// rustfmt check and clippy -D warnings over the workspace.
    Lint,
    /// Bootstrap, lint, build, unit tests, then the privileged netns tests.
    Test,
    /// Bootstrap, build, and run the demo (needs root).
    Demo,
    /// Regenerate the CRDs in charts/strait/crds/ from control/api.
    Crdgen,
    /// Benchmarks (need root); the last line of each is key=value ratios
    /// against baselines measured in the same run.
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// Pod-to-remote TCP throughput and latency over plain routing, kernel
    /// VXLAN and Strait's eBPF Geneve fabric.
    Fabric,
    /// Throughput with no NAT, nftables, iptables NETMAP and Strait's eBPF
    /// NAT with 1 and 10,000 mappings, and the time to apply 10,000.
    Nat,
    /// 1,000 pods offloaded across 2 virtual nodes on the test control
    /// plane: pods/s to Running and peak RSS of controller and virtual kubelet.
    Offload,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = cmd::workspace_root()?;
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Bootstrap => bootstrap::run(),
        Task::Lint => {
            bootstrap::run()?;
            lint()
        }
        Task::Test => {
            bootstrap::run()?;
            lint()?;
            test()
        }
        Task::Crdgen => crdgen(false),
        Task::Demo => {
            bootstrap::run()?;
            cmd::cargo(&["build", "--bins"])?;
            cmd::run("target/debug/strait-demo", &[])
        }
        Task::Bench { bench } => {
            bootstrap::run()?;
            cmd::require_root("benchmarks create network namespaces and load eBPF")?;
            cmd::cargo(&["build", "--bins"])?;
            match bench {
                Bench::Fabric => cmd::run("target/debug/strait-bench", &["fabric"]),
                Bench::Nat => cmd::run("target/debug/strait-nat-bench", &[]),
                Bench::Offload => cmd::cargo(&[
                    "run",
                    "--quiet",
                    "--package",
                    "strait-virtual-kubelet",
                    "--example",
                    "offload-bench",
                    "--",
                    "target/debug/strait-controller",
                ]),
            }
        }
    }
}

fn lint() -> Result<()> {
    cmd::step("lint");
    cmd::cargo(&["fmt", "--all", "--check"])?;
    // The host build of the workspace turns on strait-common's `user` feature
    // (std, aya), so the eBPF crate is linted on its own, for its own target.
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "strait-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    let ebpf_toolchain = format!("+{}", bootstrap::EBPF_TOOLCHAIN);
    cmd::cargo(&[
        &ebpf_toolchain,
        "clippy",
        "--package",
        "strait-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--",
        "-D",
        "warnings",
    ])
}

/// Writes the CRDs, or with `check` fails when the committed ones are stale.
fn crdgen(check: bool) -> Result<()> {
    let mut args = vec![
        "run",
        "--quiet",
        "--package",
        "strait-api",
        "--bin",
        "strait-crdgen",
        "--",
    ];
    if check {
        args.push("--check");
    }
    args.push(CRD_DIR);
    cmd::cargo(&args)
}

const CRD_DIR: &str = "charts/strait/crds";

fn test() -> Result<()> {
    cmd::step("generated files are up to date");
    crdgen(true)?;
    cmd::step("build");
    // Default members: everything but the BPF-only crate, which build.rs builds.
    cmd::cargo(&["build", "--bins"])?;
    cmd::step("unit tests");
    cmd::cargo(&[
        "test",
        "--no-fail-fast",
        "--workspace",
        "--exclude",
        "strait-ebpf",
        "--exclude",
        "strait-testbed",
    ])?;
    cmd::step("privileged network-namespace tests");
    cmd::require_root("the netns tests create namespaces and load eBPF programs")?;
    // Serial: each test owns namespaces and bpffs pins; a single thread keeps
    // failures readable and the 2-core machines unloaded.
    cmd::cargo(&[
        "test",
        "--no-fail-fast",
        "--package",
        "strait-testbed",
        "--",
        "--test-threads=1",
    ])
}
