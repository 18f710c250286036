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

/// Sends `count` datagrams from `from` to `to` (in `to_ns`) one every
/// `interval`, while a receiver thread counts arrivals, and runs
/// `during` meanwhile (for example an agent restart). Returns
/// (sent, received). Bounded: at most `count` datagrams and
/// `count * interval + RECV_TIMEOUT` of time.
pub fn udp_stream<T: Send>(
    from: &NetNs,
    to_ns: &NetNs,
    to: SocketAddr,
    count: usize,
    interval: Duration,
    during: impl FnOnce() -> T + Send,
) -> Result<(usize, usize, T), Error> {
    let receiver = to_ns.enter(|| UdpSocket::bind(to))?.map_err(io(to_ns))?;
    receiver
        .set_read_timeout(Some(RECV_TIMEOUT))
        .map_err(io(to_ns))?;
    let unspecified: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sender = from
        .enter(|| UdpSocket::bind(unspecified))?
        .map_err(io(from))?;
    std::thread::scope(|scope| {
        let counting = scope.spawn(|| {
            let mut buf = [0u8; 64];
            let mut seen = vec![false; count];
            let mut received = 0;
            // Ends on the first silence longer than RECV_TIMEOUT.
            while let Ok((len, _)) = receiver.recv_from(&mut buf) {
                if len == 8 {
                    let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or_default()) as usize;
                    if seq < count && !seen[seq] {
                        seen[seq] = true;
                        received += 1;
                    }
                }
                if received == count {
                    break;
                }
            }
            received
        });
        let sending = scope.spawn(|| {
            let mut sent = 0;
            for seq in 0..count as u64 {
                if sender.send_to(&seq.to_be_bytes(), to).is_ok() {
                    sent += 1;
                }
                std::thread::sleep(interval);
            }
            sent
        });
        let result = during();
        let sent = sending
            .join()
            .map_err(|_| Error::Panicked(from.name().to_owned()))?;
        let received = counting
            .join()
            .map_err(|_| Error::Panicked(to_ns.name().to_owned()))?;
        Ok((sent, received, result))
    })
}

/// Connects from `from` to a TCP server bound at `to` in `to_ns`, sends
/// `bytes` bytes, and returns how many the server read and acknowledged back.
/// Bounded by socket timeouts of `RECV_TIMEOUT`.
pub fn tcp_transfer(
    from: &NetNs,
    to_ns: &NetNs,
    to: SocketAddr,
    bytes: usize,
) -> Result<u64, Error> {
    tcp_transfer_translated(from, to_ns, to, to, bytes)
}

/// [`tcp_transfer`] to a server bound at `listen` that the client knows
/// as `to` (an address translated on the way, as with remapped CIDRs).
pub fn tcp_transfer_translated(
    from: &NetNs,
    to_ns: &NetNs,
    to: SocketAddr,
    listen: SocketAddr,
    bytes: usize,
) -> Result<u64, Error> {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    let listener = to_ns
        .enter(|| TcpListener::bind(listen))?
        .map_err(io(to_ns))?;
    std::thread::scope(|scope| {
        let server = scope.spawn(|| -> std::io::Result<()> {
            let mut conn = accept_within(&listener, RECV_TIMEOUT)?;
            conn.set_read_timeout(Some(RECV_TIMEOUT))?;
            let mut total: u64 = 0;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match conn.read(&mut buf)? {
                    0 => break,
                    n => total += n as u64,
                }
            }
            conn.write_all(&total.to_be_bytes())
        });
        let client = from
            .enter(|| -> std::io::Result<u64> {
                let mut conn = TcpStream::connect_timeout(&to, RECV_TIMEOUT)?;
                conn.set_read_timeout(Some(RECV_TIMEOUT))?;
                conn.set_write_timeout(Some(RECV_TIMEOUT))?;
                let chunk = vec![0x42u8; 64 * 1024];
                let mut left = bytes;
                while left > 0 {
                    let n = left.min(chunk.len());
                    conn.write_all(&chunk[..n])?;
                    left -= n;
                }
                conn.shutdown(std::net::Shutdown::Write)?;
                let mut ack = [0u8; 8];
                conn.read_exact(&mut ack)?;
                Ok(u64::from_be_bytes(ack))
            })?
            .map_err(io(from));
        let served = server
            .join()
            .map_err(|_| Error::Panicked(to_ns.name().to_owned()))?;
        served.map_err(io(to_ns))?;
        client
    })
}

/// accept(2) that gives up after `limit` instead of blocking forever.
fn accept_within(
    listener: &std::net::TcpListener,
    limit: Duration,
) -> std::io::Result<std::net::TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = std::time::Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((conn, _)) => {
                conn.set_nonblocking(false)?;
                return Ok(conn);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
}
