//! Two clusters whose pods use the same CIDR, joined through two gateways
//! running the NAT programs (driven by `strait-fabric nat`):
//!
//! ```text
//! podA 198.18.10.2 ─ gwA ══ 198.18.200.0/30 ══ gwB ─ podB 198.18.10.2
//! ```
//!
//! Each side knows the other's pods as 198.19.10.0/24: a gateway rewrites
//! the source of what leaves towards the peer (198.18.10.x → 198.19.10.x) and
//! the destination of what arrives from it (198.19.10.x → 198.18.10.x).
//! UDP, TCP and ICMP echo must work across, and a time-exceeded error
//! raised by gwB must reach podA's socket translated back. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    time::{Duration, Instant},
};

use strait_common::DropReason;
use strait_dataplane::{bpffs::PinDir, drops::DropCounts};
use strait_testbed::{bpffs::TestPinDir, FabricCli, NetNs, Veth};

type TestResult = Result<(), Box<dyn std::error::Error>>;

/// The pod address in both clusters.
const POD: Ipv4Addr = Ipv4Addr::new(198, 18, 10, 2);
/// The other cluster's pod, as each side knows it.
const REMOTE_POD: Ipv4Addr = Ipv4Addr::new(198, 19, 10, 2);
const GW_A_TRANSIT: &str = "198.18.200.1";
const GW_B_TRANSIT: Ipv4Addr = Ipv4Addr::new(198, 18, 200, 2);
const TIMEOUT: Duration = Duration::from_secs(3);

/// The same table on both gateways, once as a whole object (admitted like
/// the API server would) and once as a bare spec.
const NAT_OBJECT: &str = r#"
apiVersion: networking.strait.dev/v1beta1
kind: NatConfiguration
metadata: {name: peer, namespace: strait}
spec:
  prefixes:
    - {direction: Source, from: 198.18.10.0/24, to: 198.19.10.0/24}
    - {direction: Destination, from: 198.19.10.0/24, to: 198.18.10.0/24}
"#;
const NAT_SPEC: &str = r#"
prefixes:
  - {direction: Source, from: 198.18.10.0/24, to: 198.19.10.0/24}
  - {direction: Destination, from: 198.19.10.0/24, to: 198.18.10.0/24}
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

impl Clusters {
    fn new() -> Result<Self, Box<dyn std::error::Error>> {
        let c = Clusters {
            pod_a: NetNs::new("nat-pod-a")?,
            gw_a: NetNs::new("nat-gw-a")?,
            gw_b: NetNs::new("nat-gw-b")?,
            pod_b: NetNs::new("nat-pod-b")?,
        };
        Veth::pair(
            (&c.pod_a, "eth0", &["198.18.10.2/24"]),
            (&c.gw_a, "pods", &["198.18.10.1/24"]),
        )?;
        Veth::pair(
            (&c.pod_b, "eth0", &["198.18.10.2/24"]),
            (&c.gw_b, "pods", &["198.18.10.1/24"]),
        )?;
        Veth::pair(
            (&c.gw_a, "peer", &["198.18.200.1/30"]),
            (&c.gw_b, "peer", &["198.18.200.2/30"]),
        )?;
        for pod in [&c.pod_a, &c.pod_b] {
            pod.ip(&["route", "add", "default", "via", "198.18.10.1"])?;
        }
        c.gw_a
            .ip(&["route", "add", "198.19.10.0/24", "via", "198.18.200.2"])?;
        c.gw_b
            .ip(&["route", "add", "198.19.10.0/24", "via", GW_A_TRANSIT])?;
        for gw in [&c.gw_a, &c.gw_b] {
            sysctl(gw, "net.ipv4.ip_forward", "1")?;
            // Sources arrive already translated; strict reverse-path checks
            // belong to the real gateway's routing, not to this bed.
            sysctl(gw, "net.ipv4.conf.all.rp_filter", "0")?;
            sysctl(gw, "net.ipv4.conf.peer.rp_filter", "0")?;
        }
        Ok(c)
    }
}

/// Applies the table on a gateway and attaches the programs to its peer side.
fn start_gateway(fabric: &FabricCli, config: &TempFile) -> TestResult {
    let config = config.0.to_str().ok_or("non-UTF-8 temp path")?;
    let applied = fabric.run(&["nat", "apply", "--config", config])?;
    assert!(applied.starts_with("applied 2 NAT entries"), "{applied}");
    let attached = fabric.run(&["nat", "attach", "--iface", "peer"])?;
    assert_eq!(attached.lines().count(), 2, "{attached}");
    let shown = fabric.run(&["nat", "show"])?;
    assert!(
        shown.contains("destination 198.19.10.0/24 -> 198.18.10.0/24"),
        "{shown}"
    );
    assert!(
        shown.contains("source 198.18.10.0/24 -> 198.19.10.0/24"),
        "{shown}"
    );
    Ok(())
}

#[test]
fn overlapping_clusters_talk_through_the_remap() -> TestResult {
    let c = Clusters::new()?;
    let pins_a = TestPinDir::new("nat-gw-a")?;
    let pins_b = TestPinDir::new("nat-gw-b")?;
    let fabric_a = FabricCli::new(&c.gw_a, pins_a.path())?;
    let fabric_b = FabricCli::new(&c.gw_b, pins_b.path())?;
    let object = TempFile::new("object", NAT_OBJECT)?;
    let spec = TempFile::new("spec", NAT_SPEC)?;
    start_gateway(&fabric_a, &object)?;
    start_gateway(&fabric_b, &spec)?;

    udp_round_trip(&c)?;
    tcp_round_trip(&c)?;
    ping(&c)?;
    time_exceeded_comes_back(&c)?;

    // Nothing was dropped on the way.
    for pins in [&pins_a, &pins_b] {
        let drops = DropCounts::read_pinned(&PinDir::open(pins.path())?)?;
        assert_eq!(drops.total(), 0, "unexpected drops: {drops:?}");
        assert_eq!(drops.get(DropReason::NatRewriteFailed), 0);
    }
    Ok(())
}

