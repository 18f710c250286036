//! Strait's fast userspace datapath.
//!
//! - TUN with IFF_VNET_HDR and TSO/USO enabled (tun-rs): the kernel hands
//!   over up to 64 KB TCP segments, split here into MTU-sized packets, and
//!   decrypted packets of one flow are coalesced (GRO) before being written
//!   back, so the TCP stacks on both sides see few, large packets.
//! - UDP GSO on send: the encrypted packets of one batch leave in one
//!   sendmsg; UDP GRO and recvmmsg on receive.
//! - The WireGuard protocol from boringtun's noise core (`Tunn`).
//! - One thread per direction: each flow is handled in order by a single
//!   thread, so packets of a flow are never reordered; encryption and
//!   decryption run on different cores.

pub mod peer;

/// The schedule lives at the crate's root: every datapath shares it.
pub use crate::first_handshake;
pub mod udp;

use std::{
    net::SocketAddr,
    os::fd::AsRawFd as _,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex, MutexGuard,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use defguard_boringtun::noise::{errors::WireGuardError, TunnResult};
use tun_rs::{DeviceBuilder, GROTable, SyncDevice, IDEAL_BATCH_SIZE, VIRTIO_NET_HDR_LEN};

use crate::{Error, PeerStats, Plan, PrivateKey, PublicKey};
use peer::{drop_reason, PeerState, Target};
use udp::{poll, RecvBatch, UdpIo};

/// How long the I/O threads wait before looking at the stop flag again.
const POLL_MS: i32 = 200;
/// recvmmsg batch size.
const RECV_BATCH: usize = 16;
/// Datagram scratch space for handshakes and keepalives.
const SCRATCH: usize = 2048;
/// How often the timers run: fine enough for the first-handshake schedule,
/// whose shortest delay is 75 ms.
pub const TIMER_TICK: Duration = Duration::from_millis(25);

struct Shared {
    peer: Mutex<PeerState>,
    udp: UdpIo,
    tun: SyncDevice,
    mtu: usize,
    stop: AtomicBool,
    tx_bytes: AtomicU64,
    rx_bytes: AtomicU64,
}

impl Shared {
    fn peer(&self) -> MutexGuard<'_, PeerState> {
        // A panic on another thread while holding the lock leaves the
        // state usable (counters and sessions), so keep going.
        self.peer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, to: SocketAddr, data: &[u8], segment: usize) {
        match self.udp.send_run(to, data, segment) {
            Ok(()) => {
                self.tx_bytes
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(%to, error = %e, "sending to the peer"),
        }
    }
}

/// A running fast-path gateway; stops its threads and removes the TUN on drop.
pub struct FastDevice {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl FastDevice {
    pub fn start(
        plan: &Plan,
        mtu: u32,
        key: PrivateKey,
        peer_key: PublicKey,
    ) -> Result<Self, Error> {
        let mut builder = DeviceBuilder::new()
            .name(plan.interface.clone())
            .mtu(u16::try_from(mtu).unwrap_or(u16::MAX))
            .offload(true)
            .tx_queue_len(1000);
        for cidr in &plan.addresses {
            builder = match cidr.addr {
                std::net::IpAddr::V4(a) => builder.ipv4(a, cidr.len, None),
                std::net::IpAddr::V6(a) => builder.ipv6(a, cidr.len),
            };
        }
        let tun = builder.build_sync().map_err(Error::io(format!(
            "creating TUN {} with offloads",
            plan.interface
        )))?;
        tracing::info!(
            interface = %plan.interface,
            tcp_gso = tun.tcp_gso(),
            udp_gso = tun.udp_gso(),
            "TUN created"
        );
        crate::routes::add_routes(&plan.interface, &plan.routes)?;
        let udp = UdpIo::bind(plan.listen_port()).map_err(Error::io(format!(
            "binding UDP port {}",
            plan.listen_port()
        )))?;
        tracing::info!(port = ?udp.local_port(), "listening for the peer");
        let peer = PeerState::new(
            key,
            peer_key,
            plan.initial_endpoint(),
            plan.allowed_ips.clone(),
            plan.persistent_keepalive,
        );
        let shared = Arc::new(Shared {
            peer: Mutex::new(peer),
            udp,
            tun,
            // Buffers for the largest MTU the path may later allow.
            mtu: plan.mtu.max(mtu) as usize,
            stop: AtomicBool::new(false),
            tx_bytes: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
        });
        let spawn = |name: &str, f: fn(&Shared)| {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || f(&shared))
                .map_err(Error::io(format!("starting thread {name}")))
        };
        let threads = vec![
            spawn("gw-encrypt", tun_to_network)?,
            spawn("gw-decrypt", network_to_tun)?,
            spawn("gw-timers", timers)?,
        ];
        Ok(FastDevice { shared, threads })
    }

    pub fn stats(&self) -> PeerStats {
        let peer = self.shared.peer();
        PeerStats {
            last_handshake: peer.last_handshake(),
            tx_bytes: self.shared.tx_bytes.load(Ordering::Relaxed),
            rx_bytes: self.shared.rx_bytes.load(Ordering::Relaxed),
            endpoint: peer.endpoint,
        }
    }

    pub fn drops(&self) -> std::collections::BTreeMap<String, u64> {
        self.shared
            .peer()
            .drops
            .iter()
            .map(|(k, v)| ((*k).to_owned(), *v))
            .collect()
    }

    /// Lowers (or raises back) the TUN's MTU when the path to the peer
    /// changes; buffers were sized for the spec's MTU, the upper bound.
    /// Returns the MTU applied.
    pub fn set_mtu(&self, mtu: u32) -> Result<u32, Error> {
        let mtu = u16::try_from(mtu.min(self.shared.mtu as u32)).unwrap_or(u16::MAX);
        self.shared
            .tun
            .set_mtu(mtu)
            .map_err(Error::io(format!("setting the tunnel MTU to {mtu}")))?;
        Ok(u32::from(mtu))
    }

    /// The peer published a new key.
    pub fn set_peer_key(&self, key: PublicKey) {
        let out = self.shared.peer().peer_key_changed(key);
        for (to, datagram) in out {
            self.shared.send(to, &datagram, datagram.len());
        }
    }

    /// We rotated our own key.
    pub fn set_own_key(&self, key: PrivateKey) {
        let mut scratch = [0u8; SCRATCH];
        let mut peer = self.shared.peer();
        let endpoint = peer.endpoint;
        if let (Some(init), Some(to)) = (peer.own_key_changed(key, &mut scratch), endpoint) {
            let init = init.to_vec();
            drop(peer);
            self.shared.send(to, &init, init.len());
        }
    }
}

impl Drop for FastDevice {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Encrypts what the TUN hands over and sends it to the peer in GSO runs.
fn tun_to_network(shared: &Shared) {
    let stride = shared.mtu + 64;
    let mut original = vec![0u8; VIRTIO_NET_HDR_LEN + 65_535];
    let mut bufs = vec![vec![0u8; stride]; IDEAL_BATCH_SIZE];
    let mut sizes = vec![0usize; IDEAL_BATCH_SIZE];
    // Encrypted packets back to back, as UDP GSO wants them.
    let mut out = vec![0u8; IDEAL_BATCH_SIZE * stride + SCRATCH];
    let mut lens: Vec<usize> = Vec::with_capacity(IDEAL_BATCH_SIZE);
    let tun_fd = shared.tun.as_raw_fd();
    while !shared.stop.load(Ordering::Relaxed) {
        match poll(tun_fd, libc::POLLIN, POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(error = %e, "polling the TUN");
                return;
            }
        }
        let n = match shared
            .tun
            .recv_multiple(&mut original, &mut bufs, &mut sizes, 0)
        {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                tracing::debug!(error = %e, "reading the TUN");
                continue;
            }
        };
        lens.clear();
        let mut used = 0;
        let endpoint = {
            let mut peer = shared.peer();
            if peer.endpoint.is_none() {
                // A server that has not heard from its peer yet: nowhere to
                // send, and a handshake started now could not be sent either.
                for _ in 0..n {
                    peer.drop_packet("no_endpoint");
                }
                continue;
            }
            for (buf, size) in bufs.iter().zip(&sizes).take(n) {
                let Some(packet) = buf.get(..*size) else {
                    continue;
                };
                if out.len() - used < packet.len() + SCRATCH {
                    break;
                }
                if let TunnResult::WriteToNetwork(sealed) =
                    peer.current.tunn.encapsulate(packet, &mut out[used..])
                {
                    let len = sealed.len();
                    lens.push(len);
                    used += len;
                }
            }
            peer.endpoint
        };
        if let Some(to) = endpoint {
            send_runs(shared, to, &out[..used], &lens);
        }
    }
}

