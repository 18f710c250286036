use std::{io, path::PathBuf};

/// Everything the loader can fail at, with the object it failed on.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path} is not on a bpffs mount (mount one with `mount -t bpf bpf /sys/fs/bpf`)")]
    NotBpffs { path: PathBuf },
    #[error("{action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("this build carries no eBPF object (it was built with AYA_BUILD_SKIP)")]
    NoObject,
    #[error("loading the eBPF object")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}")]
    Program {
        name: &'static str,
        #[source]
        source: aya::programs::ProgramError,
    },
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("a thread loading eBPF programs panicked")]
    LoadPanicked,
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("pinning {path}")]
    Pin {
        path: PathBuf,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no interface named {0}")]
    NoSuchInterface(String),
    #[error("tcx is not available on this kernel (needs Linux 6.6+); use --attach-mode netlink")]
    TcxUnavailable,
    #[error("attaching to {iface} {direction} in {mode} mode")]
    Attach {
        iface: String,
        direction: &'static str,
        mode: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("detaching from {iface} {direction}")]
    Detach {
        iface: String,
        direction: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("no Strait pins in {path}: nothing is attached yet (see `strait-fabric attach`)")]
    NoPins { path: PathBuf },
    #[error("reading the link type of {iface}")]
    LinkType {
        iface: String,
        #[source]
        source: io::Error,
    },
    #[error("{iface} has link type {link_type}, which the NAT programs do not handle (Ethernet or L3-only devices)")]
    UnsupportedLinkType { iface: String, link_type: u16 },
    #[error("nothing of ours is attached to {iface} {direction}")]
    NotAttached {
        iface: String,
        direction: &'static str,
    },
}

impl Error {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
