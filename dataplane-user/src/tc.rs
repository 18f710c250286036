//! Attaching TC programs so they outlive the agent.
//!
//! tcx (Linux 6.6+) links are pinned in the pin directory: the program stays
//! attached when the agent exits, and a new agent swaps its program into the
//! same link atomically, so an upgrade never opens a window without a program.
//! On older kernels the program is a clsact `cls_bpf` filter, which the kernel
//! also keeps after we exit; it is found again by its name.

use std::io;

use aya::{
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions},
        LinkOrder, ProgramError, TcAttachType,
    },
    sys::SyscallError,
    util::KernelVersion,
};
use serde::Serialize;
use strait_common::Direction;
use tracing::{debug, info};

use crate::{
    programs::{Dataplane, TcProgram},
    Error,
};

/// How to hook a program into an interface.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// tcx where the kernel has it, clsact otherwise.
    #[default]
    Auto,
    /// bpf_link based tcx (Linux 6.6+), pinned.
    Tcx,
    /// Legacy clsact qdisc with a direct-action cls_bpf filter.
    Netlink,
}

impl AttachMode {
    pub const fn as_str(self) -> &'static str {
        match self {
            AttachMode::Auto => "auto",
            AttachMode::Tcx => "tcx",
            AttachMode::Netlink => "netlink",
        }
    }

    fn resolve(self) -> Result<AttachMode, Error> {
        // Same rule aya applies; an unreadable version counts as old.
        let tcx = KernelVersion::current().is_ok_and(|v| v >= KernelVersion::new(6, 6, 0));
        match self {
            AttachMode::Auto if tcx => Ok(AttachMode::Tcx),
            AttachMode::Auto => Ok(AttachMode::Netlink),
            AttachMode::Tcx if !tcx => Err(Error::TcxUnavailable),
            mode => Ok(mode),
        }
    }
}

/// What an attach did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Attached {
    pub iface: String,
    pub direction: &'static str,
    pub mode: AttachMode,
    /// An earlier program was atomically replaced in its pinned tcx link.
    pub replaced: bool,
}

const fn attach_type(direction: Direction) -> TcAttachType {
    match direction {
        Direction::Ingress => TcAttachType::Ingress,
        Direction::Egress => TcAttachType::Egress,
    }
}

fn boxed(
    e: impl std::error::Error + Send + Sync + 'static,
) -> Box<dyn std::error::Error + Send + Sync> {
    Box::new(e)
}

/// Fails unless `iface` exists in the current network namespace. Asks the
/// kernel, not /sys/class/net, which shows the namespace sysfs was mounted in.
pub fn check_iface(iface: &str) -> Result<u32, Error> {
    let missing = || Error::NoSuchInterface(iface.to_owned());
    let name = std::ffi::CString::new(iface).map_err(|_| missing())?;
    // SAFETY: if_nametoindex reads the NUL-terminated string we own.
    match unsafe { libc::if_nametoindex(name.as_ptr()) } {
        0 => Err(missing()),
        index => Ok(index),
    }
}

/// linux/if_arp.h; not in the libc crate.
const ARPHRD_RAWIP: u16 = 519;

/// Link types (ARPHRD_*) whose packets start with the IP header.
const L3_ONLY_LINK_TYPES: [u16; 7] = [
    libc::ARPHRD_NONE,    // WireGuard, tun
    libc::ARPHRD_TUNNEL,  // IP-in-IP
    libc::ARPHRD_TUNNEL6, // ip6tnl
    libc::ARPHRD_SIT,
    libc::ARPHRD_IPGRE,
    ARPHRD_RAWIP,
    libc::ARPHRD_PPP,
];

/// The NAT programs (ingress, egress) built for `iface`'s link type: the
/// Ethernet ones, or those for L3-only devices.
pub fn nat_programs(iface: &str) -> Result<[TcProgram; 2], Error> {
    use strait_common::Direction::{Egress, Ingress};
    let link_type = link_type(iface)?;
    if link_type == libc::ARPHRD_ETHER {
        Ok([TcProgram::Nat(Ingress), TcProgram::Nat(Egress)])
    } else if L3_ONLY_LINK_TYPES.contains(&link_type) {
        Ok([TcProgram::NatL3(Ingress), TcProgram::NatL3(Egress)])
    } else {
        Err(Error::UnsupportedLinkType {
            iface: iface.to_owned(),
            link_type,
        })
    }
}

