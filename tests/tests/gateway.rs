//! strait-gateway end to end: two gateways in two namespaces over a
//! simulated internet bridge, interoperability with wireguard-go, restarts,
//! roaming, key rotation and hostile input. Needs root.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use strait_api::networking::ConnectionState;
use strait_testbed::{
    gateway::{
        client_config, ping, server_config, underlay_v4, underlay_v6, unique_ifname, Gateway,
        Internet, Scratch, Tunnel, WireguardGo, PLACEHOLDER_KEY,
    },
    netns::run,
    traffic::{tcp_transfer, udp_burst},
    NetNs, Veth,
};

const PORT: u16 = 51820;
const CONNECT_LIMIT: Duration = Duration::from_secs(20);

/// A server namespace (underlay host 1) and a client namespace (host 2) on
/// one internet bridge.
struct Sites {
    internet: Internet,
    server: NetNs,
    client: NetNs,
    scratch: Scratch,
}

impl Sites {
    fn new(label: &str) -> Sites {
        let internet = Internet::new().unwrap();
        let server = NetNs::new("gw-srv").unwrap();
        let client = NetNs::new("gw-cli").unwrap();
        internet.attach(&server, 1).unwrap();
        internet.attach(&client, 2).unwrap();
        Sites {
            internet,
            server,
            client,
            scratch: Scratch::new(label).unwrap(),
        }
    }

    fn server_key_file(&self) -> std::path::PathBuf {
        self.scratch.path("server.pub")
    }

    fn client_key_file(&self) -> std::path::PathBuf {
        self.scratch.path("client.pub")
    }

    fn start_server(&self, args: &[&str], extra: &str) -> Gateway {
        let config = server_config(
            &unique_ifname("gs"),
            PORT,
            &self.client_key_file(),
            &self.server_key_file(),
            &Tunnel,
            extra,
        );
        Gateway::start(&self.server, &self.scratch, "server", &config, args).unwrap()
    }

    fn start_client(&self, server_address: &str, args: &[&str]) -> Gateway {
        self.start_client_with(server_address, args, "")
    }

    /// `tunnel_extra`: more keys of the `tunnel:` block, indented by two.
    fn start_client_with(
        &self,
        server_address: &str,
        args: &[&str],
        tunnel_extra: &str,
    ) -> Gateway {
        let config = client_config(
            &unique_ifname("gc"),
            server_address,
            PORT,
            &self.server_key_file(),
            &self.client_key_file(),
            &Tunnel,
            tunnel_extra,
        );
        Gateway::start(&self.client, &self.scratch, "client", &config, args).unwrap()
    }
}

fn connected(gw: &mut Gateway) -> strait_gateway::GatewayStatus {
    gw.wait_status(CONNECT_LIMIT, |s| {
        s.connection.value == ConnectionState::Connected && s.connection.latency.is_some()
    })
    .unwrap()
}

/// TCP, UDP and ICMP, inner IPv4 and IPv6, client to server.
fn assert_traffic_flows(sites: &Sites) {
    for to in [Tunnel::SERVER_V4, Tunnel::SERVER_V6] {
        assert_eq!(ping(&sites.client, to, 3, "0.2"), 3, "ping {to}");
        let udp: SocketAddr = SocketAddr::new(to.parse().unwrap(), 5001);
        // 64 fit the receiver's default socket buffer, which is read only
        // after the burst.
        let arrived = udp_burst(&sites.client, &sites.server, udp, 64, 1000).unwrap();
        assert_eq!(arrived, 64, "UDP datagrams to {to}");
        let tcp = SocketAddr::new(to.parse().unwrap(), 5002);
        let bytes = 8 << 20;
        assert_eq!(
            tcp_transfer(&sites.client, &sites.server, tcp, bytes).unwrap(),
            bytes as u64,
            "TCP to {to}"
        );
    }
}

