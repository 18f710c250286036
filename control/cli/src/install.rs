//! `strait install`: preflight checks of the machine it runs on (a node, or
//! a machine like the nodes) and the chart values for the chosen modules.
use std::{fmt, io::Write, path::Path};

use serde_json::json;

use crate::{
    cli::{InstallArgs, Module},
    error::encode_error,
    Error,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // pad, so the report's columns line up.
        f.pad(match self {
            Self::Pass => "ok",
            Self::Warn => "warn",
            Self::Fail => "FAIL",
        })
    }
}

/// One check's result and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
    pub found: String,
    pub next: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireGuard {
    /// Loaded or built in (/sys/module/wireguard).
    Loaded,
    /// Shipped as a module, not loaded.
    Available,
    Missing,
}

/// What the checks look at, read from the machine by [`Host::probe`].
#[derive(Debug, Clone)]
pub struct Host {
    pub kernel_release: String,
    pub mounts: String,
    /// /proc/sys/kernel/unprivileged_bpf_disabled exists only with the bpf() syscall.
    pub bpf_syscall: bool,
    pub btf: bool,
    pub wireguard: WireGuard,
}

impl Host {
    pub fn probe() -> Self {
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let modules = Path::new("/lib/modules").join(&kernel_release);
        let listed = |file: &str| {
            std::fs::read_to_string(modules.join(file))
                .is_ok_and(|text| text.contains("/wireguard.ko"))
        };
        let wireguard = if Path::new("/sys/module/wireguard").exists() {
            WireGuard::Loaded
        } else if listed("modules.dep") || listed("modules.builtin") {
            WireGuard::Available
        } else {
            WireGuard::Missing
        };
        Self {
            mounts: std::fs::read_to_string("/proc/self/mounts").unwrap_or_default(),
            bpf_syscall: Path::new("/proc/sys/kernel/unprivileged_bpf_disabled").exists(),
            btf: Path::new("/sys/kernel/btf/vmlinux").exists(),
            wireguard,
            kernel_release,
        }
    }
}

/// `6.8.0-45-generic` -> (6, 8).
fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

pub fn checks(host: &Host, modules: &[Module]) -> Vec<Check> {
    let network = modules.contains(&Module::Network);
    let mut checks = Vec::new();
    let check = |name, outcome, found: String, next: &str| Check {
        name,
        outcome,
        found,
        next: next.to_owned(),
    };
    let kernel = match kernel_version(&host.kernel_release) {
        Some(v) if v >= (6, 6) => check(
            "kernel",
            Outcome::Pass,
            host.kernel_release.clone(),
            "nothing",
        ),
        Some(v) if v >= (5, 10) => check(
            "kernel",
            Outcome::Warn,
            format!("{} (no tcx before 6.6)", host.kernel_release),
            "nothing: the fabric falls back to clsact; 6.6+ gives atomic program replacement",
        ),
        _ => check(
            "kernel",
            Outcome::Fail,
            format!("{:?}", host.kernel_release),
            "upgrade the nodes to Linux 5.10 or newer (6.6+ recommended)",
        ),
    };
    checks.push(kernel);
    if !network {
        return checks;
    }
    checks.push(if host.bpf_syscall && host.btf {
        check("BPF", Outcome::Pass, "bpf() syscall and BTF (/sys/kernel/btf/vmlinux)".to_owned(), "nothing")
    } else if host.bpf_syscall {
        check(
            "BPF",
            Outcome::Fail,
            "bpf() syscall, but no BTF".to_owned(),
            "use a kernel built with CONFIG_DEBUG_INFO_BTF=y (most distribution kernels are)",
        )
    } else {
        check(
            "BPF",
            Outcome::Fail,
            "no bpf() syscall".to_owned(),
            "use a kernel built with CONFIG_BPF_SYSCALL=y, or disable the network module (--modules authentication,offloading)",
        )
    });
    let bpffs = host.mounts.lines().any(|l| {
        l.split_whitespace().nth(1) == Some("/sys/fs/bpf")
            && l.split_whitespace().nth(2) == Some("bpf")
    });
    checks.push(if bpffs {
        check("bpffs", Outcome::Pass, "mounted at /sys/fs/bpf".to_owned(), "nothing")
    } else {
        check(
            "bpffs",
            Outcome::Fail,
            "not mounted at /sys/fs/bpf".to_owned(),
            "mount it on every node: mount -t bpf bpf /sys/fs/bpf (and add it to /etc/fstab), or set fabric.bpffsPath",
        )
    });
    checks.push(match host.wireguard {
        WireGuard::Loaded => check(
            "WireGuard",
            Outcome::Pass,
            "kernel module loaded".to_owned(),
            "nothing",
        ),
        WireGuard::Available => check(
            "WireGuard",
            Outcome::Warn,
            "kernel module present, not loaded".to_owned(),
            "modprobe wireguard for kernel speed; otherwise gateways use userspace WireGuard",
        ),
        WireGuard::Missing => check(
            "WireGuard",
            Outcome::Warn,
            "no kernel module".to_owned(),
            "nothing: gateways use userspace WireGuard (boringtun), slower than the kernel's",
        ),
    });
    checks
}