/// `iface`'s ARPHRD_* link type, asked of the kernel in the current network
/// namespace (SIOCGIFHWADDR).
fn link_type(iface: &str) -> Result<u16, Error> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
    let err = |source| Error::LinkType {
        iface: iface.to_owned(),
        source,
    };
    if iface.len() >= libc::IFNAMSIZ || iface.as_bytes().contains(&0) {
        return Err(Error::NoSuchInterface(iface.to_owned()));
    }
    // SAFETY: plain socket(2); the fd is owned right below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
    let socket = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero ifreq is valid (empty name, zeroed union).
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in request.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFHWADDR reads the NUL-terminated name (checked shorter
    // than IFNAMSIZ above, the rest zero) and writes only into `request`.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFHWADDR, &mut request) } != 0 {
        let e = io::Error::last_os_error();
        return Err(if e.raw_os_error() == Some(libc::ENODEV) {
            Error::NoSuchInterface(iface.to_owned())
        } else {
            err(e)
        });
    }
    // SAFETY: SIOCGIFHWADDR filled the union's hwaddr member.
    Ok(unsafe { request.ifr_ifru.ifru_hwaddr.sa_family })
}

/// Attaches `program` to `iface` so that it stays attached after we exit.
pub fn attach(
    dp: &mut Dataplane,
    program: TcProgram,
    iface: &str,
    mode: AttachMode,
) -> Result<Attached, Error> {
    check_iface(iface)?;
    let direction = program.direction();
    let mode = mode.resolve()?;
    let link_path = dp.pin_dir().link(iface, program.link_name());
    let err = |source| Error::Attach {
        iface: iface.to_owned(),
        direction: direction.as_str(),
        mode: mode.as_str(),
        source,
    };
    let prog = dp.classifier(program)?;
    let replaced = match mode {
        AttachMode::Tcx => {
            let reused = match PinnedLink::from_pin(&link_path) {
                Ok(pinned) => {
                    let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                        .map_err(|e| err(boxed(e)))?;
                    match prog.attach_to_link(link) {
                        Ok(_) => {
                            debug!(%iface, direction = direction.as_str(), "replaced program in pinned tcx link");
                            true
                        }
                        // The pinned link's interface is gone: the interface
                        // was deleted and made again (a restarted gateway
                        // makes a new tunnel device). Forget the dead link
                        // and attach to the new interface.
                        Err(ProgramError::SyscallError(SyscallError { io_error, .. }))
                            if io_error.raw_os_error() == Some(libc::ENOLINK) =>
                        {
                            info!(%iface, direction = direction.as_str(), "the pinned tcx link's interface is gone; attaching anew");
                            std::fs::remove_file(&link_path)
                                .map_err(|e| Error::io("unpinning", &link_path, e))?;
                            false
                        }
                        Err(e) => return Err(err(boxed(e))),
                    }
                }
                Err(LinkError::SyscallError(SyscallError { io_error, .. }))
                    if io_error.kind() == io::ErrorKind::NotFound =>
                {
                    false
                }
                Err(e) => return Err(err(boxed(e))),
            };
            if !reused {
                let id = prog
                    .attach_with_options(
                        iface,
                        attach_type(direction),
                        TcAttachOptions::TcxOrder(LinkOrder::default()),
                    )
                    .map_err(|e| err(boxed(e)))?;
                let link: FdLink = prog
                    .take_link(id)
                    .map_err(|e| err(boxed(e)))?
                    .try_into()
                    .map_err(|e: LinkError| err(boxed(e)))?;
                link.pin(&link_path).map_err(|e| Error::Pin {
                    path: link_path.clone(),
                    source: boxed(e),
                })?;
            }
            reused
        }
        AttachMode::Netlink => {
            match tc::qdisc_add_clsact(iface) {
                Ok(()) => {}
                Err(tc::TcError::NetlinkError(e)) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(err(boxed(e))),
            }
            // Replace rather than stack: drop any filter of ours first.
            let replaced = detach_netlink(iface, program)?;
            let id = prog
                .attach_with_options(
                    iface,
                    attach_type(direction),
                    TcAttachOptions::Netlink(NlOptions::default()),
                )
                .map_err(|e| err(boxed(e)))?;
            let link = prog.take_link(id).map_err(|e| err(boxed(e)))?;
            // A cls_bpf filter lives in the kernel, not in our process: dropping
            // the handle would remove it, forgetting it leaves it in place until
            // `detach` finds it again by name.
            std::mem::forget(link);
            replaced
        }
        AttachMode::Auto => unreachable!("resolve() never returns Auto"),
    };
    info!(%iface, direction = direction.as_str(), mode = mode.as_str(), replaced, "attached {}", program.name());
    Ok(Attached {
        iface: iface.to_owned(),
        direction: direction.as_str(),
        mode,
        replaced,
    })
}