#[test]
fn fast_gateways_carry_tcp_udp_and_icmp_over_ipv4_and_ipv6_underlays() {
    for (outer, family_prefix) in [
        (underlay_v4(1), "198.18.10.2:"),
        (underlay_v6(1), "[fd00:10::2]:"),
    ] {
        let sites = Sites::new("fast");
        let mut server = sites.start_server(&["--datapath", "fast"], "");
        let mut client = sites.start_client(&outer, &["--datapath", "fast"]);
        let client_status = connected(&mut client);
        let server_status = connected(&mut server);
        assert_eq!(server_status.backend, "fast");
        assert_eq!(client_status.mtu, 1420);
        assert!(
            server_status
                .peer_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with(family_prefix)),
            "server sees the client at {:?}, expected {family_prefix}…",
            server_status.peer_endpoint
        );
        // Only the public key is published, and it is the one in use.
        let published = std::fs::read_to_string(sites.server_key_file()).unwrap();
        assert_eq!(published.trim(), server_status.public_key);
        assert_traffic_flows(&sites);
        // Packets bigger than the tunnel MTU fail loudly at the sender, never vanish.
        let (ok, said) = ping_df(&sites.client, Tunnel::SERVER_V4, 1420 - 28);
        assert!(ok, "a full-MTU packet crosses: {said}");
        let (ok, said) = ping_df(&sites.client, Tunnel::SERVER_V4, 1420 - 27);
        assert!(!ok && said.contains("mtu=1420"), "{said}");
        // 2 × 8 MiB of TCP and the rest, counted as sent.
        client
            .wait_status(Duration::from_secs(3), |s| s.tx_bytes > 16 << 20)
            .unwrap();
    }
}

/// `ping -M do` (don't fragment) of `size` bytes of payload: whether the
/// echo came back, and what ping said.
fn ping_df(ns: &NetNs, to: &str, size: u32) -> (bool, String) {
    let out = ns
        .command("ping")
        .args([
            "-n",
            "-c",
            "1",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            &size.to_string(),
            to,
        ])
        .output()
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), said)
}

#[test]
fn the_tunnel_mtu_follows_the_path() {
    let sites = Sites::new("mtu");
    // A path of 1380 bytes: 1320 left inside IPv4 + UDP + WireGuard.
    sites
        .client
        .ip(&["link", "set", "eth0", "mtu", "1380"])
        .unwrap();
    let mut server = sites.start_server(&[], "");
    let mut client = sites.start_client(&underlay_v4(1), &[]);
    assert_eq!(connected(&mut client).mtu, 1320);
    connected(&mut server);
    let (ok, said) = ping_df(&sites.client, Tunnel::SERVER_V4, 1320 - 28);
    assert!(ok, "a 1320-byte packet crosses: {said}");
    let (ok, said) = ping_df(&sites.client, Tunnel::SERVER_V4, 1320 - 27);
    assert!(!ok && said.contains("mtu=1320"), "{said}");

    // The path shrinks while running: the tunnel follows within seconds.
    sites
        .client
        .ip(&["link", "set", "eth0", "mtu", "1340"])
        .unwrap();
    client
        .wait_status(Duration::from_secs(10), |s| s.mtu == 1280)
        .unwrap();
    let (ok, said) = ping_df(&sites.client, Tunnel::SERVER_V4, 1280 - 28);
    assert!(ok, "a 1280-byte packet crosses: {said}");
    let (ok, said) = ping_df(&sites.client, Tunnel::SERVER_V4, 1280 - 27);
    assert!(!ok && said.contains("mtu=1280"), "{said}");
}