/// Chart values for the chosen modules and CIDRs.
pub fn values(args: &InstallArgs) -> Result<String, Error> {
    for cidr in args.reserved_cidrs.iter().chain(&args.remap_pools) {
        if !is_cidr(cidr) {
            return Err(Error::failed(
                format!("{cidr:?} is not a CIDR"),
                "pass CIDRs like 10.244.0.0/16 or fd00:10:244::/56",
            ));
        }
    }
    let enabled = |m| args.modules.contains(&m);
    let mut network = json!({ "enabled": enabled(Module::Network) });
    if !args.reserved_cidrs.is_empty() {
        network["reservedCIDRs"] = json!(args.reserved_cidrs);
    }
    if !args.remap_pools.is_empty() {
        network["remapPools"] = json!(args.remap_pools);
    }
    let values = json!({
        "network": network,
        "authentication": { "enabled": enabled(Module::Authentication) },
        "offloading": { "enabled": enabled(Module::Offloading) },
    });
    serde_norway::to_string(&values).map_err(|e| encode_error("values", e))
}

fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else {
        return false;
    };
    let Ok(address) = address.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix.parse::<u8>().is_ok_and(|p| p <= max)
}

/// Runs the checks, reports them on `report`, and returns the values
/// unless a check failed (and `--force` was not given).
pub fn run(host: &Host, args: &InstallArgs, report: &mut dyn Write) -> Result<String, Error> {
    let checks = checks(host, &args.modules);
    writeln!(report, "preflight (this machine):")?;
    for c in &checks {
        writeln!(report, "  {:<4}  {:<9}  {}", c.outcome, c.name, c.found)?;
        if c.outcome != Outcome::Pass {
            writeln!(report, "        next: {}", c.next)?;
        }
    }
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.outcome == Outcome::Fail)
        .map(|c| c.name)
        .collect();
    if !failed.is_empty() && !args.force {
        return Err(Error::failed(
            format!("preflight failed: {}", failed.join(", ")),
            "fix what each failed check says and re-run, or pass --force to write the values anyway",
        ));
    }
    values(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(release: &str, bpffs: bool, wireguard: WireGuard) -> Host {
        Host {
            kernel_release: release.to_owned(),
            mounts: if bpffs {
                "bpf /sys/fs/bpf bpf rw,nosuid 0 0\n".to_owned()
            } else {
                "proc /proc proc rw 0 0\n".to_owned()
            },
            bpf_syscall: true,
            btf: true,
            wireguard,
        }
    }

    fn outcomes(checks: &[Check]) -> Vec<(&str, Outcome)> {
        checks.iter().map(|c| (c.name, c.outcome)).collect()
    }

    const ALL: &[Module] = &[Module::Network, Module::Authentication, Module::Offloading];

    #[test]
    fn a_recent_kernel_with_bpffs_passes_and_missing_wireguard_only_warns() {
        let checks = checks(&host("6.18.0-1-amd64", true, WireGuard::Missing), ALL);
        assert_eq!(
            outcomes(&checks),
            [
                ("kernel", Outcome::Pass),
                ("BPF", Outcome::Pass),
                ("bpffs", Outcome::Pass),
                ("WireGuard", Outcome::Warn)
            ]
        );
        assert!(checks[3].next.contains("userspace"));
    }

    #[test]
    fn old_kernels_and_missing_bpffs_fail_with_what_to_do() {
        let checks = checks(&host("5.4.0-150-generic", false, WireGuard::Available), ALL);
        assert_eq!(checks[0].outcome, Outcome::Fail);
        assert!(checks[0].next.contains("5.10"));
        assert_eq!(checks[2].outcome, Outcome::Fail);
        assert!(checks[2].next.contains("mount -t bpf bpf /sys/fs/bpf"));
        assert_eq!(checks[3].outcome, Outcome::Warn);
        let middle = super::checks(&host("6.1.0", true, WireGuard::Loaded), ALL);
        assert_eq!(middle[0].outcome, Outcome::Warn);
        assert_eq!(middle[3].outcome, Outcome::Pass);
    }

    #[test]
    fn without_the_network_module_only_the_kernel_matters() {
        let checks = checks(
            &host("6.8.0", false, WireGuard::Missing),
            &[Module::Offloading],
        );
        assert_eq!(outcomes(&checks), [("kernel", Outcome::Pass)]);
    }

    #[test]
    fn values_follow_the_modules_and_refuse_bad_cidrs() {
        let mut args = InstallArgs {
            modules: vec![Module::Network],
            reserved_cidrs: vec!["10.244.0.0/16".to_owned()],
            remap_pools: vec![],
            output: None,
            force: false,
        };
        let values: serde_json::Value =
            serde_norway::from_str(&values(&args).expect("values")).expect("YAML");
        assert_eq!(values["network"]["enabled"], true);
        assert_eq!(values["network"]["reservedCIDRs"], json!(["10.244.0.0/16"]));
        assert_eq!(values["authentication"]["enabled"], false);
        assert!(values["network"].get("remapPools").is_none());
        args.remap_pools = vec!["10.64.0.0/33".to_owned()];
        assert!(super::values(&args).is_err());
    }

    #[test]
    fn a_failed_check_withholds_the_values_unless_forced() {
        let mut args = InstallArgs {
            modules: ALL.to_vec(),
            reserved_cidrs: vec![],
            remap_pools: vec![],
            output: None,
            force: false,
        };
        let old = host("4.19.0", true, WireGuard::Missing);
        let mut report = Vec::new();
        let error = run(&old, &args, &mut report).expect_err("fails");
        assert!(error.to_string().contains("preflight failed: kernel"));
        assert!(String::from_utf8_lossy(&report).contains("next: upgrade the nodes"));
        args.force = true;
        assert!(run(&old, &args, &mut Vec::new()).is_ok());
    }
}
