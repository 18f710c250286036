//! Kernel WireGuard and defguard's embedded boringtun device, both driven
//! through `defguard_wireguard_rs` from the same [`InterfaceConfiguration`]:
//! over netlink for the kernel, over the UAPI socket for the embedded one.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Instant,
};

use defguard_wireguard_rs::{
    host::Host, key::Key, net::IpAddrMask, peer::Peer, InterfaceConfiguration, Kernel, Userspace,
    WGApi, WireguardInterfaceApi,
};

use crate::{
    config::Cidr, first_handshake::FirstHandshake, Error, PeerStats, Plan, PrivateKey, PublicKey,
    Role,
};

/// The configuration handed to defguard: one peer, its allowed IPs, our
/// addresses, port and MTU.
pub fn interface_configuration(
    plan: &Plan,
    mtu: u32,
    key: &PrivateKey,
    peer_key: &PublicKey,
    endpoint: Option<SocketAddr>,
) -> InterfaceConfiguration {
    InterfaceConfiguration {
        name: plan.interface.clone(),
        prvkey: key.to_base64(),
        addresses: plan.addresses.iter().map(mask).collect(),
        port: plan.listen_port(),
        peers: vec![peer(plan, peer_key, endpoint, &plan.allowed_ips)],
        mtu: Some(mtu),
        fwmark: None,
    }
}

fn peer(plan: &Plan, peer_key: &PublicKey, endpoint: Option<SocketAddr>, allowed: &[Cidr]) -> Peer {
    let mut peer = Peer::new(Key::new(*peer_key.as_bytes()));
    peer.endpoint = endpoint;
    peer.persistent_keepalive_interval = plan.persistent_keepalive;
    peer.allowed_ips = allowed.iter().map(mask).collect();
    peer
}

fn mask(c: &Cidr) -> IpAddrMask {
    IpAddrMask::new(c.addr, c.len)
}

/// The kernel-mode request: what `set_host` turns into the WireGuard
/// netlink `SET_DEVICE` messages (device attributes, then one per peer).
pub fn kernel_host(config: &InterfaceConfiguration) -> Result<Host, Error> {
    Host::try_from(config).map_err(|e| Error::Wireguard {
        interface: config.name.clone(),
        detail: e.to_string(),
    })
}

/// A WireGuard interface managed by defguard.
pub enum DefguardDevice {
    Kernel(WGApi<Kernel>),
    Embedded(WGApi<Userspace>),
}

impl DefguardDevice {
    /// Creates the interface and applies `config` (MTU, addresses, key,
    /// peer), then routes the peer's extra CIDRs into it.
    pub fn create(
        kernel: bool,
        plan: &Plan,
        config: &InterfaceConfiguration,
        peer_key: &PublicKey,
    ) -> Result<Self, Error> {
        let err = |e: defguard_wireguard_rs::error::WireguardInterfaceError| Error::Wireguard {
            interface: plan.interface.clone(),
            detail: e.to_string(),
        };
        let mut device = if kernel {
            DefguardDevice::Kernel(WGApi::<Kernel>::new(plan.interface.clone()).map_err(err)?)
        } else {
            DefguardDevice::Embedded(WGApi::<Userspace>::new(plan.interface.clone()).map_err(err)?)
        };
        device.api_mut().create_interface().map_err(err)?;
        device.api().configure_interface(config).map_err(err)?;
        if !plan.routes.is_empty() {
            let routed = peer(plan, peer_key, None, &plan.routes);
            device
                .api()
                .configure_peer_routing(&[routed])
                .map_err(err)?;
        }
        Ok(device)
    }

    fn api(&self) -> &dyn WireguardInterfaceApi {
        match self {
            DefguardDevice::Kernel(api) => api,
            DefguardDevice::Embedded(api) => api,
        }
    }

    fn api_mut(&mut self) -> &mut dyn WireguardInterfaceApi {
        match self {
            DefguardDevice::Kernel(api) => api,
            DefguardDevice::Embedded(api) => api,
        }
    }

