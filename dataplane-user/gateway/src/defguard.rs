//! Kernel WireGuard and defguard's embedded boringtun device, both driven
//! through `defguard_wireguard_rs` from the same [`InterfaceConfiguration`]:
//! over netlink for the kernel, over the UAPI socket for the embedded one.

use std::net::SocketAddr;

use defguard_wireguard_rs::{
    host::Host, key::Key, net::IpAddrMask, peer::Peer, InterfaceConfiguration, Kernel, Userspace,
    WGApi, WireguardInterfaceApi,
};

use crate::{config::Cidr, Error, PeerStats, Plan, PrivateKey, PublicKey};

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
}
