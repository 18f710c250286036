//! A periodic ICMP echo through the tunnel to the peer's tunnel address:
//! proves that data (not only handshakes) crosses, and measures latency.
//! Any WireGuard peer answers it, since its kernel does.

use std::{
    io::Read as _,
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

/// Sends echo requests to one address and waits for the matching replies.
pub struct Prober {
    socket: Socket,
    target: IpAddr,
    id: u16,
    seq: u16,
}

impl Prober {
    pub fn new(target: IpAddr) -> Result<Self, Error> {
        let (domain, protocol) = match target {
            IpAddr::V4(_) => (Domain::IPV4, Protocol::ICMPV4),
            IpAddr::V6(_) => (Domain::IPV6, Protocol::ICMPV6),
        };
        let socket = Socket::new(domain, Type::RAW, Some(protocol)).map_err(Error::io(
            "opening the raw ICMP socket for probes (needs CAP_NET_RAW)",
        ))?;
        Ok(Prober {
            socket,
            target,
            // Distinguishes our replies from other pingers' in this namespace.
            id: (std::process::id() as u16) ^ 0x5a17,
            seq: 0,
        })
    }

    /// One echo; the round-trip time, or None after `timeout`.
    pub fn probe(&mut self, timeout: Duration) -> Option<Duration> {
        self.seq = self.seq.wrapping_add(1);
        let v4 = self.target.is_ipv4();
        let mut packet = vec![if v4 { ECHO_REQUEST_V4 } else { ECHO_REQUEST_V6 }, 0, 0, 0];
        packet.extend_from_slice(&self.id.to_be_bytes());
        packet.extend_from_slice(&self.seq.to_be_bytes());
        packet.extend_from_slice(b"strait-gateway-probe");
        if v4 {
            // ICMPv6's checksum is the kernel's job on raw sockets; ICMPv4's is ours.
            let sum = checksum(&packet);
            packet[2..4].copy_from_slice(&sum.to_be_bytes());
        }
        let start = Instant::now();
        let to = SockAddr::from(SocketAddr::new(self.target, 0));
        if self.socket.send_to(&packet, &to).is_err() {
            return None;
        }
        let deadline = start + timeout;
        let mut buf = [0u8; 1500];
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            self.socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .ok()?;
            let n = (&self.socket).read(&mut buf).ok()?;
            // IPv4 raw sockets hand over the IP header too.
            let icmp = if v4 {
                let ihl = usize::from(buf.first()? & 0x0f) * 4;
                buf.get(ihl..n)?
            } else {
                buf.get(..n)?
            };
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

/// Probes every `interval` until `stop`, recording results in `state`.
pub fn run(
    mut prober: Prober,
    interval: Duration,
    state: Arc<Mutex<ProbeState>>,
    stop: &std::sync::atomic::AtomicBool,
) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let started = Instant::now();
        let rtt = prober.probe(interval.min(Duration::from_secs(2)));
        if let Ok(mut s) = state.lock() {
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
}
