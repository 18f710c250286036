//! Two clusters whose pods use the same CIDR, joined through two gateways
//! running the NAT programs (driven by `strait-fabric nat`):
//!
//! ```text
//! podA 198.18.10.2 ─ gwA ══ 198.18.200.0/30 ══ gwB ─ podB 198.18.10.2
//!      fd00:18:10::2         fd00:18:200::/64          fd00:18:10::2
//! ```
//!
//! A knows B's pods as 198.19.10.0/24 (fd00:19:10::/64), B knows A's as
//! 198.19.30.0/24 (fd00:19:30::/64). In the own-view setup each gateway has
//! only its own Destination mapping of the peer's pods, as the network
//! module renders it, and knows nothing of the peer's choice: between the
//! gateways packets carry the real pod addresses. In the exposed setup each
//! gateway instead has a Source mapping exposing its pods under the address
//! the peer knows them by (Liqo's way, which needs the peer's choice).
//! UDP, TCP and ICMP echo must work across either way, and a time-exceeded
//! error raised by gwB must reach podA's socket translated back, over IPv4
//! and IPv6. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use strait_common::DropReason;
use strait_dataplane::{bpffs::PinDir, drops::DropCounts};
use strait_testbed::{
    bpffs::TestPinDir,
    icmp_errors::{last_icmp_error, set_int_option},
    FabricCli, NetNs, Veth,
};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The pod address in both clusters.
const POD: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// B's pod as A knows it, and A's pod as B knows it.
const B_SEEN_BY_A: Ipv4Addr = Ipv4Addr::new(198, 19, 10, 2);
const A_SEEN_BY_B: Ipv4Addr = Ipv4Addr::new(198, 19, 30, 2);
const GW_A_TRANSIT: &str = "198.18.200.1";
const GW_B_TRANSIT: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const POD6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0x10, 0, 0, 0, 0, 2);
const B_SEEN_BY_A6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0x10, 0, 0, 0, 0, 2);
const A_SEEN_BY_B6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x19, 0x30, 0, 0, 0, 0, 2);
const GW_A_TRANSIT6: &str = "fd00:18:200::1";
const GW_B_TRANSIT6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x18, 0x200, 0, 0, 0, 0, 2);
const TIMEOUT: Duration = Duration::from_secs(3);

/// gwA's own view of B's pods, as a whole object (admitted like the API
/// server would); gwB's of A's pods as a bare spec.
const OWN_VIEW_A: &str = r#"
apiVersion: networking.strait.dev/v1beta1
kind: NatConfiguration
metadata: {name: peer, namespace: strait}
spec:
  prefixes:
    - {direction: Destination, from: 198.19.10.0/24, to: 198.18.10.0/24}
    - {direction: Destination, from: "fd00:19:10::/64", to: "fd00:18:10::/64"}
"#;
const OWN_VIEW_B: &str = r#"
prefixes:
  - {direction: Destination, from: 198.19.30.0/24, to: 198.18.10.0/24}
  - {direction: Destination, from: "fd00:19:30::/64", to: "fd00:18:10::/64"}
"#;
/// Each gateway exposes its pods as the peer knows them.
const EXPOSED_A: &str = r#"
prefixes:
  - {direction: Source, from: 198.18.10.0/24, to: 198.19.30.0/24}
  - {direction: Source, from: "fd00:18:10::/64", to: "fd00:19:30::/64"}
"#;
const EXPOSED_B: &str = r#"
prefixes:
  - {direction: Source, from: 198.18.10.0/24, to: 198.19.10.0/24}
  - {direction: Source, from: "fd00:18:10::/64", to: "fd00:19:10::/64"}
"#;

/// A config file removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(label: &str, content: &str) -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("strait-nat-{}-{label}.yaml", std::process::id()));
        std::fs::write(&path, content)?;
        Ok(TempFile(path))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Clusters {
    pod_a: NetNs,
    gw_a: NetNs,
    gw_b: NetNs,
    pod_b: NetNs,
}

