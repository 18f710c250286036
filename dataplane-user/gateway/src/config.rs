//! `--config FILE`: the same specs the CRs carry (GatewayServer or
//! GatewayClient, and the peer's PublicKey), plus the few things a CR
//! controller would fill in (tunnel addresses, routed CIDRs, file paths).

use std::{
    fmt,
    net::{IpAddr, SocketAddr, ToSocketAddrs as _},
    path::{Path, PathBuf},
    str::FromStr,
};

use serde::{Deserialize, Serialize};
use strait_api::networking::{GatewayClientSpec, GatewayServerSpec, PublicKeySpec};

use crate::{Error, PublicKey};

/// The gateway's configuration file.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayConfig {
    /// Name of the tunnel interface (at most 15 bytes).
    #[serde(default = "default_interface")]
    pub interface: String,
    /// Listen for the peer (exactly one of `server` and `client`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<GatewayServerSpec>,
    /// Dial the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<GatewayClientSpec>,
    /// The peer gateway's public key, inline (exactly one of this and
    /// `peerPublicKeyFile`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_public_key: Option<PublicKeySpec>,
    /// A file holding the peer's public key, re-read while running: a new
    /// key there is the peer's key rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_public_key_file: Option<PathBuf>,
    /// A mounted Secret file with this gateway's private key; generated in
    /// memory when omitted (then it changes at every start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key_file: Option<PathBuf>,
    /// Where this gateway's public key is published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_file: Option<PathBuf>,
    /// Addresses inside the tunnel.
    pub tunnel: TunnelConfig,
}

/// Addressing inside the tunnel.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TunnelConfig {
    /// This gateway's addresses on the tunnel interface, CIDR notation, at
    /// most one per family.
    pub addresses: Vec<String>,
    /// The peer's tunnel addresses: allowed from the peer and probed for
    /// latency.
    #[serde(default)]
    pub peer_addresses: Vec<IpAddr>,
    /// Further CIDRs accepted from the peer: its pod and external CIDRs as
    /// the peer addresses them (its real ones; the tunnel carries real
    /// addresses both ways).
    #[serde(default)]
    pub allowed_ips: Vec<String>,
    /// CIDRs routed into the tunnel: the peer's ranges as this cluster
    /// addresses them, i.e. the remapped ones where they overlap a local
    /// range (the gateway's NAT translates them back to the real ones).
    /// Omitted: the `allowedIps` (nothing remapped). A route overlapping one
    /// the gateway's namespace has on another interface is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Keepalive interval in seconds; the client defaults to 10 so NAT
    /// bindings stay open and a restarted server hears from it quickly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_keepalive: Option<u16>,
}

fn default_interface() -> String {
    "strait-gw0".to_owned()
}

/// A prefix in CIDR notation; the host bits must be zero except for
/// interface addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The network this interface address belongs to.
    pub fn network(&self) -> Cidr {
        let addr = match self.addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.len))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        };
        Cidr {
            addr,
            len: self.len,
        }
    }

    /// Whether the two prefixes share an address (one contains the other).
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }

    pub fn host(addr: IpAddr) -> Cidr {
        Cidr {
            addr,
            len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, len) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not in CIDR notation (address/length)"))?;
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?}: {addr:?} is not an IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len: u8 = len
            .parse()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("{s:?}: prefix length must be 0-{max}"))?;
        Ok(Cidr { addr, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

/// Which end of the tunnel this gateway is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Listens on `port`; learns the peer's endpoint from its handshakes.
    Server { port: u16 },
    /// Dials the first resolvable of `endpoints`.
    Client { endpoints: Vec<SocketAddr> },
}

impl Role {
    pub fn name(&self) -> &'static str {
        match self {
            Role::Server { .. } => "server",
            Role::Client { .. } => "client",
        }
    }
}

/// Where the peer's public key comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerKeySource {
    Inline(PublicKey),
    File(PathBuf),
}

impl PeerKeySource {
    pub fn load(&self) -> Result<PublicKey, Error> {
        match self {
            PeerKeySource::Inline(key) => Ok(*key),
            PeerKeySource::File(path) => PublicKey::from_file(path),
        }
    }
}

