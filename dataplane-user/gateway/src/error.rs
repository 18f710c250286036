//! The gateway library's errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid gateway configuration: {source}")]
    ConfigSyntax {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },
    #[error("invalid gateway configuration: {0}")]
    Config(String),
    #[error("invalid WireGuard key in {what}: {reason}")]
    Key { what: String, reason: String },
    #[error("kernel WireGuard was requested but this kernel has no WireGuard module (use --wireguard userspace or auto)")]
    NoKernelWireguard,
    #[error("WireGuard interface {interface}: {detail}")]
    Wireguard { interface: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
        let what = what.into();
        move |source| Error::Io { what, source }
    }
}