/// Removes our filter of `program` from `iface` if there is one.
fn detach_netlink(iface: &str, program: TcProgram) -> Result<bool, Error> {
    match tc::qdisc_detach_program(iface, attach_type(program.direction()), program.name()) {
        Ok(()) => Ok(true),
        Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::Detach {
            iface: iface.to_owned(),
            direction: program.direction().as_str(),
            source: boxed(e),
        }),
    }
}

/// Detaches `program` from `iface`, whichever way it was attached.
pub fn detach(
    pin_dir: &crate::bpffs::PinDir,
    program: TcProgram,
    iface: &str,
) -> Result<AttachMode, Error> {
    let direction = program.direction().as_str();
    let link_path = pin_dir.link(iface, program.link_name());
    match PinnedLink::from_pin(&link_path) {
        Ok(pinned) => {
            // Unpinning drops the last reference to the link: the kernel detaches it.
            pinned.unpin().map_err(|e| Error::Detach {
                iface: iface.to_owned(),
                direction,
                source: boxed(e),
            })?;
            info!(%iface, direction, "detached tcx link");
            return Ok(AttachMode::Tcx);
        }
        Err(LinkError::SyscallError(SyscallError { io_error, .. }))
            if io_error.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::Detach {
                iface: iface.to_owned(),
                direction,
                source: boxed(e),
            })
        }
    }
    check_iface(iface)?;
    if detach_netlink(iface, program)? {
        info!(%iface, direction, "detached clsact filter");
        return Ok(AttachMode::Netlink);
    }
    Err(Error::NotAttached {
        iface: iface.to_owned(),
        direction,
    })
}

/// The MTU of `iface` in the current network namespace.
pub fn interface_mtu(iface: &str) -> Result<u32, Error> {
    check_iface(iface)?;
    let io = |e: std::io::Error| Error::io("reading the MTU of", iface, e);
    // SAFETY: plain socket(2); the fd is owned right below and closed on drop.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is valid.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFMTU reads ifr_name and writes ifr_mtu inside `req`, which we own.
    let rc = unsafe {
        libc::ioctl(
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIOCGIFMTU,
            &mut req,
        )
    };
    if rc < 0 {
        return Err(io(std::io::Error::last_os_error()));
    }
    // SAFETY: after a successful SIOCGIFMTU the union holds ifru_mtu.
    let mtu = unsafe { req.ifr_ifru.ifru_mtu };
    Ok(u32::try_from(mtu).unwrap_or(0))
}

/// Whether the kernel forwards IPv4 (`ipv6 = false`) or IPv6 packets on
/// `iface`, in the current network namespace. The fabric's route lookups
/// for outer packets fail on an interface that does not forward.
pub fn forwarding_enabled(iface: &str, ipv6: bool) -> Result<bool, Error> {
    check_iface(iface)?;
    let family = if ipv6 { "ipv6" } else { "ipv4" };
    let path = std::path::PathBuf::from(format!("/proc/sys/net/{family}/conf/{iface}/forwarding"));
    let value = std::fs::read_to_string(&path).map_err(|e| Error::io("reading", &path, e))?;
    Ok(value.trim() == "1")
}