/// A checked configuration: everything the datapaths need, already parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub interface: String,
    pub role: Role,
    /// The MTU both sides agreed on in the spec; the datapath may lower it
    /// to what the path allows (see [`crate::mtu`]).
    pub mtu: u32,
    pub addresses: Vec<Cidr>,
    pub peer_addresses: Vec<IpAddr>,
    /// Everything accepted from the peer: its tunnel addresses and allowed IPs.
    pub allowed_ips: Vec<Cidr>,
    /// CIDRs to route into the tunnel beyond the interface's own subnets.
    pub routes: Vec<Cidr>,
    pub persistent_keepalive: Option<u16>,
    pub peer_key: PeerKeySource,
    pub private_key_file: Option<PathBuf>,
    pub public_key_file: Option<PathBuf>,
}

impl Plan {
    pub fn listen_port(&self) -> u16 {
        match self.role {
            Role::Server { port } => port,
            Role::Client { .. } => 0,
        }
    }

    /// The first configured client endpoint (none for a server).
    pub fn initial_endpoint(&self) -> Option<SocketAddr> {
        match &self.role {
            Role::Client { endpoints } => endpoints.first().copied(),
            Role::Server { .. } => None,
        }
    }
}

impl GatewayConfig {
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_norway::from_str(&text).map_err(|source| Error::ConfigSyntax {
            path: path.to_owned(),
            source,
        })
    }

    /// Checks the configuration and resolves the client's endpoint names.
    pub fn plan(&self) -> Result<Plan, Error> {
        let bad = |m: String| Error::Config(m);
        if self.interface.is_empty() || self.interface.len() > 15 || self.interface.contains('/') {
            return Err(bad(format!(
                "interface {:?}: a Linux interface name has 1-15 bytes and no '/'",
                self.interface
            )));
        }
        let (role, mtu) = match (&self.server, &self.client) {
            (Some(server), None) => {
                let port = u16::try_from(server.endpoint.port)
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| {
                        bad(format!(
                            "server.endpoint.port {} is not a UDP port (1-65535)",
                            server.endpoint.port
                        ))
                    })?;
                (Role::Server { port }, server.mtu)
            }
            (None, Some(client)) => (
                Role::Client {
                    endpoints: resolve_endpoints(&client.endpoint.addresses, client.endpoint.port)?,
                },
                client.mtu,
            ),
            _ => {
                return Err(bad(
                    "exactly one of `server` (listen) and `client` (dial) must be given".into(),
                ))
            }
        };
        let mtu = u32::try_from(mtu)
            .ok()
            .filter(|m| (1280..=9000).contains(m))
            .ok_or_else(|| bad(format!("mtu {mtu} is outside 1280-9000")))?;
        let peer_key = match (&self.peer_public_key, &self.peer_public_key_file) {
            (Some(spec), None) => {
                PeerKeySource::Inline(spec.public_key.parse().map_err(|reason| Error::Key {
                    what: "peerPublicKey".into(),
                    reason,
                })?)
            }
            (None, Some(path)) => PeerKeySource::File(path.clone()),
            _ => {
                return Err(bad(
                    "exactly one of `peerPublicKey` and `peerPublicKeyFile` must be given".into(),
                ))
            }
        };
        let addresses = parse_cidrs("tunnel.addresses", &self.tunnel.addresses)?;
        if addresses.is_empty() {
            return Err(bad("tunnel.addresses needs at least one address".into()));
        }
        for family in [true, false] {
            if addresses
                .iter()
                .filter(|c| c.addr.is_ipv4() == family)
                .count()
                > 1
            {
                return Err(bad(
                    "tunnel.addresses: at most one address per family".into()
                ));
            }
        }
        let peer_cidrs = parse_networks("tunnel.allowedIps", &self.tunnel.allowed_ips)?;
        let routes = match &self.tunnel.routes {
            Some(routes) => parse_networks("tunnel.routes", routes)?,
            None => peer_cidrs.clone(),
        };
        let mut allowed_ips: Vec<Cidr> = self
            .tunnel
            .peer_addresses
            .iter()
            .copied()
            .map(Cidr::host)
            .collect();
        allowed_ips.extend(peer_cidrs);
        let persistent_keepalive = match role {
            Role::Client { .. } => Some(self.tunnel.persistent_keepalive.unwrap_or(10)),
            Role::Server { .. } => self.tunnel.persistent_keepalive,
        }
        .filter(|k| *k > 0);
        Ok(Plan {
            interface: self.interface.clone(),
            role,
            mtu,
            addresses,
            peer_addresses: self.tunnel.peer_addresses.clone(),
            allowed_ips,
            routes,
            persistent_keepalive,
            peer_key,
            private_key_file: self.private_key_file.clone(),
            public_key_file: self.public_key_file.clone(),
        })
    }
}