/// Sends back-to-back datagrams of lengths `lens`, one system call per run.
fn send_runs(shared: &Shared, to: SocketAddr, data: &[u8], lens: &[usize]) {
    for run in gso_runs(lens) {
        shared.send(to, &data[run.start..run.end], run.segment);
    }
}

/// A run of back-to-back datagrams UDP GSO can send at once.
#[derive(Debug, PartialEq, Eq)]
struct GsoRun {
    start: usize,
    end: usize,
    segment: usize,
}

/// Splits datagrams of lengths `lens` (back to back) into GSO runs: equal
/// sizes, a shorter one only at the end, at most 64 segments and 64 KB.
fn gso_runs(lens: &[usize]) -> Vec<GsoRun> {
    let mut runs = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < lens.len() {
        let segment = lens[i];
        let mut end = start + segment;
        let mut count = 1;
        i += 1;
        while i < lens.len()
            && count < udp::MAX_GSO_SEGMENTS
            && lens[i] <= segment
            && end + lens[i] - start <= 65_000
        {
            end += lens[i];
            count += 1;
            i += 1;
            if lens[i - 1] < segment {
                break;
            }
        }
        runs.push(GsoRun {
            start,
            end,
            segment,
        });
        start = end;
    }
    runs
}

/// Decrypts what the peer sends and writes it to the TUN, coalesced.
fn network_to_tun(shared: &Shared) {
    let plain_len = VIRTIO_NET_HDR_LEN + shared.mtu + 64;
    let mut batch = RecvBatch::new(RECV_BATCH);
    let mut plain: Vec<Vec<u8>> = (0..IDEAL_BATCH_SIZE)
        .map(|_| Vec::with_capacity(65_535 + VIRTIO_NET_HDR_LEN))
        .collect();
    let mut gro = GROTable::default();
    let mut replies: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
    while !shared.stop.load(Ordering::Relaxed) {
        match poll(shared.udp.fd(), libc::POLLIN, POLL_MS) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::error!(error = %e, "polling the UDP socket");
                return;
            }
        }
        let count = match batch.recv(&shared.udp) {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "receiving from the network");
                continue;
            }
        };
        let mut ready = 0;
        {
            let mut peer = shared.peer();
            for i in 0..count {
                let Some(received) = batch.get(i) else {
                    continue;
                };
                shared
                    .rx_bytes
                    .fetch_add(received.data.len() as u64, Ordering::Relaxed);
                for datagram in received.data.chunks(received.segment.max(1)) {
                    if ready == plain.len() {
                        drop(peer);
                        flush_tun(shared, &mut gro, &mut plain[..ready]);
                        ready = 0;
                        peer = shared.peer();
                    }
                    let buf = &mut plain[ready];
                    buf.clear();
                    buf.resize(plain_len.max(VIRTIO_NET_HDR_LEN + datagram.len()), 0);
                    if open(&mut peer, received.from, datagram, buf, &mut replies) {
                        ready += 1;
                    }
                }
            }
        }
        for (to, reply) in replies.drain(..) {
            shared.send(to, &reply, reply.len());
        }
        flush_tun(shared, &mut gro, &mut plain[..ready]);
    }
}

