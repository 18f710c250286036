//! Idempotent installation of everything the build and tests need.
//!
//! Each step checks first and does nothing when already satisfied, so a
//! second run takes well under a second.

use std::{
    fs,
    os::unix::fs::symlink,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// The toolchain the eBPF programs are built with (aya-build's default).
pub const EBPF_TOOLCHAIN: &str = "nightly";
/// Debian packages the tests, demo and benches call, by the command that
/// proves them installed: `ip` (iproute2), `nsenter` and `mount`
/// (util-linux), `tcpdump` (decodes Geneve on the underlay), `sysctl`
/// (procps), `ping` (iputils-ping), and what the benchmarks run or compare
/// against: `iperf3`, `sockperf`, `nft` (nftables), `iptables`; the gateway
/// tests' WireGuard peer nobody here wrote: `wireguard-go`, configured with
/// `wg` (wireguard-tools).
const DEBIAN_PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("mount", "mount"),
    ("tcpdump", "tcpdump"),
    ("sysctl", "procps"),
    ("ping", "iputils-ping"),
    ("iperf3", "iperf3"),
    ("sockperf", "sockperf"),
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("wireguard-go", "wireguard-go"),
    ("wg", "wireguard-tools"),
    // The demo applies its YAML with kubectl, as a user would (and the
    // testkit tests check kubectl against the test API server).
    ("kubectl", "kubernetes-client"),
];

pub fn run() -> Result<()> {
    cmd::step("bootstrap");
    debian_packages()?;
    rust_src()?;
    bpf_linker()?;
    bpffs()?;
    helm_sdk()?;
    Ok(())
}

fn debian_packages() -> Result<()> {
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(tool, _)| !cmd::succeeds("sh", &["-c", &format!("command -v {tool}")]))
        .map(|&(_, package)| package)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !cmd::is_root() {
        bail!(
            "missing Debian packages {missing:?}: install them as root (apt-get install {})",
            missing.join(" ")
        );
    }
    cmd::run("apt-get", &["update", "-q"])?;
    // Through env: some packages (iperf3) ask debconf questions, which must
    // take their defaults instead of waiting for a terminal.
    let mut args = vec![
        "DEBIAN_FRONTEND=noninteractive",
        "apt-get",
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
    ];
    args.extend(&missing);
    cmd::run("env", &args)
}

fn rust_src() -> Result<()> {
    let installed = cmd::output(
        "rustup",
        &[
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ],
    )
    .with_context(|| {
        format!(
            "the {EBPF_TOOLCHAIN} toolchain is missing (rustup toolchain install {EBPF_TOOLCHAIN})"
        )
    })?;
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        return Ok(());
    }
    cmd::run(
        "rustup",
        &[
            "component",
            "add",
            "rust-src",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ],
    )
}

/// bpf-linker links the BPF objects with LLVM; it must use the same LLVM as
/// the nightly rustc that emits the bitcode, so it is built against nightly's
/// own libLLVM, exposed under a prefix the llvm-sys build understands.
fn bpf_linker() -> Result<()> {
    if cmd::succeeds("bpf-linker", &["--version"]) {
        return Ok(());
    }
    let sysroot = cmd::output(
        "rustc",
        &[&format!("+{EBPF_TOOLCHAIN}"), "--print", "sysroot"],
    )
    .context("asking nightly rustc for its sysroot")?;
    let nightly_lib = PathBuf::from(sysroot.trim()).join("lib");
    let libllvm = fs::read_dir(&nightly_lib)
        .with_context(|| format!("reading {}", nightly_lib.display()))?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.") && n.contains("-rust-"))
        })
        .with_context(|| format!("no libLLVM.so.*-rust-* in {}", nightly_lib.display()))?;
    // Kept under CARGO_HOME: bpf-linker's rpath points into it at run time.
    let prefix = cargo_home()?.join("strait-llvm");
    let prefix_lib = prefix.join("lib");
    fs::create_dir_all(&prefix_lib)
        .with_context(|| format!("creating {}", prefix_lib.display()))?;
    let own_name = libllvm.file_name().context("libLLVM has no file name")?;
    for link in [prefix_lib.join("libLLVM.so"), prefix_lib.join(own_name)] {
        replace_symlink(&libllvm, &link)?;
    }
    let llvm_major = own_name
        .to_str()
        .and_then(llvm_major)
        .context("cannot read LLVM's major version from its file name")?;
    let feature = format!("llvm-{llvm_major}");
    let prefix_str = prefix.to_str().context("non-UTF-8 CARGO_HOME")?;
    cmd::run(
        "env",
        &[
            &format!("LLVM_PREFIX={prefix_str}"),
            "cargo",
            &format!("+{EBPF_TOOLCHAIN}"),
            "install",
            "--locked",
            "bpf-linker",
            "--no-default-features",
            "--features",
            &feature,
        ],
    )
}

/// `libLLVM.so.22.1-rust-1.97.0-nightly` -> `22`.
fn llvm_major(file_name: &str) -> Option<&str> {
    let major = file_name.strip_prefix("libLLVM.so.")?.split('.').next()?;
    (!major.is_empty() && major.bytes().all(|b| b.is_ascii_digit())).then_some(major)
}

fn replace_symlink(target: &Path, link: &Path) -> Result<()> {
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
    }
    symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))
}

fn cargo_home() -> Result<PathBuf> {
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        return Ok(PathBuf::from(home));
    }
    let home = std::env::var_os("HOME").context("neither CARGO_HOME nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cargo"))
}

/// Helm's own library, for the chart tests: PyPI's helm-python-sdk bundles
/// Helm v4 as a shared library (no helm binary, no Go toolchain).
pub const HELM_SDK: &str = "helm-python-sdk==0.2.2";

/// The virtualenv the chart tests run Helm from (they look in the same place).
pub fn helm_venv() -> Result<PathBuf> {
    Ok(cargo_home()?.join("strait-helm-venv"))
}

fn helm_sdk() -> Result<()> {
    let venv = helm_venv()?;
    let python = venv.join("bin/python");
    let python_str = python.to_str().context("non-UTF-8 CARGO_HOME")?;
    let wanted_version = HELM_SDK.rsplit("==").next().unwrap_or_default();
    let check = format!(
        "import importlib.metadata as m, helm_python; assert m.version('helm-python-sdk') == '{wanted_version}'"
    );
    if cmd::succeeds(python_str, &["-c", &check]) {
        return Ok(());
    }
    let venv_str = venv.to_str().context("non-UTF-8 CARGO_HOME")?;
    cmd::run("python3", &["-m", "venv", venv_str])
        .context("creating the chart tests' Python venv (needs python3 with venv)")?;
    cmd::run(
        python_str,
        &[
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            HELM_SDK,
        ],
    )
}

/// The pin directories live on bpffs at /sys/fs/bpf; a fresh machine may not
/// have it mounted. Only root can mount, and only root runs the eBPF tests.
fn bpffs() -> Result<()> {
    if !cmd::is_root() {
        return Ok(());
    }
    let mounts = fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    cmd::run("mount", &["-t", "bpf", "bpf", "/sys/fs/bpf"])
}

#[cfg(test)]
mod tests {
    use super::llvm_major;

    #[test]
    fn llvm_major_comes_from_the_library_file_name() {
        assert_eq!(
            llvm_major("libLLVM.so.22.1-rust-1.97.0-nightly"),
            Some("22")
        );
        assert_eq!(llvm_major("libLLVM.so.19-rust-1.86.0-nightly"), None);
        assert_eq!(llvm_major("libLLVM-22-rust-1.97.0-nightly.so"), None);
    }
}