    /// Re-applies the WireGuard part of the configuration (a new own key,
    /// or a new peer key); addresses and MTU stay.
    pub fn reconfigure(
        &self,
        interface: &str,
        config: &InterfaceConfiguration,
    ) -> Result<(), Error> {
        let err = |detail: String| Error::Wireguard {
            interface: interface.to_owned(),
            detail,
        };
        match self {
            // Flushes and re-adds the addresses: harmless for the kernel.
            DefguardDevice::Kernel(api) => api
                .configure_interface(config)
                .map_err(|e| err(e.to_string())),
            // Re-adding addresses would fail here; only the host changes,
            // peers replaced.
            DefguardDevice::Embedded(api) => api
                .write_host(&kernel_host(config)?)
                .map_err(|e| err(e.to_string())),
        }
    }

    /// Whether the device still answers. The embedded boringtun device
    /// watches SIGTERM and SIGINT itself and stops when it sees one first;
    /// its UAPI socket then accepts connections but never answers.
    pub fn responsive(&self, interface: &str) -> bool {
        use std::io::{Read as _, Write as _};
        let DefguardDevice::Embedded(_) = self else {
            return true;
        };
        let path = format!("/var/run/wireguard/{interface}.sock");
        let Ok(mut socket) = std::os::unix::net::UnixStream::connect(path) else {
            return false;
        };
        let mut answer = [0u8; 64];
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(500)))
            .is_ok()
            && socket.write_all(b"get=1\n\n").is_ok()
            && socket.read(&mut answer).is_ok_and(|n| n > 0)
    }

    pub fn stats(&self, peer_key: &PublicKey) -> PeerStats {
        let Ok(host) = self.api().read_interface_data() else {
            return PeerStats::default();
        };
        host.peers
            .get(&Key::new(*peer_key.as_bytes()))
            .map(|p| PeerStats {
                last_handshake: p
                    .last_handshake
                    .filter(|t| *t > std::time::SystemTime::UNIX_EPOCH),
                tx_bytes: p.tx_bytes,
                rx_bytes: p.rx_bytes,
                endpoint: p.endpoint,
            })
            .unwrap_or_default()
    }

    pub fn remove(mut self) {
        if let Err(e) = self.api_mut().remove_interface() {
            tracing::warn!(error = %e, "removing the WireGuard interface");
        }
    }
}

/// What starting a handshake over takes from a WireGuard implementation
/// that keeps its own retry timer.
pub trait PeerControl {
    fn remove_peer(&self, key: &Key) -> Result<(), String>;
    fn add_peer(&self, peer: &Peer) -> Result<(), String>;
    /// One packet into the tunnel toward `to`: with no session, the device
    /// queues it and sends an initiation if none is in flight.
    fn send_through_tunnel(&self, to: IpAddr) -> Result<(), String>;
}

impl PeerControl for DefguardDevice {
    fn remove_peer(&self, key: &Key) -> Result<(), String> {
        self.api().remove_peer(key).map_err(|e| e.to_string())
    }

    fn add_peer(&self, peer: &Peer) -> Result<(), String> {
        self.api().configure_peer(peer).map_err(|e| e.to_string())
    }