/// Each gateway learns the other's spec MTU from its probes through the
/// tunnel, and a server fits its own MTU to the family its client really
/// comes over: 1440 fits a 1500-byte IPv4 path (60 bytes of overhead) but
/// not an IPv6 one (80), so a server that assumed IPv6 would report 1420.
#[test]
fn gateways_learn_each_others_spec_mtu_and_a_server_fits_the_ipv4_underlay() {
    for datapath in ["fast", "embedded"] {
        let sites = Sites::new("peer-mtu");
        let args = ["--wireguard", "userspace", "--datapath", datapath];
        let config = server_config(
            &unique_ifname("gs"),
            PORT,
            &sites.client_key_file(),
            &sites.server_key_file(),
            &Tunnel,
            "",
        )
        .replace("server: { endpoint:", "server: { mtu: 1440, endpoint:");
        let mut server =
            Gateway::start(&sites.server, &sites.scratch, "server", &config, &args).unwrap();
        let config = client_config(
            &unique_ifname("gc"),
            &underlay_v4(1),
            PORT,
            &sites.server_key_file(),
            &sites.client_key_file(),
            &Tunnel,
            "",
        )
        .replace("client: { endpoint:", "client: { mtu: 1400, endpoint:");
        let mut client =
            Gateway::start(&sites.client, &sites.scratch, "client", &config, &args).unwrap();
        connected(&mut client);
        let server_status = server
            .wait_status(CONNECT_LIMIT, |s| {
                s.peer_mtu.is_some() && s.underlay.is_some()
            })
            .unwrap();
        assert_eq!(
            server_status.underlay.as_deref(),
            Some("IPv4"),
            "{datapath}"
        );
        assert_eq!(
            server_status.mtu, 1440,
            "{datapath}: fitted to IPv4's overhead"
        );
        assert_eq!(
            server_status.peer_mtu,
            Some(1400),
            "{datapath}: the client's spec"
        );
        let client_status = client
            .wait_status(CONNECT_LIMIT, |s| s.peer_mtu.is_some())
            .unwrap();
        assert_eq!(
            client_status.peer_mtu,
            Some(1440),
            "{datapath}: the server's spec"
        );
        assert_eq!(client_status.mtu, 1400, "{datapath}");
        // The server's interface really has the fitted MTU.
        let link = sites
            .server
            .command("ip")
            .args(["-o", "link", "show", "dev", &server_status.interface])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&link.stdout).to_string();
        assert!(link.contains(" mtu 1440 "), "{datapath}: {link}");
    }
}

/// The embedded (boringtun) datapath follows the shared first-handshake
/// schedule: a client whose first initiations reach a server not running
/// yet connects within about a second of the server starting, not after
/// WireGuard's 5 s retry.
#[test]
fn an_embedded_client_reaches_a_late_server_without_waiting_for_rekey_timeout() {
    let sites = Sites::new("late-server");
    // The server's key is known before it runs, so the client can start first.
    let server_key = strait_gateway::PrivateKey::generate();
    let server_secret = sites.scratch.path("server.key");
    std::fs::write(&server_secret, server_key.to_secret_text()).unwrap();
    server_key
        .public_key()
        .publish(&sites.server_key_file())
        .unwrap();
    let args = ["--wireguard", "userspace", "--datapath", "embedded"];
    let client_started = Instant::now();
    let mut client = sites.start_client(&underlay_v4(1), &args);
    // Its first initiations go to a port nobody listens on yet.
    std::thread::sleep(Duration::from_millis(1200));
    let server_started = Instant::now();
    let mut server = sites.start_server(
        &args,
        &format!("privateKeyFile: {}\n", server_secret.display()),
    );
    client
        .wait_status(CONNECT_LIMIT, |s| {
            s.connection.last_handshake_time.is_some()
        })
        .unwrap();
    let after_server = server_started.elapsed();
    let after_client = client_started.elapsed();
    assert!(
        after_server < Duration::from_millis(2500),
        "connected {after_server:?} after the server started ({after_client:?} after the \
         client): WireGuard alone would retry 5 s after the first initiation"
    );
    connected(&mut server);
    assert_eq!(ping(&sites.client, Tunnel::SERVER_V4, 3, "0.2"), 3);
}

#[test]
fn the_peers_cidrs_are_routed_into_the_tunnel_and_accepted_from_it() {
    for datapath in ["fast", "embedded"] {
        let sites = Sites::new("routes");
        // A "remote cluster" address behind the server, outside the tunnel subnet.
        sites
            .server
            .ip(&["addr", "add", "198.19.64.1/32", "dev", "lo"])
            .unwrap();
        let mut server = sites.start_server(&[], "");
        let mut client = sites.start_client_with(
            &underlay_v4(1),
            &["--wireguard", "userspace", "--datapath", datapath],
            "  allowedIps: [198.19.64.0/24]\n",
        );
        connected(&mut client);
        connected(&mut server);
        assert_eq!(
            ping(&sites.client, "198.19.64.1", 3, "0.2"),
            3,
            "{datapath}"
        );
        let tcp: SocketAddr = "198.19.64.1:5003".parse().unwrap();
        assert_eq!(
            tcp_transfer(&sites.client, &sites.server, tcp, 1 << 20).unwrap(),
            1 << 20,
            "{datapath}"
        );
    }
}