fn sysctl(ns: &NetNs, key: &str, value: &str) -> TestResult {
    let path = format!("/proc/sys/{}", key.replace('.', "/"));
    ns.enter(|| std::fs::write(&path, value))??;
    Ok(())
}

/// What joins the two gateways: a veth (an Ethernet link), or a tun device
/// on each side relayed by this process (an L3-only link, the way a
/// userspace WireGuard would carry it).
#[derive(Clone, Copy, Debug)]
enum Transit {
    Veth,
    Tun,
}

impl Clusters {
    fn new(transit: Transit) -> Result<(Self, Option<TunRelay>), Box<dyn std::error::Error>> {
        let c = Clusters {
            pod_a: NetNs::new("nat-pod-a")?,
            gw_a: NetNs::new("nat-gw-a")?,
            gw_b: NetNs::new("nat-gw-b")?,
            pod_b: NetNs::new("nat-pod-b")?,
        };
        let pod_addrs: &[&str] = &["198.18.10.2/24", "fd00:18:10::2/64"];
        let gw_pod_side: &[&str] = &["198.18.10.1/24", "fd00:18:10::1/64"];
        Veth::pair(
            (&c.pod_a, "eth0", pod_addrs),
            (&c.gw_a, "pods", gw_pod_side),
        )?;
        Veth::pair(
            (&c.pod_b, "eth0", pod_addrs),
            (&c.gw_b, "pods", gw_pod_side),
        )?;
        for pod in [&c.pod_a, &c.pod_b] {
            pod.ip(&["route", "add", "default", "via", "198.18.10.1"])?;
            pod.ip(&["-6", "route", "add", "default", "via", "fd00:18:10::1"])?;
        }
        let tunnel = match transit {
            Transit::Veth => {
                Veth::pair(
                    (&c.gw_a, "peer", &["198.18.200.1/30", "fd00:18:200::1/64"]),
                    (&c.gw_b, "peer", &["198.18.200.2/30", "fd00:18:200::2/64"]),
                )?;
                None
            }
            Transit::Tun => {
                let relay = TunRelay::new(&c.gw_a, &c.gw_b)?;
                for (gw, v4, v6) in [
                    (&c.gw_a, "198.18.200.1/30", "fd00:18:200::1/64"),
                    (&c.gw_b, "198.18.200.2/30", "fd00:18:200::2/64"),
                ] {
                    gw.ip(&["addr", "add", v4, "dev", "peer"])?;
                    gw.ip(&["addr", "add", v6, "dev", "peer", "nodad"])?;
                    gw.ip(&["link", "set", "peer", "up"])?;
                }
                Some(relay)
            }
        };
        // Each side routes the peer's pods, as it knows them, to the peer.
        for (gw, peer_v4, next_v4, peer_v6, next_v6) in [
            (
                &c.gw_a,
                "198.19.10.0/24",
                "198.18.200.2",
                "fd00:19:10::/64",
                "fd00:18:200::2",
            ),
            (
                &c.gw_b,
                "198.19.30.0/24",
                GW_A_TRANSIT,
                "fd00:19:30::/64",
                GW_A_TRANSIT6,
            ),
        ] {
            gw.ip(&["route", "add", peer_v4, "via", next_v4, "dev", "peer"])?;
            gw.ip(&["-6", "route", "add", peer_v6, "via", next_v6, "dev", "peer"])?;
        }
        for gw in [&c.gw_a, &c.gw_b] {
            sysctl(gw, "net.ipv4.ip_forward", "1")?;
            sysctl(gw, "net.ipv6.conf.all.forwarding", "1")?;
            // Sources arrive already translated; strict reverse-path checks
            // belong to the real gateway's routing, not to this bed.
            sysctl(gw, "net.ipv4.conf.all.rp_filter", "0")?;
            sysctl(gw, "net.ipv4.conf.peer.rp_filter", "0")?;
        }
        Ok((c, tunnel))
    }
}