fn parse_cidrs(field: &str, items: &[String]) -> Result<Vec<Cidr>, Error> {
    items
        .iter()
        .map(|s| {
            s.parse()
                .map_err(|e| Error::Config(format!("{field}: {e}")))
        })
        .collect()
}

/// Parses network prefixes (host bits zero).
fn parse_networks(field: &str, items: &[String]) -> Result<Vec<Cidr>, Error> {
    let cidrs = parse_cidrs(field, items)?;
    if let Some(c) = cidrs.iter().find(|c| c.network() != **c) {
        return Err(Error::Config(format!(
            "{field}: {c} has host bits set (did you mean {}?)",
            c.network()
        )));
    }
    Ok(cidrs)
}

fn resolve_endpoints(addresses: &[String], port: i32) -> Result<Vec<SocketAddr>, Error> {
    let port = u16::try_from(port).ok().filter(|p| *p > 0).ok_or_else(|| {
        Error::Config(format!(
            "client.endpoint.port {port} is not a UDP port (1-65535)"
        ))
    })?;
    let mut resolved = Vec::new();
    for host in addresses {
        match host.parse::<IpAddr>() {
            Ok(ip) => resolved.push(SocketAddr::new(ip, port)),
            Err(_) => match (host.as_str(), port).to_socket_addrs() {
                Ok(addrs) => resolved.extend(addrs),
                Err(e) => tracing::warn!(%host, error = %e, "cannot resolve a server address"),
            },
        }
    }
    if resolved.is_empty() {
        return Err(Error::Config(format!(
            "client.endpoint.addresses {addresses:?}: none resolves to an address"
        )));
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = r#"
interface: gw-a
server:
  mtu: 1420
  endpoint: { port: 51820 }
peerPublicKey: { publicKey: hwrYdrS6YauiL4h8r2w1Cg4T8FDn4AicN4OX1jFtpS8= }
publicKeyFile: /run/strait/public-key
tunnel:
  addresses: [198.19.255.1/30, "fd00:ff::1/126"]
  peerAddresses: [198.19.255.2, "fd00:ff::2"]
  allowedIps: [198.18.64.0/24]
"#;

    const CLIENT: &str = r#"
client:
  mtu: 1380
  endpoint: { addresses: [198.18.0.1, "fd00:5::1"], port: 51820 }
peerPublicKeyFile: /run/strait/peer-key
tunnel:
  addresses: [198.19.255.2/30]
"#;

    fn parse(yaml: &str) -> Result<Plan, Error> {
        serde_norway::from_str::<GatewayConfig>(yaml)
            .map_err(|e| Error::Config(e.to_string()))?
            .plan()
    }

    #[test]
    fn a_server_plan_allows_the_peer_and_its_cidrs() {
        let plan = parse(SERVER).unwrap();
        assert_eq!(plan.role, Role::Server { port: 51820 });
        assert_eq!(plan.listen_port(), 51820);
        assert_eq!(plan.interface, "gw-a");
        assert_eq!(plan.mtu, 1420);
        assert_eq!(
            plan.allowed_ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.19.255.2/32", "fd00:ff::2/128", "198.18.64.0/24"]
        );
        assert_eq!(plan.persistent_keepalive, None);
        assert_eq!(
            plan.public_key_file.as_deref(),
            Some(Path::new("/run/strait/public-key"))
        );
    }

    #[test]
    fn a_client_dials_its_endpoints_in_order_and_keeps_alive() {
        let plan = parse(CLIENT).unwrap();
        assert_eq!(
            plan.role,
            Role::Client {
                endpoints: vec![
                    "198.18.0.1:51820".parse().unwrap(),
                    "[fd00:5::1]:51820".parse().unwrap()
                ]
            }
        );
        assert_eq!(plan.listen_port(), 0);
        assert_eq!(plan.persistent_keepalive, Some(10));
        assert_eq!(plan.interface, "strait-gw0");
        assert_eq!(
            plan.peer_key,
            PeerKeySource::File("/run/strait/peer-key".into())
        );
    }

    #[test]
    fn bad_configurations_say_what_is_wrong() {
        let cases = [
            (SERVER.replace("server:", "client:"), "endpoint"),
            (
                format!("{SERVER}client:\n  endpoint: {{ addresses: [198.18.0.1], port: 1 }}\n"),
                "exactly one of `server`",
            ),
            (
                SERVER.replace("port: 51820", "port: 70000"),
                "not a UDP port",
            ),
            (SERVER.replace("mtu: 1420", "mtu: 576"), "outside 1280-9000"),
            (
                SERVER.replace("198.19.255.1/30", "198.19.255.1"),
                "CIDR notation",
            ),
            (
                SERVER.replace("198.18.64.0/24", "198.18.64.1/24"),
                "host bits set (did you mean 198.18.64.0/24?)",
            ),
            (
                SERVER.replace("hwrY", "hwr"),
                "invalid WireGuard key in peerPublicKey",
            ),
            (
                SERVER.replace("gw-a", "a-very-long-interface"),
                "1-15 bytes",
            ),
            (
                format!("{SERVER}peerPublicKeyFile: /x\n"),
                "exactly one of `peerPublicKey`",
            ),
        ];
        for (yaml, expected) in cases {
            let message = match parse(&yaml) {
                Err(e) => e.to_string(),
                Ok(plan) => panic!("accepted {yaml}\n as {plan:?}"),
            };
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
    }

    #[test]
    fn routes_default_to_the_allowed_ips_and_are_separate_when_given() {
        let plan = parse(SERVER).unwrap();
        assert_eq!(
            plan.routes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.18.64.0/24"]
        );
        // Both clusters use 198.18.64.0/24: the peer's is seen here as
        // 198.19.64.0/24. The tunnel accepts the real range, routes the
        // remapped one.
        let remapped = SERVER.replace(
            "allowedIps: [198.18.64.0/24]",
            "allowedIps: [198.18.64.0/24]\n  routes: [198.19.64.0/24, \"fd00:64::/64\"]",
        );
        let plan = parse(&remapped).unwrap();
        assert_eq!(
            plan.routes
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["198.19.64.0/24", "fd00:64::/64"]
        );
        assert!(plan
            .allowed_ips
            .contains(&"198.18.64.0/24".parse().unwrap()));
        assert!(!plan
            .allowed_ips
            .contains(&"198.19.64.0/24".parse().unwrap()));
        let nothing_routed = SERVER.replace(
            "allowedIps: [198.18.64.0/24]",
            "allowedIps: [198.18.64.0/24]\n  routes: []",
        );
        assert!(parse(&nothing_routed).unwrap().routes.is_empty());
        let bad = SERVER.replace(
            "allowedIps: [198.18.64.0/24]",
            "allowedIps: [198.18.64.0/24]\n  routes: [198.19.64.7/24]",
        );
        let message = parse(&bad).unwrap_err().to_string();
        assert!(
            message.contains("tunnel.routes: 198.19.64.7/24 has host bits set"),
            "{message}"
        );
    }

    #[test]
    fn cidrs_contain_their_hosts_only() {
        let net: Cidr = "198.18.64.0/24".parse().unwrap();
        assert!(net.contains("198.18.64.200".parse().unwrap()));
        assert!(!net.contains("198.18.65.1".parse().unwrap()));
        assert!(!net.contains("fd00::1".parse().unwrap()));
        let v6: Cidr = "fd00:ff::/126".parse().unwrap();
        assert!(v6.contains("fd00:ff::3".parse().unwrap()));
        assert!(!v6.contains("fd00:ff::4".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("198.19.1.1".parse().unwrap()));
        assert_eq!(
            "198.19.255.2/30"
                .parse::<Cidr>()
                .unwrap()
                .network()
                .to_string(),
            "198.19.255.0/30"
        );
    }
}