#[test]
fn the_embedded_datapath_talks_to_the_fast_one() {
    let sites = Sites::new("embedded");
    let mut server =
        sites.start_server(&["--wireguard", "userspace", "--datapath", "embedded"], "");
    let mut client = sites.start_client(&underlay_v4(1), &["--datapath", "fast"]);
    connected(&mut client);
    let status = connected(&mut server);
    assert_eq!(status.backend, "embedded");
    assert!(status.connection.last_handshake_time.is_some());
    assert_traffic_flows(&sites);
    // SIGTERM stops it cleanly: no UAPI socket left behind, no kill needed.
    let socket = std::path::PathBuf::from(format!("/var/run/wireguard/{}.sock", status.interface));
    assert!(socket.exists());
    server.process.signal(libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(3);
    while server.process.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.process.alive(), "still running 3 s after SIGTERM");
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn kernel_mode_without_the_module_refuses_to_start() {
    let sites = Sites::new("kernel");
    let mut server = sites.start_server(&["--wireguard", "kernel"], "");
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.process.alive() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!server.process.alive(), "started without kernel WireGuard");
    assert!(server.process.log_text().contains("no WireGuard module"));
}

fn wait_for_file(path: &std::path::Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.trim().is_empty() {
                return text.trim().to_owned();
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{} never appeared", path.display());
}

#[test]
fn wireguard_go_accepts_our_server_and_our_client() {
    // wireguard-go dials our server.
    let sites = Sites::new("wggo-client");
    let mut server = sites.start_server(&[], "");
    let server_key = wait_for_file(&sites.server_key_file());
    let endpoint = format!("{}:{PORT}", underlay_v4(1));
    let go = WireguardGo::start(
        &sites.client,
        &sites.scratch,
        0,
        &server_key,
        Some(&endpoint),
        [Tunnel::CLIENT_V4, Tunnel::CLIENT_V6],
        [Tunnel::SERVER_V4, Tunnel::SERVER_V6],
    )
    .unwrap();
    std::fs::write(sites.client_key_file(), format!("{}\n", go.public_key)).unwrap();
    connected(&mut server);
    assert!(go.handshake_done(&sites.client));
    assert_traffic_flows(&sites);
    drop(go);
    drop(server);

    // Our client dials a wireguard-go server.
    let sites = Sites::new("wggo-server");
    let go = WireguardGo::start(
        &sites.server,
        &sites.scratch,
        PORT,
        // The client's key is not known yet; set below once published.
        PLACEHOLDER_KEY,
        None,
        [Tunnel::SERVER_V4, Tunnel::SERVER_V6],
        [Tunnel::CLIENT_V4, Tunnel::CLIENT_V6],
    )
    .unwrap();
    std::fs::write(sites.server_key_file(), format!("{}\n", go.public_key)).unwrap();
    let mut client = sites.start_client(&underlay_v6(1), &[]);
    let client_key = wait_for_file(&sites.client_key_file());
    let allowed = format!("{}/32,{}/128", Tunnel::CLIENT_V4, Tunnel::CLIENT_V6);
    go.replace_peer(&sites.server, PLACEHOLDER_KEY, &client_key, &allowed)
        .unwrap();
    connected(&mut client);
    assert!(go.handshake_done(&sites.server));
    assert_traffic_flows(&sites);
}

/// Pings from the client until one comes back; the time it took.
fn time_to_recover(sites: &Sites, limit: Duration) -> Duration {
    let start = Instant::now();
    while start.elapsed() < limit {
        if ping(&sites.client, Tunnel::SERVER_V4, 1, "0.2") == 1 {
            return start.elapsed();
        }
    }
    panic!("the tunnel did not come back within {limit:?}");
}

#[test]
fn the_tunnel_comes_back_after_restarts_and_roaming() {
    let sites = Sites::new("restart");
    let key = sites.scratch.path("server.key");
    let generated = run(std::process::Command::new("wg").arg("genkey")).unwrap();
    std::fs::write(&key, &generated.stdout).unwrap();
    let extra = format!("privateKeyFile: {}\n", key.display());
    let mut server = sites.start_server(&[], &extra);
    let mut client = sites.start_client(&underlay_v4(1), &[]);
    connected(&mut client);
    assert_eq!(ping(&sites.client, Tunnel::SERVER_V4, 3, "0.2"), 3);

    // The server restarts (same key, from its Secret file) while the client
    // keeps sending on its old session.
    server.process.stop();
    server = sites.start_server(&[], &extra);
    let took = time_to_recover(&sites, Duration::from_secs(30));
    eprintln!("server restart: tunnel back after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "server restart took {took:?}"
    );

    // The client restarts with a new key (generated in memory): the server
    // learns it from the published file.
    let old_client_key = wait_for_file(&sites.client_key_file());
    client.process.stop();
    client = sites.start_client(&underlay_v4(1), &[]);
    let took = time_to_recover(&sites, Duration::from_secs(30));
    eprintln!("client restart with a new key: tunnel back after {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "client restart took {took:?}"
    );
    assert_ne!(wait_for_file(&sites.client_key_file()), old_client_key);

    // Roaming: the client's underlay address changes under it (the new
    // address must survive the old primary's removal).
    run(sites.client.command("sysctl").args([
        "-q",
        "-w",
        "net.ipv4.conf.eth0.promote_secondaries=1",
    ]))
    .unwrap();
    sites
        .client
        .ip(&["addr", "add", "198.18.10.12/24", "dev", "eth0"])
        .unwrap();
    sites
        .client
        .ip(&["addr", "del", "198.18.10.2/24", "dev", "eth0"])
        .unwrap();
    let took = time_to_recover(&sites, Duration::from_secs(30));
    eprintln!("roaming: tunnel back after {took:?}");
    assert!(took < Duration::from_secs(5), "roaming took {took:?}");
    let status = server
        .wait_status(Duration::from_secs(5), |s| {
            s.peer_endpoint
                .as_deref()
                .is_some_and(|e| e.starts_with("198.18.10.12:"))
        })
        .unwrap();
    assert_eq!(status.connection.value, ConnectionState::Connected);
    drop(client);
}

#[test]
fn key_rotation_interrupts_the_tunnel_for_at_most_a_handshake() {
    let sites = Sites::new("rotate");
    let mut server = sites.start_server(&["--rotation-notice-ms", "1500"], "");
    let mut client = sites.start_client(&underlay_v4(1), &[]);
    connected(&mut client);
    let before = wait_for_file(&sites.server_key_file());
    // 120 echoes 50 ms apart (6 s) while the server rotates its key.
    let pinger = sites
        .client
        .command("ping")
        .args([
            "-n",
            "-q",
            "-c",
            "120",
            "-i",
            "0.05",
            "-W",
            "1",
            Tunnel::SERVER_V4,
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    server.process.signal(libc::SIGHUP);
    let out = pinger.wait_with_output().unwrap();
    let summary = String::from_utf8_lossy(&out.stdout).to_string();
    let received: u32 = summary
        .lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let after = wait_for_file(&sites.server_key_file());
    assert_ne!(before, after, "the server published a new key");
    let status = server
        .wait_status(Duration::from_secs(5), |s| s.public_key == after)
        .unwrap();
    assert_eq!(status.connection.value, ConnectionState::Connected);
    // One handshake is a round trip here; allow 10 echoes (0.5 s) lost.
    assert!(
        received >= 110,
        "only {received}/120 echoes during rotation:\n{summary}"
    );
    assert!(server.process.log_text().contains("rotated key in use"));
}

/// UDP payloads to `port` seen on `iface` in `ns` (AF_PACKET), for replaying.
fn sniff_udp(ns: &NetNs, port: u16, count: usize, limit: Duration) -> Vec<Vec<u8>> {
    ns.enter(|| {
        // SAFETY: plain socket(2); owned just below.
        let fd = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_DGRAM,
                i32::from((libc::ETH_P_IP as u16).to_be()),
            )
        };
        assert!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: fd is ours alone.
        let socket = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let file = std::fs::File::from(socket);
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        // SAFETY: SO_RCVTIMEO with a timeval we own.
        unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&file),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&raw const timeout).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut seen = Vec::new();
        let deadline = Instant::now() + limit;
        let mut buf = vec![0u8; 65_536];
        while seen.len() < count && Instant::now() < deadline {
            let Ok(n) = std::io::Read::read(&mut &file, &mut buf) else {
                continue;
            };
            let ip = &buf[..n];
            if ip.len() < 28 || ip[0] >> 4 != 4 || ip[9] != 17 {
                continue;
            }
            let udp = &ip[usize::from(ip[0] & 0x0f) * 4..];
            if udp.len() > 8 && u16::from_be_bytes([udp[2], udp[3]]) == port {
                seen.push(udp[8..].to_vec());
            }
        }
        seen
    })
    .unwrap()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn hostile_datagrams_are_dropped_and_counted_without_growing_memory() {
    let sites = Sites::new("hostile");
    let attacker = NetNs::new("gw-evil").unwrap();
    sites.internet.attach(&attacker, 3).unwrap();
    let mut server = sites.start_server(&[], "");
    let mut client = sites.start_client(&underlay_v4(1), &[]);
    connected(&mut client);
    connected(&mut server);

    // Real datagrams of the tunnel, captured for replaying.
    let sniffer = std::thread::scope(|s| {
        let h = s.spawn(|| sniff_udp(&sites.server, PORT, 50, Duration::from_secs(10)));
        ping(&sites.client, Tunnel::SERVER_V4, 30, "0.05");
        h.join().unwrap()
    });
    assert!(
        sniffer.len() >= 20,
        "captured only {} datagrams",
        sniffer.len()
    );

    let pid = server.process.pid().unwrap();
    let rss_before = rss_kib(pid);
    let target: SocketAddr = format!("{}:{PORT}", underlay_v4(1)).parse().unwrap();
    let sent = attacker
        .enter(|| {
            let socket = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            let mut seed = 0x2545_f491_4f6c_dd1d_u64;
            let mut next = || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed
            };
            let mut sent = 0u64;
            for round in 0..20_000u32 {
                let datagram: Vec<u8> = match round % 4 {
                    // Random bytes of random size, some with a valid type byte.
                    0 | 1 => {
                        let len = (next() % 1500) as usize;
                        let mut d: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                        if round % 4 == 1 && !d.is_empty() {
                            d[0] = (next() % 4 + 1) as u8;
                            let end = 4.min(d.len());
                            d[1..end].fill(0);
                        }
                        d
                    }
                    // Replays of the real tunnel's datagrams.
                    2 => sniffer[(round as usize / 4) % sniffer.len()].clone(),
                    // Oversized: the largest UDP payload.
                    _ => vec![4u8; 65_000],
                };
                if socket.send_to(&datagram, target).is_ok() {
                    sent += 1;
                }
                if round % 1000 == 0 {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            sent
        })
        .unwrap();
    assert!(sent > 19_000);
    std::thread::sleep(Duration::from_millis(500));
    let rss_after = rss_kib(pid);

    // A peer with the wrong key: a gateway with its own key that believes
    // it knows the server.
    let impostor_scratch = Scratch::new("impostor").unwrap();
    let impostor_config = client_config(
        &unique_ifname("gi"),
        &underlay_v4(1),
        PORT,
        &sites.server_key_file(),
        &impostor_scratch.path("impostor.pub"),
        &Tunnel,
        "",
    );
    let mut impostor = Gateway::start(
        &attacker,
        &impostor_scratch,
        "impostor",
        &impostor_config,
        &[],
    )
    .unwrap();
    let impostor_status = impostor
        .wait_status(Duration::from_secs(3), |s| s.tx_bytes > 0)
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    assert_ne!(
        impostor.status().unwrap().connection.value,
        ConnectionState::Connected,
        "{impostor_status:?}"
    );
    drop(impostor);

    let status = server.status().unwrap();
    let dropped: u64 = status.drops.values().sum();
    eprintln!(
        "drops: {:?}; RSS {rss_before} KiB -> {rss_after} KiB",
        status.drops
    );
    assert!(
        dropped >= 10_000,
        "only {dropped} drops counted: {:?}",
        status.drops
    );
    for reason in ["replayed_data", "bad_authentication"] {
        assert!(
            status.drops.get(reason).is_some_and(|n| *n > 0),
            "no {reason} drops: {:?}",
            status.drops
        );
    }
    assert!(
        rss_after < rss_before + 8 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(server.process.alive());
    // And the real tunnel still works.
    assert_eq!(ping(&sites.client, Tunnel::SERVER_V4, 3, "0.2"), 3);
}

/// `GET /status` from a gateway's metrics address 127.0.0.1:`port` in `ns`.
fn status_over_http(ns: &NetNs, port: u16) -> String {
    use std::io::{Read as _, Write as _};
    ns.enter(|| {
        let mut conn = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], port).into(),
            Duration::from_secs(1),
        )
        .unwrap();
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(conn, "GET /status HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
        let mut response = String::new();
        conn.read_to_string(&mut response).unwrap();
        response
    })
    .unwrap()
}