/// A tun device named `peer` in each gateway, joined by two threads of this
/// process copying packets between them; stopped and closed (which deletes
/// the devices) on drop.
struct TunRelay {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Opens /dev/net/tun as an IFF_TUN device named `peer` in `ns`.
fn open_tun(ns: &NetNs) -> Result<std::fs::File, Box<dyn std::error::Error>> {
    let file = ns.enter(|| -> std::io::Result<std::fs::File> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")?;
        // SAFETY: an all-zero ifreq is valid; the name is shorter than IFNAMSIZ.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (dst, src) in request.ifr_name.iter_mut().zip(b"peer") {
            *dst = *src as libc::c_char;
        }
        request.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads and writes only `request`, on a tun fd we own.
        if unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut request) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(file)
    })??;
    Ok(file)
}

/// Copies packets from `from` to `to` until `stop` is set; polls so that it
/// never blocks longer than 50 ms.
fn relay(from: std::fs::File, mut to: std::fs::File, stop: &std::sync::atomic::AtomicBool) {
    use std::io::Read as _;
    let mut from = from;
    let mut packet = vec![0u8; 65_536];
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let mut poll = libc::pollfd {
            fd: from.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll reads and writes the one pollfd we own.
        if unsafe { libc::poll(&mut poll, 1, 50) } <= 0 {
            continue;
        }
        match from.read(&mut packet) {
            // A lost packet is what a tunnel may do; the tests retry or fail.
            Ok(len) => {
                let _ = to.write(&packet[..len]);
            }
            Err(_) => return,
        }
    }
}

impl TunRelay {
    fn new(gw_a: &NetNs, gw_b: &NetNs) -> Result<Self, Box<dyn std::error::Error>> {
        let a = open_tun(gw_a)?;
        let b = open_tun(gw_b)?;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        for (from, to) in [(a.try_clone()?, b.try_clone()?), (b, a)] {
            let stop = stop.clone();
            threads.push(std::thread::spawn(move || relay(from, to, &stop)));
        }
        Ok(TunRelay { stop, threads })
    }
}

