//! The tunnel MTU: what the spec agreed on, lowered to what the path to the
//! peer carries once WireGuard's overhead is added, so inner packets are
//! never silently too big for the underlay.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;

/// Outer IP + UDP + WireGuard data header (16) and tag (16).
pub const fn overhead(outer: IpAddr) -> u32 {
    match outer {
        IpAddr::V4(_) => 20 + 8 + 32,
        IpAddr::V6(_) => 40 + 8 + 32,
    }
}

/// The tunnel MTU for a path of `path_mtu` bytes toward `outer`, never
/// above the spec's and never below IPv6's minimum of 1280.
pub fn tunnel_mtu(spec_mtu: u32, path_mtu: Option<u32>, outer: IpAddr) -> u32 {
    let from_path = path_mtu.map_or(u32::MAX, |p| p.saturating_sub(overhead(outer)));
    spec_mtu.min(from_path).max(1280)
}

/// A server's tunnel MTU before it knows where its peer comes from: the
/// spec's, lowered only to what the narrowest interface could carry with
/// the smaller (IPv4) overhead, so no mismatch is assumed for a family the
/// peer may not use. It is fitted to the peer's real underlay (see
/// [`tunnel_mtu`]) once the first handshake shows the peer's endpoint;
/// nothing crosses the tunnel before that.
pub fn before_endpoint(spec_mtu: u32, smallest_interface: Option<u32>) -> u32 {
    tunnel_mtu(
        spec_mtu,
        smallest_interface,
        std::net::Ipv4Addr::UNSPECIFIED.into(),
    )
}

/// The name the status gives the underlay family of `endpoint`.
pub fn underlay(endpoint: SocketAddr) -> &'static str {
    match endpoint.ip().to_canonical() {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// Sets the MTU of interface `name` (any kind: the kernel's WireGuard
/// device, a TUN) in the calling thread's network namespace.
pub fn set_interface_mtu(name: &str, mtu: u32) -> std::io::Result<()> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    // SAFETY: ifreq is plain data.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(std::io::Error::other(format!(
            "interface name {name:?} is too long"
        )));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_mtu = libc::c_int::try_from(mtu).map_err(std::io::Error::other)?;
    // SAFETY: SIOCSIFMTU reads the name and mtu of the ifreq we own.
    if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFMTU, &raw mut req) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The kernel's MTU for the route to `peer` (its path MTU once learnt),
/// read from a connected UDP socket; nothing is sent.
pub fn path_mtu_to(peer: SocketAddr) -> Option<u32> {
    let bind: SocketAddr = if peer.is_ipv4() {
        "0.0.0.0:0".parse().ok()?
    } else {
        "[::]:0".parse().ok()?
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect(peer).ok()?;
    let (level, name) = if peer.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_MTU)
    } else {
        (libc::IPPROTO_IPV6, libc::IPV6_MTU)
    };
    let mut mtu: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `mtu`, which we own.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&raw mut mtu).cast(),
            &raw mut len,
        )
    };
    (rc == 0 && mtu > 0).then_some(mtu as u32)
}

/// For a server, which does not know where its peer will come from: the
/// smallest MTU among the interfaces that are up (loopback and our own
/// tunnel excluded). Asked through ioctls, which see the calling thread's
/// network namespace (/sys/class/net shows whichever one mounted /sys).
pub fn smallest_interface_mtu(exclude: &str) -> Option<u32> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    // SAFETY: if_nameindex returns a NULL-terminated array (or NULL) that we
    // free below and only read in between.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return None;
    }
    let mut smallest: Option<u32> = None;
    let mut i = 0;
    loop {
        // SAFETY: within the array, which ends with a zeroed entry.
        let entry = unsafe { &*list.add(i) };
        if entry.if_index == 0 || entry.if_name.is_null() {
            break;
        }
        i += 1;
        // SAFETY: if_name is a NUL-terminated string owned by the array.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.if_name) };
        if name.to_bytes() == b"lo" || name.to_bytes() == exclude.as_bytes() {
            continue;
        }
        // SAFETY: ifreq is plain data; the name fits (IFNAMSIZ incl. NUL).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in req.ifr_name.iter_mut().zip(name.to_bytes()) {
            *dst = *src as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS/SIOCGIFMTU fill the union of the ifreq we own.
        let up = unsafe {
            libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &raw mut req) == 0
                && (i32::from(req.ifr_ifru.ifru_flags) & libc::IFF_UP) != 0
        };
        // SAFETY: as above.
        if up && unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFMTU, &raw mut req) } == 0 {
            // SAFETY: SIOCGIFMTU wrote the mtu member.
            let mtu = unsafe { req.ifr_ifru.ifru_mtu };
            if let Ok(mtu) = u32::try_from(mtu) {
                smallest = Some(smallest.map_or(mtu, |s| s.min(mtu)));
            }
        }
    }
    // SAFETY: the array came from if_nameindex and is freed once.
    unsafe { libc::if_freenameindex(list) };
    smallest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_lowers_the_spec_mtu() {
        let v4: IpAddr = "198.18.0.1".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert_eq!(tunnel_mtu(1420, Some(1500), v4), 1420);
        assert_eq!(tunnel_mtu(1420, Some(1500), v6), 1420);
        assert_eq!(tunnel_mtu(1420, Some(1450), v4), 1390);
        assert_eq!(tunnel_mtu(1420, Some(1450), v6), 1370);
        assert_eq!(tunnel_mtu(8920, Some(9000), v6), 8920);
        assert_eq!(tunnel_mtu(1420, None, v4), 1420);
        assert_eq!(tunnel_mtu(1420, Some(1300), v6), 1280);
    }

    /// A server on an IPv4 underlay whose spec asks for exactly what IPv4
    /// leaves of a 1500-byte path: fine over IPv4, 20 bytes too many over IPv6.
    #[test]
    fn a_server_fits_its_mtu_to_the_family_its_peer_actually_uses() {
        let before = before_endpoint(1440, Some(1500));
        assert_eq!(
            before, 1440,
            "no IPv6 overhead assumed before the peer is known"
        );
        let v4: SocketAddr = "198.18.0.2:40000".parse().unwrap();
        let v6: SocketAddr = "[fd00::2]:40000".parse().unwrap();
        assert_eq!(tunnel_mtu(1440, Some(1500), v4.ip()), 1440);
        assert_eq!(tunnel_mtu(1440, Some(1500), v6.ip()), 1420);
        assert_eq!((underlay(v4), underlay(v6)), ("IPv4", "IPv6"));
        let mapped: SocketAddr = "[::ffff:198.18.0.2]:40000".parse().unwrap();
        assert_eq!(underlay(mapped), "IPv4");
        // A narrow interface still bounds it, with the least overhead.
        assert_eq!(before_endpoint(1440, Some(1400)), 1340);
        assert_eq!(before_endpoint(1440, None), 1440);
    }

    #[test]
    fn loopback_routes_have_loopback_mtu() {
        let mtu = path_mtu_to("127.0.0.1:9".parse().unwrap()).unwrap();
        let lo: u32 = std::fs::read_to_string("/sys/class/net/lo/mtu")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // IPv4 caps a route's MTU at 65535 (IP_MAX_MTU).
        assert_eq!(mtu, lo.min(65_535));
    }
}
