//! Which WireGuard implementation runs the tunnel: kernel where the module
//! exists (unless told otherwise), else a userspace datapath.

use std::path::{Path, PathBuf};

use crate::Error;

/// `--wireguard`: what the operator asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum WireguardMode {
    /// Kernel WireGuard; refuse to start without the module.
    Kernel,
    /// A userspace datapath even where the kernel has WireGuard.
    Userspace,
    /// Kernel WireGuard when available, else userspace.
    Auto,
}

/// `--datapath`: which userspace implementation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum UserspaceDatapath {
    /// Strait's own: TUN offloads, UDP GSO/GRO, batched system calls.
    Fast,
    /// defguard_wireguard_rs's embedded boringtun device.
    Embedded,
}

/// The datapath that will run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Kernel,
    Embedded,
    Fast,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Kernel => "kernel",
            Backend::Embedded => "embedded",
            Backend::Fast => "fast",
        }
    }
}

pub fn choose(
    mode: WireguardMode,
    userspace: UserspaceDatapath,
    kernel_available: bool,
) -> Result<Backend, Error> {
    let user = match userspace {
        UserspaceDatapath::Fast => Backend::Fast,
        UserspaceDatapath::Embedded => Backend::Embedded,
    };
    match (mode, kernel_available) {
        (WireguardMode::Kernel, true) | (WireguardMode::Auto, true) => Ok(Backend::Kernel),
        (WireguardMode::Kernel, false) => Err(Error::NoKernelWireguard),
        (WireguardMode::Userspace, _) | (WireguardMode::Auto, false) => Ok(user),
    }
}

/// Where the kernel tells whether it has WireGuard, under a root that tests
/// can point at a fake tree.
#[derive(Clone, Debug)]
pub struct KernelProbe {
    /// `/sys/module`: a loaded (or built-in, versioned) module shows up here.
    pub sys_module: PathBuf,
    /// `/lib/modules/<release>`: a loadable module is listed in modules.dep
    /// (the kernel loads it on the first `ip link add type wireguard`).
    pub modules_dir: PathBuf,
}

impl KernelProbe {
    /// The running kernel's locations.
    pub fn system() -> Self {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_owned())
            .unwrap_or_default();
        KernelProbe {
            sys_module: PathBuf::from("/sys/module"),
            modules_dir: Path::new("/lib/modules").join(release),
        }
    }

    pub fn wireguard_available(&self) -> bool {
        if self.sys_module.join("wireguard").is_dir() {
            return true;
        }
        let listed = |file: &str| {
            std::fs::read_to_string(self.modules_dir.join(file)).is_ok_and(|text| {
                text.lines().any(|line| {
                    line.split(':')
                        .next()
                        .and_then(|path| path.rsplit('/').next())
                        .is_some_and(|name| name.starts_with("wireguard.ko"))
                })
            })
        };
        listed("modules.dep") || listed("modules.builtin")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(setup: impl FnOnce(&Path)) -> (tempfile::TempDir, KernelProbe) {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("sys/module/ipv6")).unwrap();
        std::fs::create_dir_all(root.path().join("lib/modules/6.18.0")).unwrap();
        setup(root.path());
        let probe = KernelProbe {
            sys_module: root.path().join("sys/module"),
            modules_dir: root.path().join("lib/modules/6.18.0"),
        };
        (root, probe)
    }

    #[test]
    fn detects_a_loaded_module() {
        let (_root, p) = probe(|r| std::fs::create_dir(r.join("sys/module/wireguard")).unwrap());
        assert!(p.wireguard_available());
    }

    #[test]
    fn detects_a_loadable_or_builtin_module() {
        let (_root, p) = probe(|r| {
            std::fs::write(
                r.join("lib/modules/6.18.0/modules.dep"),
                "kernel/net/ipv4/udp_tunnel.ko.xz:\nkernel/drivers/net/wireguard/wireguard.ko.xz: kernel/net/ipv4/udp_tunnel.ko.xz\n",
            )
            .unwrap()
        });
        assert!(p.wireguard_available());
        let (_root, p) = probe(|r| {
            std::fs::write(
                r.join("lib/modules/6.18.0/modules.builtin"),
                "kernel/drivers/net/wireguard/wireguard.ko\n",
            )
            .unwrap()
        });
        assert!(p.wireguard_available());
    }

    #[test]
    fn no_module_anywhere_means_userspace() {
        let (_root, p) = probe(|r| {
            std::fs::write(
                r.join("lib/modules/6.18.0/modules.dep"),
                "kernel/drivers/net/wireguard_fake/notwireguard.ko:\nkernel/net/wireless/cfg80211.ko:\n",
            )
            .unwrap()
        });
        assert!(!p.wireguard_available());
        let missing = KernelProbe {
            sys_module: "/nonexistent/sys".into(),
            modules_dir: "/nonexistent/lib".into(),
        };
        assert!(!missing.wireguard_available());
    }

    #[test]
    fn the_flag_overrides_detection() {
        use UserspaceDatapath::*;
        use WireguardMode::*;
        assert_eq!(choose(Auto, Fast, true).unwrap(), Backend::Kernel);
        assert_eq!(choose(Auto, Fast, false).unwrap(), Backend::Fast);
        assert_eq!(choose(Auto, Embedded, false).unwrap(), Backend::Embedded);
        assert_eq!(choose(Userspace, Fast, true).unwrap(), Backend::Fast);
        assert_eq!(choose(Kernel, Fast, true).unwrap(), Backend::Kernel);
        assert!(matches!(
            choose(Kernel, Embedded, false),
            Err(Error::NoKernelWireguard)
        ));
    }
}