/// Decrypts one datagram into `buf` (after the virtio header room); true
/// when `buf` now holds a packet for the TUN. Handshake answers go to `replies`.
fn open(
    peer: &mut PeerState,
    from: SocketAddr,
    datagram: &[u8],
    buf: &mut Vec<u8>,
    replies: &mut Vec<(SocketAddr, Vec<u8>)>,
) -> bool {
    let target = match peer.target(datagram) {
        Ok(t) => t,
        Err(e) => {
            peer.drop_packet(drop_reason(&e));
            return false;
        }
    };
    let result =
        peer.session(target)
            .decapsulate(Some(from.ip()), datagram, &mut buf[VIRTIO_NET_HDR_LEN..]);
    let (packet_len, source) = match result {
        TunnResult::Done => {
            // A keepalive, or a handshake completed with nothing queued.
            finish_handshake(peer, target, from);
            return false;
        }
        TunnResult::Err(e) => {
            if matches!(
                e,
                WireGuardError::WrongIndex | WireGuardError::NoCurrentSession
            ) && peer.should_answer_unknown_session(Instant::now())
            {
                let mut scratch = [0u8; SCRATCH];
                if let TunnResult::WriteToNetwork(init) = peer
                    .current
                    .tunn
                    .format_handshake_initiation(&mut scratch, true)
                {
                    replies.push((from, init.to_vec()));
                }
            }
            if matches!(e, WireGuardError::WrongKey) {
                peer.remember_unknown_init(from, datagram);
            }
            peer.drop_packet(drop_reason(&e));
            return false;
        }
        TunnResult::WriteToNetwork(reply) => {
            replies.push((from, reply.to_vec()));
            // Packets queued while the handshake ran go out now.
            let mut scratch = vec![0u8; 65_535];
            while let TunnResult::WriteToNetwork(queued) =
                peer.session(target).decapsulate(None, &[], &mut scratch)
            {
                replies.push((from, queued.to_vec()));
            }
            finish_handshake(peer, target, from);
            return false;
        }
        TunnResult::WriteToTunnelV4(p, src) => (p.len(), std::net::IpAddr::V4(src)),
        TunnResult::WriteToTunnelV6(p, src) => (p.len(), std::net::IpAddr::V6(src)),
    };
    finish_handshake(peer, target, from);
    if !peer.allows(source) {
        peer.drop_packet("source_not_allowed");
        return false;
    }
    buf.truncate(VIRTIO_NET_HDR_LEN + packet_len);
    true
}