impl Drop for TunRelay {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Applies the table on a gateway and attaches the programs to its peer
/// side, checking the variant chosen for the link type and the tables.
fn start_gateway(
    fabric: &FabricCli,
    config: &TempFile,
    program: &str,
    tables: &[&str],
) -> TestResult {
    let config = config.0.to_str().ok_or("non-UTF-8 temp path")?;
    let applied = fabric.run(&["nat", "apply", "--config", config])?;
    assert!(applied.starts_with("applied 2 NAT entries"), "{applied}");
    let attached = fabric.run(&["nat", "attach", "--iface", "peer"])?;
    assert_eq!(attached.lines().count(), 2, "{attached}");
    assert!(
        attached.contains(&format!("attached {program}_ingress")),
        "{attached}"
    );
    assert!(
        attached.contains(&format!("attached {program}_egress")),
        "{attached}"
    );
    let shown = fabric.run(&["nat", "show"])?;
    assert!(shown.contains("4 ranges"), "{shown}");
    for entry in tables {
        assert!(shown.contains(entry), "{entry} missing from:\n{shown}");
    }
    Ok(())
}

/// Which mappings the gateways have.
#[derive(Clone, Copy, Debug)]
enum Mappings {
    /// Each its own Destination mapping of the peer's pods.
    OwnView,
    /// Each a Source mapping exposing its pods as the peer knows them.
    Exposed,
}

#[test]
fn overlapping_clusters_talk_through_their_own_remaps() -> TestResult {
    talk_across(Transit::Veth, "strait_nat", Mappings::OwnView)
}

#[test]
fn overlapping_clusters_talk_through_their_own_remaps_over_an_l3_tunnel() -> TestResult {
    talk_across(Transit::Tun, "strait_nat_l3", Mappings::OwnView)
}

#[test]
fn overlapping_clusters_talk_through_exposed_ranges() -> TestResult {
    talk_across(Transit::Veth, "strait_nat", Mappings::Exposed)
}

fn talk_across(transit: Transit, program: &str, mappings: Mappings) -> TestResult {
    let (c, _relay) = Clusters::new(transit)?;
    let pins_a = TestPinDir::new("nat-gw-a")?;
    let pins_b = TestPinDir::new("nat-gw-b")?;
    let fabric_a = FabricCli::new(&c.gw_a, pins_a.path())?;
    let fabric_b = FabricCli::new(&c.gw_b, pins_b.path())?;
    match mappings {
        Mappings::OwnView => {
            start_gateway(
                &fabric_a,
                &TempFile::new("own-a", OWN_VIEW_A)?,
                program,
                &[
                    "egress destination 198.19.10.0/24 -> 198.18.10.0/24",
                    "ingress source 198.18.10.0/24 -> 198.19.10.0/24",
                    "egress destination fd00:19:10::/64 -> fd00:18:10::/64",
                    "ingress source fd00:18:10::/64 -> fd00:19:10::/64",
                ],
            )?;
            start_gateway(
                &fabric_b,
                &TempFile::new("own-b", OWN_VIEW_B)?,
                program,
                &[
                    "egress destination 198.19.30.0/24 -> 198.18.10.0/24",
                    "ingress source 198.18.10.0/24 -> 198.19.30.0/24",
                ],
            )?;
        }
        Mappings::Exposed => {
            start_gateway(
                &fabric_a,
                &TempFile::new("exposed-a", EXPOSED_A)?,
                program,
                &[
                    "egress source 198.18.10.0/24 -> 198.19.30.0/24",
                    "ingress destination 198.19.30.0/24 -> 198.18.10.0/24",
                    "egress source fd00:18:10::/64 -> fd00:19:30::/64",
                    "ingress destination fd00:19:30::/64 -> fd00:18:10::/64",
                ],
            )?;
            start_gateway(
                &fabric_b,
                &TempFile::new("exposed-b", EXPOSED_B)?,
                program,
                &["egress source 198.18.10.0/24 -> 198.19.10.0/24"],
            )?;
        }
    }

    for view in [
        Views {
            pod: IpAddr::from(POD),
            b_seen_by_a: IpAddr::from(B_SEEN_BY_A),
            a_seen_by_b: IpAddr::from(A_SEEN_BY_B),
        },
        Views {
            pod: POD6.into(),
            b_seen_by_a: B_SEEN_BY_A6.into(),
            a_seen_by_b: A_SEEN_BY_B6.into(),
        },
    ] {
        let router = if view.pod.is_ipv4() {
            IpAddr::from(GW_B_TRANSIT)
        } else {
            GW_B_TRANSIT6.into()
        };
        udp_round_trip(&c, &view)?;
        tcp_round_trip(&c, &view)?;
        ping(&c, view.b_seen_by_a)?;
        time_exceeded_comes_back(&c, view.pod, view.b_seen_by_a, router)?;
    }

    // Nothing was dropped on the way.
    for pins in [&pins_a, &pins_b] {
        let drops = DropCounts::read_pinned(&PinDir::open(pins.path())?)?;
        assert_eq!(drops.total(), 0, "unexpected drops: {drops:?}");
        assert_eq!(drops.get(DropReason::NatRewriteFailed), 0);
    }
    Ok(())
}

/// The pods' address (the same on both sides) and how each side knows the
/// other's, in one family.
struct Views {
    pod: IpAddr,
    b_seen_by_a: IpAddr,
    a_seen_by_b: IpAddr,
}

/// podA → podB and back: podB sees podA as B knows it, and podA gets the
/// reply from the address it sent to.
fn udp_round_trip(c: &Clusters, view: &Views) -> TestResult {
    let (pod, remote) = (view.pod, view.b_seen_by_a);
    let server = c.pod_b.enter(|| UdpSocket::bind((pod, 7000)))??;
    server.set_read_timeout(Some(TIMEOUT))?;
    let client = c.pod_a.enter(|| UdpSocket::bind((pod, 0)))??;
    client.set_read_timeout(Some(TIMEOUT))?;
    let client_port = client.local_addr()?.port();
    client.send_to(b"hello over the remap", (remote, 7000))?;
    let mut buf = [0u8; 64];
    let (len, from) = server.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"hello over the remap");
    assert_eq!(
        from,
        SocketAddr::from((view.a_seen_by_b, client_port)),
        "podB sees podA remapped"
    );
    server.send_to(b"hello back", from)?;
    let (len, from) = client.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"hello back");
    assert_eq!(
        from,
        SocketAddr::from((remote, 7000)),
        "the reply comes from where we sent"
    );
    Ok(())
}