    fn send_through_tunnel(&self, to: IpAddr) -> Result<(), String> {
        let bind: SocketAddr = match to {
            IpAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        // The discard port: nothing listens for it, nothing answers but ICMP.
        socket
            .send_to(b"strait-gateway-handshake", SocketAddr::new(to, 9))
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// Runs the shared first-handshake schedule ([`crate::first_handshake`])
/// on kernel WireGuard and the embedded device. Both send an initiation
/// when a packet needs one and none is in flight, then retry only after
/// WireGuard's 5 s: a first initiation lost to a peer not ready yet would
/// cost those 5 s. So at each due time the peer is removed and added again
/// (a peer without a handshake in flight, whose next packet initiates at
/// once; nothing is lost, no session exists yet) and one packet is sent
/// toward it through the tunnel. Only a dialing gateway (a client) runs it,
/// and only until the first handshake completes.
pub struct FirstHandshakeDriver {
    schedule: FirstHandshake,
    /// The peer as configured: what is added back.
    peer: Peer,
    /// The peer's tunnel address, where the packet that triggers the
    /// initiation goes (none: nothing to send to, the schedule stays idle).
    trigger: Option<IpAddr>,
}

impl FirstHandshakeDriver {
    pub fn new(plan: &Plan, peer_key: &PublicKey, now: Instant) -> Self {
        let trigger = plan.peer_addresses.first().copied();
        let dials = matches!(plan.role, Role::Client { .. }) && plan.initial_endpoint().is_some();
        FirstHandshakeDriver {
            schedule: if dials && trigger.is_some() {
                FirstHandshake::starting_at(now)
            } else {
                FirstHandshake::inactive()
            },
            peer: peer(plan, peer_key, plan.initial_endpoint(), &plan.allowed_ips),
            trigger,
        }
    }

    /// When the driver next needs a tick.
    pub fn next_due(&self) -> Option<Instant> {
        self.schedule.next_due()
    }

    /// Starts the handshake over when it is due; stops once `handshake_done`.
    /// Returns whether it started one.
    pub fn tick(
        &mut self,
        device: &dyn PeerControl,
        handshake_done: bool,
        now: Instant,
    ) -> Result<bool, String> {
        if handshake_done {
            self.schedule.finish();
            return Ok(false);
        }
        let Some(to) = self.trigger else {
            return Ok(false);
        };
        if !self.schedule.due(now) {
            return Ok(false);
        }
        // The device was just configured for the first one: nothing in flight.
        if self.schedule.sent() > 1 {
            device.remove_peer(&self.peer.public_key)?;
            device.add_peer(&self.peer)?;
        }
        device.send_through_tunnel(to)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::GatewayConfig;

    fn plan() -> Plan {
        serde_norway::from_str::<GatewayConfig>(
            r#"
interface: gw-k
client:
  endpoint: { addresses: ["fd00:5::1"], port: 51820 }
peerPublicKey: { publicKey: hwrYdrS6YauiL4h8r2w1Cg4T8FDn4AicN4OX1jFtpS8= }
tunnel:
  addresses: [198.19.255.2/30, "fd00:ff::2/126"]
  peerAddresses: [198.19.255.1]
  allowedIps: [198.18.64.0/24, "fd00:64::/64"]
  persistentKeepalive: 5
"#,
        )
        .unwrap()
        .plan()
        .unwrap()
    }

    #[test]
    fn the_kernel_request_carries_key_port_peer_and_allowed_ips() {
        let plan = plan();
        let key = PrivateKey::generate();
        let peer_key = match &plan.peer_key {
            crate::config::PeerKeySource::Inline(k) => *k,
            other => panic!("{other:?}"),
        };
        let config = interface_configuration(&plan, 1400, &key, &peer_key, plan.initial_endpoint());
        assert_eq!(config.mtu, Some(1400));
        assert_eq!(
            config
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.19.255.2/30", "fd00:ff::2/126"]
        );
        let host = kernel_host(&config).unwrap();
        assert_eq!(
            host.listen_port, 0,
            "a client lets the kernel pick its port"
        );
        assert_eq!(
            host.private_key.as_ref().map(Key::as_array),
            Some(key.secret().to_bytes())
        );
        assert_eq!(host.fwmark, None);
        assert_eq!(host.peers.len(), 1);
        let peer = &host.peers[&Key::new(*peer_key.as_bytes())];
        assert_eq!(peer.endpoint, Some("[fd00:5::1]:51820".parse().unwrap()));
        assert_eq!(peer.persistent_keepalive_interval, Some(5));
        assert_eq!(
            peer.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.19.255.1/32", "198.18.64.0/24", "fd00:64::/64"]
        );
        // The private key never shows in the logs defguard writes.
        let logged = format!("{config:?} {host:?}");
        assert!(!logged.contains(&key.to_base64()));
        assert!(!logged.contains(&Key::new(key.secret().to_bytes()).to_lower_hex()));
    }

    #[test]
    fn the_embedded_request_is_the_same_configuration_over_uapi() {
        let plan = plan();
        let key = PrivateKey::generate();
        let peer_key = PrivateKey::generate().public_key();
        let config = interface_configuration(&plan, 1420, &key, &peer_key, None);
        let uapi = kernel_host(&config).unwrap().as_uapi();
        let lines: Vec<&str> = uapi.lines().collect();
        assert!(lines.contains(&"listen_port=0"));
        let private_line = format!(
            "private_key={}",
            Key::new(key.secret().to_bytes()).to_lower_hex()
        );
        assert!(lines.contains(&private_line.as_str()));
        let public_line = format!(
            "public_key={}",
            Key::new(*peer_key.as_bytes()).to_lower_hex()
        );
        assert!(lines.contains(&public_line.as_str()));
        assert!(lines.contains(&"allowed_ip=198.18.64.0/24"));
        assert!(lines.contains(&"persistent_keepalive_interval=5"));
    }

    /// Records what the driver asks of the device, in order.
    #[derive(Default)]
    struct Recorder(std::cell::RefCell<Vec<String>>);

    impl PeerControl for Recorder {
        fn remove_peer(&self, key: &Key) -> Result<(), String> {
            self.0
                .borrow_mut()
                .push(format!("remove {}", key.to_lower_hex()));
            Ok(())
        }
        fn add_peer(&self, peer: &Peer) -> Result<(), String> {
            let mut allowed: Vec<String> =
                peer.allowed_ips.iter().map(ToString::to_string).collect();
            allowed.sort();
            self.0.borrow_mut().push(format!(
                "add {} endpoint={:?} keepalive={:?} allowed={}",
                peer.public_key.to_lower_hex(),
                peer.endpoint,
                peer.persistent_keepalive_interval,
                allowed.join(",")
            ));
            Ok(())
        }
        fn send_through_tunnel(&self, to: IpAddr) -> Result<(), String> {
            self.0.borrow_mut().push(format!("send {to}"));
            Ok(())
        }
    }

    /// The kernel (or embedded) client's first handshake: restarted on the
    /// shared schedule, not after WireGuard's 5 s, and never again once done.
    #[test]
    fn a_client_device_restarts_its_first_handshake_on_the_shared_schedule() {
        let plan = plan();
        let peer_key = match &plan.peer_key {
            crate::config::PeerKeySource::Inline(k) => *k,
            other => panic!("{other:?}"),
        };
        let start = Instant::now();
        let mut driver = FirstHandshakeDriver::new(&plan, &peer_key, start);
        let device = Recorder::default();
        let mut restarts = Vec::new();
        let mut now = start;
        while now < start + std::time::Duration::from_millis(1600) {
            if driver.tick(&device, false, now).unwrap() {
                restarts.push(now - start);
            }
            now += std::time::Duration::from_millis(5);
        }
        // At once, then after about 100, 200, 400 and 800 ms (jitter only shortens).
        assert_eq!(restarts.len(), 5, "{restarts:?}");
        assert_eq!(restarts[0], std::time::Duration::ZERO);
        for (pair, nominal) in restarts.windows(2).zip([100u64, 200, 400, 800]) {
            let gap = (pair[1] - pair[0]).as_millis() as u64;
            assert!(gap >= nominal * 3 / 4 && gap <= nominal + 5, "{restarts:?}");
        }
        let calls = device.0.borrow();
        let hex = Key::new(*peer_key.as_bytes()).to_lower_hex();
        // The first only sends (the peer was just configured); each later
        // one removes the peer, adds it back as configured, then sends.
        assert_eq!(calls[0], "send 198.19.255.1");
        assert_eq!(calls[1], format!("remove {hex}"));
        assert_eq!(
            calls[2],
            format!(
                "add {hex} endpoint=Some([fd00:5::1]:51820) keepalive=Some(5) \
                 allowed=198.18.64.0/24,198.19.255.1/32,fd00:64::/64"
            )
        );
        assert_eq!(calls[3], "send 198.19.255.1");
        assert_eq!(calls.len(), 1 + 4 * 3, "{calls:?}");
        drop(calls);
        // The handshake completed: nothing more, however long.
        assert!(!driver.tick(&device, true, now).unwrap());
        assert!(!driver
            .tick(&device, false, now + std::time::Duration::from_secs(30))
            .unwrap());
        assert_eq!(driver.next_due(), None);
    }

    #[test]
    fn a_server_device_never_initiates() {
        let yaml = r#"
interface: gw-k
server: { endpoint: { port: 51820 } }
peerPublicKey: { publicKey: hwrYdrS6YauiL4h8r2w1Cg4T8FDn4AicN4OX1jFtpS8= }
tunnel:
  addresses: [198.19.255.1/30]
  peerAddresses: [198.19.255.2]
"#;
        let plan = serde_norway::from_str::<GatewayConfig>(yaml)
            .unwrap()
            .plan()
            .unwrap();
        let peer_key = PrivateKey::generate().public_key();
        let start = Instant::now();
        let mut driver = FirstHandshakeDriver::new(&plan, &peer_key, start);
        let device = Recorder::default();
        assert!(!driver.tick(&device, false, start).unwrap());
        assert!(device.0.borrow().is_empty());
        assert_eq!(driver.next_due(), None);
    }
}
