//! Bounded test traffic between namespaces.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use crate::netns::{Error, NetNs};

/// How long a receiver waits for the next datagram before giving up.
const RECV_TIMEOUT: Duration = Duration::from_secs(2);

/// Sends `count` UDP datagrams of `payload` bytes from `from` to `to` (an
/// address inside `to_ns`, where a receiver is bound first) and returns how
/// many arrived. Bounded in count and time: it never waits more than
/// `RECV_TIMEOUT` for a datagram.
pub fn udp_burst(
    from: &NetNs,
    to_ns: &NetNs,
    to: SocketAddr,
    count: usize,
    payload: usize,
) -> Result<usize, Error> {
    let receiver = to_ns.enter(|| UdpSocket::bind(to))?.map_err(io(to_ns))?;
    receiver
        .set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(io(to_ns))?;
    let unspecified: SocketAddr = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }
        .parse()
        .map_err(|e: std::net::AddrParseError| Error::Command {
            command: "parse".into(),
            detail: e.to_string(),
        })?;
    let sender = from
        .enter(|| UdpSocket::bind(unspecified))?
        .map_err(io(from))?;
    let data = vec![0x5a; payload];
    for _ in 0..count {
        sender.send_to(&data, to).map_err(io(from))?;
    }
    let mut buf = vec![0; payload + 1];
    let mut received = 0;
    while received < count {
        match receiver.recv_from(&mut buf) {
            Ok((len, _)) if len == payload => received += 1,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break
            }
            Err(e) => return Err(io(to_ns)(e)),
        }
    }
    Ok(received)
}

fn io(ns: &NetNs) -> impl Fn(std::io::Error) -> Error + '_ {
    move |source| Error::Enter {
        name: ns.name().to_owned(),
        source,
    }
}

/// Sends one raw Ethernet `frame` out of `iface` in `ns` through an
/// AF_PACKET socket: for frames the IP stack would never build (truncated
/// headers, bad lengths), as a hostile or broken peer might send them.
pub fn send_raw_frame(ns: &NetNs, iface: &str, frame: &[u8]) -> Result<(), Error> {
    let ifindex = ns.ifindex(iface)?;
    ns.enter(|| -> std::io::Result<()> {
        // SAFETY: plain socket(2); the fd is owned below and closed on every path.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by socket(2) and nothing else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(
            &frame[..6.min(frame.len())]
                .iter()
                .copied()
                .chain([0; 6])
                .take(6)
                .collect::<Vec<_>>(),
        );
        // SAFETY: `frame` and `addr` outlive the call and their lengths are passed along.
        let sent = unsafe {
            libc::sendto(
                std::os::fd::AsRawFd::as_raw_fd(&fd),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if sent < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    })?
    .map_err(io(ns))
}
