//! A periodic ICMP echo through the tunnel to the peer's tunnel address:
//! proves that data (not only handshakes) crosses, and measures latency.
//! Any WireGuard peer answers it, since its kernel does. Every
//! [`FULL_SIZE_EVERY`]th round also sends an echo as large as the configured
//! tunnel MTU with don't-fragment set: a path that drops such packets
//! without saying so (ICMP filtered, so the path MTU is never learnt) shows
//! as full-size echoes unanswered while small ones come back.
//!
//! Each request also carries this gateway's configured tunnel MTU (its
//! spec's) after a marker, and the prober reads the peer's requests as they
//! arrive (a raw ICMP socket gets a copy of every ICMP packet, the kernel
//! still answers): each gateway so learns the MTU its peer was configured
//! with, over the tunnel itself, with no API and with `--config` alike.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::{status::ProbeState, Error};

const ECHO_REQUEST_V4: u8 = 8;
const ECHO_REPLY_V4: u8 = 0;
const ECHO_REQUEST_V6: u8 = 128;
const ECHO_REPLY_V6: u8 = 129;
/// One round in this many also sends a full-size echo.
pub const FULL_SIZE_EVERY: u64 = 4;
/// IP and ICMP headers before the echo's payload.
const fn echo_headers(v4: bool) -> usize {
    if v4 {
        20 + 8
    } else {
        40 + 8
    }
}

/// What a Strait gateway's echo request carries after the ICMP header:
/// this marker, a version byte, then its configured tunnel MTU (u32, big endian).
const MARKER: &[u8] = b"strait-gateway-probe";
const PAYLOAD_VERSION: u8 = 1;
/// Marker, version and MTU.
const PAYLOAD_LEN: usize = MARKER.len() + 1 + 4;

/// Sends echo requests to one address and waits for the matching replies;
/// notes the configured MTU the peer's own requests announce.
pub struct Prober {
    socket: Socket,
    target: IpAddr,
    id: u16,
    seq: u16,
    /// This gateway's configured tunnel MTU, announced in every request.
    own_mtu: u32,
    /// The peer's, from its latest request.
    peer_mtu: Option<u32>,
}

impl Prober {
    /// Probes `target`, announcing `own_mtu` (the spec's tunnel MTU).
    pub fn new(target: IpAddr, own_mtu: u32) -> Result<Self, Error> {
        let (domain, protocol) = match target {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let socket = Socket::new(domain, Type::RAW, Some(protocol)).map_err(Error::io(
            "opening the raw ICMP socket for probes (needs CAP_NET_RAW)",
        ))?;
        // Don't fragment, and don't fall back to a smaller size the kernel
        // may have learnt: the probe is about whether this size gets through.
        let (level, name, value) = match target {
            IpAddr::V4(_) => (
                libc::IPPROTO_IP,
                libc::IP_MTU_DISCOVER,
                libc::IP_PMTUDISC_PROBE,
            ),
            IpAddr::V6(_) => (
                libc::IPPROTO_IPV6,
                libc::IPV6_MTU_DISCOVER,
                libc::IPV6_PMTUDISC_PROBE,
            ),
        };
        // SAFETY: setsockopt reads one c_int from a local we own, on our socket.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket),
                level,
                name,
                (&raw const value).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(Error::io("setting don't-fragment on the probe socket")(
                std::io::Error::last_os_error(),
            ));
        }
        Ok(Prober {
            socket,
            target,
            // Distinguishes our replies from other pingers' in this namespace.
            id: (std::process::id() as u16) ^ 0x5a17,
            seq: 0,
            own_mtu,
            peer_mtu: None,
        })
    }

    /// The configured MTU the peer announced last, if it ever did.
    pub fn peer_mtu(&self) -> Option<u32> {
        self.peer_mtu
    }

    /// One small echo; the round-trip time, or None after `timeout`.
    pub fn probe(&mut self, timeout: Duration) -> Option<Duration> {
        self.echo(timeout, 0)
    }

    /// One echo whose IP packet is `size` bytes (at least a small one's);
    /// the round-trip time, or None after `timeout` or if it cannot leave.
    pub fn echo(&mut self, timeout: Duration, size: usize) -> Option<Duration> {
        self.seq = self.seq.wrapping_add(1);
        let v4 = self.target.is_ipv4();
        let packet = echo_request(v4, self.id, self.seq, size, self.own_mtu);
        let start = Instant::now();
        let to = SockAddr::from(SocketAddr::new(self.target, 0));
        if self.socket.send_to(&packet, &to).is_err() {
            return None;
        }
        let deadline = start + timeout;
        let mut buf = vec![0u8; packet.len().max(1500) + 64];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let (n, from) = recv_from(&self.socket, &mut buf)?;
            // IPv4 raw sockets hand over the IP header too.
            let icmp = if v4 {
                let ihl = usize::from(buf.first()? & 0x0f) * 4;
                buf.get(ihl..n)?
            } else {
                buf.get(..n)?
            };
            if from == Some(self.target) {
                if let Some(mtu) = announced_mtu(v4, icmp) {
                    self.peer_mtu = Some(mtu);
                }
            }
            let reply = if v4 { ECHO_REPLY_V4 } else { ECHO_REPLY_V6 };
            if icmp.len() >= 8
                && icmp[0] == reply
                && icmp[4..6] == self.id.to_be_bytes()
                && icmp[6..8] == self.seq.to_be_bytes()
            {
                return Some(start.elapsed());
            }
        }
    }
}