/// An authenticated datagram arrived: follow the peer's address (roaming,
/// restarts) and promote a session for a new key once it works.
fn finish_handshake(peer: &mut PeerState, target: Target, from: SocketAddr) {
    if peer.endpoint != Some(from) {
        tracing::info!(endpoint = %from, "peer endpoint");
        peer.endpoint = Some(from);
    }
    if target == Target::Pending
        && peer
            .session(Target::Pending)
            .time_since_last_handshake()
            .is_some()
    {
        peer.promote();
    }
}

fn flush_tun(shared: &Shared, gro: &mut GROTable, packets: &mut [Vec<u8>]) {
    if packets.is_empty() {
        return;
    }
    if let Err(e) = shared.tun.send_multiple(gro, packets, VIRTIO_NET_HDR_LEN) {
        tracing::debug!(error = %e, "writing to the TUN");
    }
}

/// Handshake retries, rekeying and keepalives, every [`TIMER_TICK`].
fn timers(shared: &Shared) {
    let mut scratch = vec![0u8; SCRATCH];
    while !shared.stop.load(Ordering::Relaxed) {
        std::thread::sleep(TIMER_TICK);
        let (to_send, endpoint) = {
            let mut peer = shared.peer();
            (peer.on_timer(Instant::now(), &mut scratch), peer.endpoint)
        };
        if let Some(to) = endpoint {
            for p in to_send {
                shared.send(to, &p, p.len());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cidr;

    const A_ADDR: &str = "198.18.10.1:51820";
    const B_ADDR: &str = "198.18.10.2:40000";

    /// An IPv4 packet from `src` the way the TUN would hand it over.
    fn ipv4_packet(src: [u8; 4]) -> Vec<u8> {
        let mut p = vec![0u8; 28];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&28u16.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&[198, 19, 255, 1]);
        p
    }

    fn allowed(addr: &str) -> Vec<Cidr> {
        vec![addr.parse().unwrap()]
    }

    /// Hands `datagrams` to `to` as if from `from`; returns its replies and
    /// how many packets it delivered to its TUN.
    fn deliver(to: &mut PeerState, from: &str, datagrams: Vec<Vec<u8>>) -> (Vec<Vec<u8>>, usize) {
        let from: SocketAddr = from.parse().unwrap();
        let mut replies = Vec::new();
        let mut delivered = 0;
        for d in datagrams {
            let mut buf = vec![0u8; VIRTIO_NET_HDR_LEN + 2048];
            if open(to, from, &d, &mut buf, &mut replies) {
                delivered += 1;
            }
        }
        (replies.into_iter().map(|(_, r)| r).collect(), delivered)
    }

    fn seal(from: &mut PeerState, packet: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; 2048];
        match from.current.tunn.encapsulate(packet, &mut out) {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("no session to send on: {other:?}"),
        }
    }

    /// Server A and client B with a working session.
    fn connected_pair() -> (PeerState, PeerState) {
        let (a_key, b_key) = (PrivateKey::generate(), PrivateKey::generate());
        let mut a = PeerState::new(
            a_key.clone(),
            b_key.public_key(),
            None,
            allowed("198.19.255.2/32"),
            None,
        );
        let mut b = PeerState::new(
            b_key,
            a_key.public_key(),
            Some(A_ADDR.parse().unwrap()),
            allowed("198.19.255.1/32"),
            None,
        );
        let mut scratch = vec![0u8; 256];
        let init = match b
            .current
            .tunn
            .format_handshake_initiation(&mut scratch, false)
        {
            TunnResult::WriteToNetwork(d) => d.to_vec(),
            other => panic!("{other:?}"),
        };
        let (response, _) = deliver(&mut a, B_ADDR, vec![init]);
        let (keepalive, _) = deliver(&mut b, A_ADDR, response);
        let (_, _) = deliver(&mut a, B_ADDR, keepalive);
        let data = seal(&mut b, &ipv4_packet([198, 19, 255, 2]));
        assert_eq!(deliver(&mut a, B_ADDR, vec![data]).1, 1, "B reaches A");
        assert_eq!(a.endpoint, Some(B_ADDR.parse().unwrap()));
        (a, b)
    }

    #[test]
    fn a_rotated_key_is_in_use_after_one_handshake() {
        let (mut a, mut b) = connected_pair();
        let next = PrivateKey::generate();
        // A publishes its next key; B prepares a session for it and keeps
        // the working one. Its initiation cannot be read by A yet.
        let early = b.peer_key_changed(next.public_key());
        assert!(b.pending.is_some());
        let (replies, _) = deliver(&mut a, B_ADDR, early.into_iter().map(|(_, d)| d).collect());
        assert!(replies.is_empty());
        let data = seal(&mut b, &ipv4_packet([198, 19, 255, 2]));
        assert_eq!(
            deliver(&mut a, B_ADDR, vec![data]).1,
            1,
            "the old session still works"
        );

        // A switches: one handshake, then data flows under the new key.
        let mut scratch = vec![0u8; 256];
        let init = a
            .own_key_changed(next.clone(), &mut scratch)
            .unwrap()
            .to_vec();
        let (response, _) = deliver(&mut b, A_ADDR, vec![init]);
        assert_eq!(response.len(), 1, "B answers A's new key");
        let (keepalive, _) = deliver(&mut a, B_ADDR, response);
        let (_, _) = deliver(&mut b, A_ADDR, keepalive);
        assert!(b.pending.is_none(), "B promoted the new session");
        assert_eq!(b.current.peer_key, next.public_key());
        let data = seal(&mut b, &ipv4_packet([198, 19, 255, 2]));
        assert_eq!(
            deliver(&mut a, B_ADDR, vec![data]).1,
            1,
            "B reaches A under the new key"
        );
        let back = seal(&mut a, &ipv4_packet([198, 19, 255, 1]));
        assert_eq!(
            deliver(&mut b, A_ADDR, vec![back]).1,
            1,
            "A reaches B under the new key"
        );
    }

    #[test]
    fn packets_from_addresses_the_peer_does_not_own_are_dropped() {
        let (mut a, mut b) = connected_pair();
        let spoofed = seal(&mut b, &ipv4_packet([198, 19, 0, 99]));
        assert_eq!(deliver(&mut a, B_ADDR, vec![spoofed.clone()]).1, 0);
        assert_eq!(a.drops.get("source_not_allowed"), Some(&1));
        // The same datagram again is a replay.
        assert_eq!(deliver(&mut a, B_ADDR, vec![spoofed]).1, 0);
        assert_eq!(a.drops.get("replayed_data"), Some(&1));
    }

    #[test]
    fn a_restarted_server_answers_the_old_session_with_a_handshake() {
        let (a, mut b) = connected_pair();
        // A restarts with the same key: it knows none of B's sessions.
        let mut restarted = PeerState::new(
            a.own_key.clone(),
            b.own_key.public_key(),
            None,
            allowed("198.19.255.2/32"),
            None,
        );
        let stale = seal(&mut b, &ipv4_packet([198, 19, 255, 2]));
        let (replies, delivered) = deliver(&mut restarted, B_ADDR, vec![stale]);
        assert_eq!(delivered, 0);
        assert_eq!(replies.len(), 1, "a handshake initiation goes back at once");
        let (response, _) = deliver(&mut b, A_ADDR, replies);
        let (keepalive, _) = deliver(&mut restarted, B_ADDR, response);
        assert!(keepalive.is_empty() || keepalive.len() == 1);
        let (_, _) = deliver(&mut b, A_ADDR, keepalive);
        let data = seal(&mut b, &ipv4_packet([198, 19, 255, 2]));
        assert_eq!(
            deliver(&mut restarted, B_ADDR, vec![data]).1,
            1,
            "the tunnel is back"
        );
    }

    /// A client whose first initiation reaches a server that is not
    /// configured yet (not listening, or without the client's key) reaches
    /// it again soon after the server is ready, not WireGuard's 5 s later.
    #[test]
    fn a_first_handshake_lost_to_an_unready_server_is_retried_within_a_second() {
        let (a_key, b_key) = (PrivateKey::generate(), PrivateKey::generate());
        let start = Instant::now();
        let mut b = PeerState::new(
            b_key.clone(),
            a_key.public_key(),
            Some(A_ADDR.parse().unwrap()),
            allowed("198.19.255.1/32"),
            None,
        );
        // The first packet queues behind a handshake whose initiation is lost.
        let mut out = vec![0u8; 2048];
        assert!(matches!(
            b.current
                .tunn
                .encapsulate(&ipv4_packet([198, 19, 255, 2]), &mut out),
            TunnResult::WriteToNetwork(_)
        ));
        let server_ready = Duration::from_millis(400);
        let mut a: Option<PeerState> = None;
        let mut scratch = vec![0u8; SCRATCH];
        let mut delivered_at = None;
        let mut sent = 0;
        let mut now = start;
        while now < start + Duration::from_secs(3) && delivered_at.is_none() {
            now += TIMER_TICK;
            if a.is_none() && now - start >= server_ready {
                a = Some(PeerState::new(
                    a_key.clone(),
                    b_key.public_key(),
                    None,
                    allowed("198.19.255.2/32"),
                    None,
                ));
            }
            let datagrams = b.on_timer(now, &mut scratch);
            sent += datagrams.len();
            let Some(server) = a.as_mut() else {
                continue; // lost: nobody listens yet
            };
            let (response, _) = deliver(server, B_ADDR, datagrams);
            let (to_server, _) = deliver(&mut b, A_ADDR, response);
            if deliver(server, B_ADDR, to_server).1 > 0 {
                delivered_at = Some(now - start);
            }
        }
        let delivered_at = delivered_at.expect("the queued packet reaches the server");
        assert!(
            delivered_at < server_ready + Duration::from_millis(600),
            "first packet {delivered_at:?} after start, the server being ready after {server_ready:?}"
        );
        assert!(sent <= 6, "{sent} datagrams: no flooding");
    }

    fn run(start: usize, end: usize, segment: usize) -> GsoRun {
        GsoRun {
            start,
            end,
            segment,
        }
    }

    #[test]
    fn equal_datagrams_go_in_one_run_and_a_short_one_ends_it() {
        assert_eq!(gso_runs(&[100, 100, 100, 40]), [run(0, 340, 100)]);
        assert_eq!(
            gso_runs(&[100, 40, 100]),
            [run(0, 140, 100), run(140, 240, 100)]
        );
        // A bigger datagram (a handshake among data) starts a new run.
        assert_eq!(
            gso_runs(&[92, 148, 148]),
            [run(0, 92, 92), run(92, 388, 148)]
        );
        assert!(gso_runs(&[]).is_empty());
    }

    #[test]
    fn runs_respect_the_kernel_limits() {
        let lens = vec![1452; 100];
        let runs = gso_runs(&lens);
        assert!(runs.iter().all(|r| r.end - r.start <= 65_000));
        assert!(runs
            .iter()
            .all(|r| (r.end - r.start) / r.segment <= udp::MAX_GSO_SEGMENTS));
        assert_eq!(runs.last().map(|r| r.end), Some(1452 * 100));
        let small = vec![100; 200];
        assert_eq!(gso_runs(&small).len(), 4, "64 segments per run at most");
    }
}