/// The device `ns` sends to `to` through.
fn route_dev(ns: &NetNs, to: &str) -> String {
    let out = ns.ip(&["route", "get", to]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// Both "clusters" use 198.18.64.0/24 and fd00:64::/64 for their pods: each
/// gateway accepts the peer's real ranges but routes only the remapped ones
/// (198.19.64.0/24, fd00:65::/64) into the tunnel, and its own pods stay
/// reachable. A gateway told to route a range its namespace already reaches
/// elsewhere refuses to start and leaves the route alone.
#[test]
fn overlapping_pod_cidrs_keep_each_gateways_local_route() {
    let sites = Sites::new("overlap");
    let pods = [
        NetNs::new("pods-srv").unwrap(),
        NetNs::new("pods-cli").unwrap(),
    ];
    for (gateway, pods) in [&sites.server, &sites.client].into_iter().zip(&pods) {
        Veth::pair(
            (gateway, "pods0", &["198.18.64.1/24", "fd00:64::1/64"]),
            (pods, "eth0", &["198.18.64.10/24", "fd00:64::10/64"]),
        )
        .unwrap();
    }
    let tunnel = "  allowedIps: [198.18.64.0/24, \"fd00:64::/64\"]\n  routes: [198.19.64.0/24, \"fd00:65::/64\"]\n";
    let mut server = sites.start_server(&["--metrics-address", "127.0.0.1:9466"], tunnel);
    let mut client = sites.start_client_with(&underlay_v4(1), &[], tunnel);
    let status = connected(&mut server);
    connected(&mut client);
    // What a controller reads from a gateway pod: the status file's JSON.
    let response = status_over_http(&sites.server, 9466);
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or_default();
    assert!(
        head.starts_with("HTTP/1.1 200") && head.contains("application/json"),
        "{response}"
    );
    let served: strait_gateway::GatewayStatus = serde_json::from_str(body).unwrap();
    assert_eq!(served.interface, status.interface);
    assert_eq!(served.connection.value, ConnectionState::Connected);
    for (ns, interface) in [
        (&sites.server, status.interface.clone()),
        (&sites.client, connected(&mut client).interface),
    ] {
        for local in ["198.18.64.10", "fd00:64::10"] {
            assert_eq!(route_dev(ns, local), "pods0", "{local}");
            assert_eq!(ping(ns, local, 2, "0.2"), 2, "own pod {local}");
        }
        for remapped in ["198.19.64.10", "fd00:65::10"] {
            assert_eq!(route_dev(ns, remapped), interface, "{remapped}");
        }
    }
    assert_eq!(ping(&sites.client, Tunnel::SERVER_V4, 2, "0.2"), 2);

    // The peer's real ranges as routes (explicitly, or by default from
    // allowedIps): refused before any interface or route is made.
    for extra in [
        "  allowedIps: [198.18.64.0/24]\n  routes: [198.18.64.0/24]\n",
        "  allowedIps: [198.18.64.0/23]\n",
    ] {
        let config = server_config(
            &unique_ifname("gx"),
            PORT + 1,
            &sites.client_key_file(),
            &sites.scratch.path("refused.pub"),
            &Tunnel,
            extra,
        );
        let mut refused =
            Gateway::start(&sites.server, &sites.scratch, "refused", &config, &[]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while refused.process.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(!refused.process.alive(), "started with {extra}");
        let log = refused.process.log_text();
        assert!(
            log.contains("overlaps 198.18.64.0/24 (dev pods0)"),
            "{extra}: {log}"
        );
        assert_eq!(route_dev(&sites.server, "198.18.64.10"), "pods0");
        assert_eq!(ping(&sites.server, "198.18.64.10", 2, "0.2"), 2);
    }
    // The running tunnel did not notice.
    assert_eq!(ping(&sites.client, Tunnel::SERVER_V4, 2, "0.2"), 2);
}