/// podA → podB and back: podB sees podA as 198.19.10.2, and podA gets the
/// reply from the address it sent to.
fn udp_round_trip(c: &Clusters) -> TestResult {
    let server = c.pod_b.enter(|| UdpSocket::bind((POD, 7000)))??;
    server.set_read_timeout(Some(TIMEOUT))?;
    let client = c.pod_a.enter(|| UdpSocket::bind((POD, 0)))??;
    client.set_read_timeout(Some(TIMEOUT))?;
    let client_port = client.local_addr()?.port();
    client.send_to(b"hello over the remap", (REMOTE_POD, 7000))?;
    let mut buf = [0u8; 64];
    let (len, from) = server.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"hello over the remap");
    assert_eq!(
        from,
        SocketAddr::from((REMOTE_POD, client_port)),
        "podB sees podA remapped"
    );
    server.send_to(b"hello back", from)?;
    let (len, from) = client.recv_from(&mut buf)?;
    assert_eq!(&buf[..len], b"hello back");
    assert_eq!(
        from,
        SocketAddr::from((REMOTE_POD, 7000)),
        "the reply comes from where we sent"
    );
    Ok(())
}

fn tcp_round_trip(c: &Clusters) -> TestResult {
    let listener = c.pod_b.enter(|| TcpListener::bind((POD, 7001)))??;
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
    let remote = SocketAddr::from((REMOTE_POD, 7001));
    let mut stream = c
        .pod_a
        .enter(|| TcpStream::connect_timeout(&remote, TIMEOUT))??;
    stream.set_read_timeout(Some(TIMEOUT))?;
    stream.write_all(b"strait-tcp!")?;
    let mut reply = [0u8; 11];
    stream.read_exact(&mut reply)?;
    assert_eq!(&reply, b"!pct-tiarts");
    let (peer, request) = server.join().map_err(|_| "TCP server panicked")??;
    assert_eq!(request, b"strait-tcp!");
    assert_eq!(peer.ip(), REMOTE_POD, "podB sees podA remapped");
    Ok(())
}

fn ping(c: &Clusters) -> TestResult {
    let out = c
        .pod_a
        .command("ping")
        .args(["-n", "-c", "3", "-i", "0.2", "-W", "2", "-w", "5"])
        .arg(REMOTE_POD.to_string())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ping failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("3 received"), "{stdout}");
    assert!(stdout.contains(&format!("from {REMOTE_POD}")), "{stdout}");
    Ok(())
}

/// A datagram with TTL 2 dies at gwB. gwB's error quotes the datagram as it
/// saw it (destination already translated to 198.18.10.2); only if both
/// gateways translate the quoted packet back does the error match podA's
/// connected socket, which then reports EHOSTUNREACH.
fn time_exceeded_comes_back(c: &Clusters) -> TestResult {
    let socket = c.pod_a.enter(|| UdpSocket::bind((POD, 0)))??;
    socket.set_read_timeout(Some(TIMEOUT))?;
    socket.connect((REMOTE_POD, 7002))?;
    enable_recverr(&socket)?;
    socket.set_ttl(2)?;
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
    let origin = offender_of_last_error(&socket)?;
    assert_eq!(
        origin, GW_B_TRANSIT,
        "the error names the router that raised it"
    );
    Ok(())
}

fn enable_recverr(socket: &UdpSocket) -> std::io::Result<()> {
    use std::os::fd::AsRawFd as _;
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int we own for the length we pass.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_RECVERR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads the ICMP error queued on `socket` (IP_RECVERR) and returns the
/// address of the host that sent it, checking it is a time exceeded.
fn offender_of_last_error(socket: &UdpSocket) -> Result<Ipv4Addr, Box<dyn std::error::Error>> {
    use std::os::fd::AsRawFd as _;
    let mut data = [0u8; 128];
    let mut control = [0u8; 256];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below are to
    // buffers that outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = control.len();
    // SAFETY: recvmsg writes only into the buffers described by `msg`.
    let rc = unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, libc::MSG_ERRQUEUE) };
    if rc < 0 {
        return Err(format!(
            "reading the error queue: {}",
            std::io::Error::last_os_error()
        )
        .into());
    }
    // SAFETY: CMSG_FIRSTHDR/NXTHDR walk the control buffer the kernel filled,
    // bounded by msg_controllen; each header is checked before its data is read.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::IPPROTO_IP && (*cmsg).cmsg_type == libc::IP_RECVERR {
                let ee = libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err;
                let ee = std::ptr::read_unaligned(ee);
                assert_eq!(ee.ee_origin, libc::SO_EE_ORIGIN_ICMP, "an ICMP error");
                assert_eq!(
                    (ee.ee_type, ee.ee_code),
                    (11, 0),
                    "time exceeded in transit"
                );
                let offender = libc::CMSG_DATA(cmsg)
                    .add(std::mem::size_of::<libc::sock_extended_err>())
                    as *const libc::sockaddr_in;
                let offender = std::ptr::read_unaligned(offender);
                return Ok(Ipv4Addr::from(u32::from_be(offender.sin_addr.s_addr)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Err("no IP_RECVERR message in the error queue".into())
}