fn tcp_round_trip(c: &Clusters, view: &Views) -> TestResult {
    let (pod, remote) = (view.pod, view.b_seen_by_a);
    let listener = c.pod_b.enter(|| TcpListener::bind((pod, 7001)))??;
    listener.set_nonblocking(true)?;
    let server = std::thread::spawn(move || -> std::io::Result<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + TIMEOUT;
        let (mut stream, peer) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(TIMEOUT))?;
        let mut request = vec![0u8; 11];
        stream.read_exact(&mut request)?;
        let reply: Vec<u8> = request.iter().rev().copied().collect();
        stream.write_all(&reply)?;
        Ok((peer, request))
    });
    let server_addr = SocketAddr::from((remote, 7001));
    let mut stream = c
        .pod_a
        .enter(|| TcpStream::connect_timeout(&server_addr, TIMEOUT))??;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"strait-tcp!")?;
    let mut reply = [0u8; 11];
    stream.read_exact(&mut reply)?;
    assert_eq!(&reply, b"!pct-tiarts");
    let (peer, request) = server.join().map_err(|_| "TCP server panicked")??;
    assert_eq!(request, b"strait-tcp!");
    assert_eq!(peer.ip(), view.a_seen_by_b, "podB sees podA remapped");
    Ok(())
}

fn ping(c: &Clusters, remote: IpAddr) -> TestResult {
    let out = c
        .pod_a
        .command("ping")
        .args(["-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "5"])
        .arg(remote.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ping failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 received"), "{stdout}");
    assert!(stdout.contains(&format!("from {remote}")), "{stdout}");
    Ok(())
}

/// A datagram with a TTL (hop limit) of 2 dies at gwB. gwB's error quotes
/// the datagram as it saw it (addresses already translated); only if both
/// gateways translate the quoted packet back does the error match podA's
/// connected socket, which then reports EHOSTUNREACH.
fn time_exceeded_comes_back(
    c: &Clusters,
    pod: IpAddr,
    remote: IpAddr,
    router: IpAddr,
) -> TestResult {
    let socket = c.pod_a.enter(|| UdpSocket::bind((pod, 0)))??;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.connect((remote, 7002))?;
    let (level, recverr, hops) = if pod.is_ipv4() {
        (libc::IPPROTO_IP, libc::IP_RECVERR, libc::IP_TTL)
    } else {
        (
            libc::IPPROTO_IPV6,
            libc::IPV6_RECVERR,
            libc::IPV6_UNICAST_HOPS,
        )
    };
    set_int_option(&socket, level, recverr, 1)?;
    set_int_option(&socket, level, hops, 2)?;
    socket.send(b"die at gwB")?;
    let mut buf = [0u8; 64];
    let err = socket
        .recv(&mut buf)
        .expect_err("nothing answers the datagram itself");
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EHOSTUNREACH),
        "expected the translated time exceeded (EHOSTUNREACH), got {err}"
    );
    let error = last_icmp_error(&socket, pod.is_ipv4())?;
    let time_exceeded = if pod.is_ipv4() { (11, 0) } else { (3, 0) };
    assert_eq!(error.kind, time_exceeded, "time exceeded in transit");
    assert_eq!(
        error.from, router,
        "the error names the router that raised it"
    );
    Ok(())
}