/// One datagram from the raw socket and who sent it.
fn recv_from(socket: &Socket, buf: &mut [u8]) -> Option<(usize, Option<IpAddr>)> {
    // SAFETY: the bytes are initialised already and recv_from only writes
    // into them; viewing them as MaybeUninit never de-initialises them.
    let uninit = unsafe { &mut *(std::ptr::from_mut(buf) as *mut [std::mem::MaybeUninit<u8>]) };
    let (n, from) = socket.recv_from(uninit).ok()?;
    Some((n, from.as_socket().map(|a| a.ip())))
}

/// The configured MTU a Strait gateway's echo request announces.
fn announced_mtu(v4: bool, icmp: &[u8]) -> Option<u32> {
    let request = if v4 { ECHO_REQUEST_V4 } else { ECHO_REQUEST_V6 };
    if *icmp.first()? != request {
        return None;
    }
    let payload = icmp.get(8..8 + PAYLOAD_LEN)?;
    let (marker, rest) = payload.split_at(MARKER.len());
    if marker != MARKER || rest[0] != PAYLOAD_VERSION {
        return None;
    }
    let mtu = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
    (1280..=9000).contains(&mtu).then_some(mtu)
}

/// An ICMP echo request whose IP packet is `size` bytes (padded; never
/// shorter than the plain probe), announcing `own_mtu`.
fn echo_request(v4: bool, id: u16, seq: u16, size: usize, own_mtu: u32) -> Vec<u8> {
    let mut packet = vec![if v4 { ECHO_REQUEST_V4 } else { ECHO_REQUEST_V6 }, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(MARKER);
    packet.push(PAYLOAD_VERSION);
    packet.extend_from_slice(&own_mtu.to_be_bytes());
    let icmp_len = size.saturating_sub(echo_headers(v4) - 8);
    if packet.len() < icmp_len {
        packet.resize(icmp_len, 0);
    }
    if v4 {
        // ICMPv6's checksum is the kernel's job on raw sockets; ICMPv4's is ours.
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// Probes every `interval` until `stop`, recording results in `state`;
/// with `full_size` (the configured tunnel MTU), every
/// [`FULL_SIZE_EVERY`]th round also probes with a packet that large.
pub fn run(
    mut prober: Prober,
    interval: Duration,
    full_size: Option<u32>,
    state: Arc<Mutex<ProbeState>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    let mut round: u64 = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let started = Instant::now();
        let timeout = interval.min(Duration::from_secs(2));
        let rtt = prober.probe(timeout);
        round += 1;
        let full = full_size
            .filter(|_| round.is_multiple_of(FULL_SIZE_EVERY))
            .map(|size| (size, prober.echo(timeout, size as usize).is_some()));
        if let Ok(mut s) = state.lock() {
            s.peer_mtu = prober.peer_mtu().or(s.peer_mtu);
            if let Some((size, answered)) = full {
                s.full_size.size = size;
                s.full_size.sent += 1;
                if answered {
                    s.full_size.answered += 1;
                    s.full_size.consecutive_failures = 0;
                } else {
                    s.full_size.consecutive_failures += 1;
                }
            }
            s.sent += 1;
            match rtt {
                Some(rtt) => {
                    s.answered += 1;
                    s.consecutive_failures = 0;
                    s.last_rtt = Some(rtt);
                    s.last_answer = Some(SystemTime::now());
                }
                None => s.consecutive_failures += 1,
            }
        }
        if let Some(rest) = interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
    }
}

/// RFC 1071 Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_rfc_1071_example() {
        // RFC 1071 §3: 0001 f203 f4f5 f6f7 sums to ddf2, complemented 220d.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0x220d
        );
    }

    #[test]
    fn echo_requests_fill_the_asked_size() {
        let v4 = echo_request(true, 7, 1, 1420, 1420);
        assert_eq!(v4.len() + echo_headers(true) - 8, 1420);
        assert_eq!(checksum(&v4), 0, "a valid ICMPv4 checksum sums to zero");
        let v6 = echo_request(false, 7, 1, 1420, 1420);
        assert_eq!(v6.len() + echo_headers(false) - 8, 1420);
        // Never shorter than the plain probe.
        assert_eq!(echo_request(true, 7, 1, 0, 1420).len(), 8 + PAYLOAD_LEN);
    }

    #[test]
    fn requests_announce_the_configured_mtu_and_replies_do_not() {
        for v4 in [true, false] {
            let small = echo_request(v4, 7, 1, 0, 1380);
            assert_eq!(announced_mtu(v4, &small), Some(1380));
            let full = echo_request(v4, 7, 2, 8920, 8920);
            assert_eq!(announced_mtu(v4, &full), Some(8920));
            // The peer kernel's reply echoes our own payload back: not the peer's MTU.
            let mut reply = small.clone();
            reply[0] = if v4 { ECHO_REPLY_V4 } else { ECHO_REPLY_V6 };
            assert_eq!(announced_mtu(v4, &reply), None);
        }
        // Someone else's ping, a future version, nonsense: nothing learnt.
        let mut ping = echo_request(true, 7, 1, 0, 1420);
        ping[8..8 + MARKER.len()].copy_from_slice(&[0xaa; MARKER.len()]);
        assert_eq!(announced_mtu(true, &ping), None);
        let mut newer = echo_request(true, 7, 1, 0, 1420);
        newer[8 + MARKER.len()] = 2;
        assert_eq!(announced_mtu(true, &newer), None);
        assert_eq!(
            announced_mtu(true, &echo_request(true, 7, 1, 0, 70_000)),
            None
        );
        assert_eq!(announced_mtu(true, &[ECHO_REQUEST_V4, 0, 0]), None);
    }
}
