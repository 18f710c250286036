//! `cargo xtask <task>`: everything a developer or CI runs, in one place.
mod bootstrap;
mod cmd;
mod images;

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
    /// Bootstrap, build, and run the two-cluster demo (needs root).
    Demo {
        /// Leave the clusters running, kubeconfigs printed, until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// Regenerate the CRDs in charts/strait/crds/ from control/api.
    Crdgen,
    /// Build the container images (docker or podman), one per binary.
    Images {
        /// Only list the builds, exactly as they would run (no runtime needed).
        #[arg(long)]
        print: bool,
        #[arg(long, default_value = images::DEFAULT_REGISTRY)]
        registry: String,
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        tag: String,
    },
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
    /// Time from applying the peering YAML to the ResourceSlice being
    /// Accepted, on two TLS test control planes.
    Peering,
    /// TCP through a WireGuard tunnel: wireguard-go, defguard's embedded
    /// boringtun, Strait's fast path (and kernel WireGuard where present),
    /// CPU per GB, against the ChaCha20-Poly1305 single-core limit.
    Gateway,
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
        Task::Images {
            print,
            registry,
            tag,
        } => images::run(print, &registry, &tag),
        Task::Demo { keep } => {
            bootstrap::run()?;
            cmd::require_root("the demo creates network namespaces and loads eBPF")?;
            cmd::cargo(&["build", "--bins"])?;
            demo(keep)
        }
        Task::Bench { bench } => {
            bootstrap::run()?;
            cmd::require_root("benchmarks create network namespaces and load eBPF")?;
            // Optimised like a deployment: a debug build would measure the
            // compiler's defaults, not Strait.
            cmd::cargo(&["build", "--release", "--bins"])?;
            match bench {
                Bench::Fabric => cmd::run("target/release/strait-bench", &["fabric"]),
                Bench::Nat => cmd::run("target/release/strait-nat-bench", &[]),
                Bench::Peering => cmd::cargo(&[
                    "run",
                    "--release",
                    "--quiet",
                    "--package",
                    "strait-authentication",
                    "--example",
                    "peering-bench",
                ]),
                Bench::Gateway => cmd::run("target/release/strait-gateway-bench", &[]),
                Bench::Offload => cmd::cargo(&[
                    "run",
                    "--release",
                    "--quiet",
                    "--package",
                    "strait-virtual-kubelet",
                    "--example",
                    "offload-bench",
                    "--",
                    "target/release/strait-controller",
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
    // Includes strait-chart-tests: the chart rendered and linted by Helm's
    // library (installed by bootstrap), golden render, RBAC. In the same
    // run, so dependencies are built once with the same features.
    cmd::step("unit tests and chart tests");
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
    ])?;
    // Last: everything together, as a user first sees it.
    cmd::step("the two-cluster demo");
    demo(false)
}

/// Runs the demo built by `cargo build --bins`.
fn demo(keep: bool) -> Result<()> {
    const DEMO: &str = "target/debug/strait-demo";
    if keep {
        // Replaced by the demo, so that Ctrl-C reaches only the demo, which
        // cleans up before exiting (this process would die at once).
        use std::os::unix::process::CommandExt as _;
        eprintln!("$ {DEMO} --keep");
        let error = std::process::Command::new(DEMO).arg("--keep").exec();
        return Err(anyhow::anyhow!("starting {DEMO}: {error}"));
    }
    cmd::run(DEMO, &[])
}
