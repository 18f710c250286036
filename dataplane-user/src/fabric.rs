//! The Geneve fabric seen from userspace: the agent's `--config` file, its
//! validation, and reconciling it into the pinned route, VNI and local
//! endpoint maps without a moment where a kept route is missing.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
};

use aya::maps::{
    lpm_trie::{Key, LpmTrie},
    Array, HashMap, MapData, PerCpuArray,
};
use serde::{Deserialize, Serialize};
use strait_api::networking::{FabricRoute, InternalNodeSpec};
use strait_common::{
    drop::DROPS_MAP,
    fabric::{
        FabricCounter, LocalEndpoints, NextHop, PacketCount, VniEntry, FAMILY_V4, FAMILY_V6,
        LOCAL_MAP, OVERHEAD_V4, OVERHEAD_V6, ROUTES_V4_MAP, ROUTES_V6_MAP, STATS_MAP, VNIS_MAP,
    },
    DropReason,
};
use tracing::info;

use crate::{drops::DropCounts, programs::Dataplane, tc::AttachMode, Error};

/// What `strait-fabric apply --config FILE` reads. Routes and nodes use the
/// same shapes as the RouteConfiguration and InternalNode CRDs.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FabricConfig {
    /// Interface facing the underlay: Geneve is decapsulated at its ingress.
    pub underlay: String,
    /// Interfaces whose incoming packets are steered into the fabric when
    /// their destination has a route (pod-facing veths on a node, the
    /// tunnel-facing interface on a gateway).
    #[serde(default)]
    pub encap_interfaces: Vec<String>,
    /// This host's underlay addresses (at most one per family), the outer source.
    pub local_endpoints: Vec<IpAddr>,
    /// Routes toward gateways (a node's view: RouteConfiguration routes).
    #[serde(default)]
    pub routes: Vec<FabricRoute>,
    /// Nodes and the pod CIDRs they own (a gateway's view: InternalNodes);
    /// traffic to those CIDRs is sent to the node with `nodeVni`.
    #[serde(default)]
    pub internal_nodes: Vec<NamedInternalNode>,
    /// VNI used toward nodes; required with `internalNodes`. Packets
    /// arriving with it are decapsulated (a node's return traffic).
    #[serde(default)]
    pub node_vni: Option<u32>,
    /// tcx where available (default), or force tcx / netlink.
    #[serde(default)]
    pub attach_mode: AttachMode,
}

/// An InternalNode: its name and spec.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamedInternalNode {
    pub name: String,
    #[serde(flatten)]
    pub spec: InternalNodeSpec,
}

/// A config that cannot be applied, naming the entry at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("reading {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{0}: not a CIDR (expected e.g. 10.71.0.0/16 or fd00:71::/56)")]
    BadCidr(String),
    #[error("{0}: host bits are set; did you mean {1}?")]
    HostBits(String, String),
    #[error("{0}: not an IP address")]
    BadAddress(String),
    #[error("localEndpoints lists two {0} addresses; give at most one per family")]
    DuplicateFamily(&'static str),
    #[error("{what}: no gateway/endpoint of a family this host has a local endpoint for")]
    NoUsableEndpoint { what: String },
    #[error("{what}: VNI {vni} is outside 1..=16777215")]
    BadVni { what: String, vni: u32 },
    #[error("destination {0} appears in two routes")]
    DuplicateDestination(String),
    #[error("internalNodes need nodeVni")]
    MissingNodeVni,
}

impl FabricConfig {
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let read_err = |reason: String| ConfigError::Read {
            path: path.display().to_string(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| read_err(e.to_string()))?;
        Self::from_yaml(&text).map_err(|e| read_err(e.to_string()))
    }

    pub fn from_yaml(text: &str) -> Result<Self, serde_norway::Error> {
        serde_norway::from_str(text)
    }

    /// The overlay MTU for a given underlay MTU: what pods' interfaces must use.
    pub fn overlay_mtu(&self, underlay_mtu: u32) -> u32 {
        let worst = self
            .local_endpoints
            .iter()
            .map(|a| {
                if a.is_ipv4() {
                    OVERHEAD_V4
                } else {
                    OVERHEAD_V6
                }
            })
            .max()
            .unwrap_or(OVERHEAD_V6);
        underlay_mtu.saturating_sub(worst as u32)
    }

    /// The map contents this config asks for, validated, for an underlay
    /// interface of index `underlay_ifindex` and MTU `underlay_mtu` (in the
    /// namespace the tables are for).
    pub fn tables(
        &self,
        underlay_ifindex: u32,
        underlay_mtu: u32,
    ) -> Result<FabricTables, ConfigError> {
        let mut local = LocalEndpoints {
            underlay_ifindex,
            overlay_mtu: self.overlay_mtu(underlay_mtu),
            ..LocalEndpoints::default()
        };
        for addr in &self.local_endpoints {
            match addr {
                IpAddr::V4(_) if local.present & LocalEndpoints::HAS_V4 != 0 => {
                    return Err(ConfigError::DuplicateFamily("IPv4"))
                }
                IpAddr::V4(v4) => {
                    local.v4 = v4.octets();
                    local.present |= LocalEndpoints::HAS_V4;
                }
                IpAddr::V6(_) if local.present & LocalEndpoints::HAS_V6 != 0 => {
                    return Err(ConfigError::DuplicateFamily("IPv6"))
                }
                IpAddr::V6(v6) => {
                    local.v6 = v6.octets();
                    local.present |= LocalEndpoints::HAS_V6;
                }
            }
        }
        let mut tables = FabricTables {
            local,
            ..FabricTables::default()
        };
        // Nodes accept what gateways send back to them on the node VNI,
        // whether or not they list InternalNodes themselves.
        if let Some(vni) = self.node_vni {
            if vni == 0 || vni > 0x00ff_ffff {
                return Err(ConfigError::BadVni {
                    what: "nodeVni".to_owned(),
                    vni,
                });
            }
            tables.vnis.insert(vni);
        }
        let mut add = |what: &str,
                       destinations: &[String],
                       endpoints: &[String],
                       vni: u32|
         -> Result<(), ConfigError> {
            if vni == 0 || vni > 0x00ff_ffff {
                return Err(ConfigError::BadVni {
                    what: what.to_owned(),
                    vni,
                });
            }
            let hop = next_hop(what, endpoints, &local, vni)?;
            tables.vnis.insert(vni);
            if is_local(&hop, &local) {
                // This host is the route's gateway (a gateway node following
                // the peers' routes): it terminates the VNI, routing nothing.
                return Ok(());
            }
            for destination in destinations {
                let (addr, len) = parse_cidr(destination)?;
                let fresh = match addr {
                    IpAddr::V4(a) => tables.routes_v4.insert((a.octets(), len), hop).is_none(),
                    IpAddr::V6(a) => tables.routes_v6.insert((a.octets(), len), hop).is_none(),
                };
                if !fresh {
                    return Err(ConfigError::DuplicateDestination(destination.clone()));
                }
            }
            Ok(())
        };
        for (i, route) in self.routes.iter().enumerate() {
            let vni = u32::try_from(route.vni).unwrap_or(0);
            add(
                &format!("routes[{i}]"),
                &route.destinations,
                &route.gateways,
                vni,
            )?;
        }
        if !self.internal_nodes.is_empty() {
            let vni = self.node_vni.ok_or(ConfigError::MissingNodeVni)?;
            for node in &self.internal_nodes {
                add(
                    &format!("internalNodes {}", node.name),
                    &node.spec.pod_cidrs,
                    &node.spec.endpoints,
                    vni,
                )?;
            }
        }
        Ok(tables)
    }
}

/// Validated map contents.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FabricTables {
    pub routes_v4: BTreeMap<([u8; 4], u32), NextHop>,
    pub routes_v6: BTreeMap<([u8; 16], u32), NextHop>,
    pub vnis: BTreeSet<u32>,
    pub local: LocalEndpoints,
}

fn parse_cidr(text: &str) -> Result<(IpAddr, u32), ConfigError> {
    let bad = || ConfigError::BadCidr(text.to_owned());
    let (addr, len) = text.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    let len: u32 = len.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(bad());
    }
    let masked = match addr {
        IpAddr::V4(a) => IpAddr::from((u32::from(a) & mask32(len)).to_be_bytes()),
        IpAddr::V6(a) => IpAddr::from((u128::from(a) & mask128(len)).to_be_bytes()),
    };
    if masked != addr {
        return Err(ConfigError::HostBits(
            text.to_owned(),
            format!("{masked}/{len}"),
        ));
    }
    Ok((addr, len))
}

fn mask32(len: u32) -> u32 {
    u32::MAX.checked_shl(32 - len).unwrap_or(0)
}

fn mask128(len: u32) -> u128 {
    u128::MAX.checked_shl(128 - len).unwrap_or(0)
}

/// The first endpoint of a family we can send from.
fn next_hop(
    what: &str,
    endpoints: &[String],
    local: &LocalEndpoints,
    vni: u32,
) -> Result<NextHop, ConfigError> {
    for text in endpoints {
        let addr: IpAddr = text
            .parse()
            .map_err(|_| ConfigError::BadAddress(text.clone()))?;
        match addr {
            IpAddr::V4(a) if local.present & LocalEndpoints::HAS_V4 != 0 => {
                let mut endpoint = [0; 16];
                endpoint[..4].copy_from_slice(&a.octets());
                return Ok(NextHop {
                    endpoint,
                    family: FAMILY_V4,
                    vni,
                });
            }
            IpAddr::V6(a) if local.present & LocalEndpoints::HAS_V6 != 0 => {
                return Ok(NextHop {
                    endpoint: a.octets(),
                    family: FAMILY_V6,
                    vni,
                });
            }
            _ => {}
        }
    }
    Err(ConfigError::NoUsableEndpoint {
        what: what.to_owned(),
    })
}

/// Whether `hop` leads to this host itself.
fn is_local(hop: &NextHop, local: &LocalEndpoints) -> bool {
    match hop.family {
        FAMILY_V4 => local.present & LocalEndpoints::HAS_V4 != 0 && hop.endpoint[..4] == local.v4,
        _ => local.present & LocalEndpoints::HAS_V6 != 0 && hop.endpoint == local.v6,
    }
}

/// What a reconcile changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Applied {
    pub routes_written: usize,
    pub routes_removed: usize,
    pub vnis: usize,
}

/// Writes `tables` into the loaded object's (pinned) maps: new and changed
/// entries first, each an atomic in-place update, then stale ones removed,
/// so a route that stays is never absent.
pub fn apply_tables(dp: &mut Dataplane, tables: &FabricTables) -> Result<Applied, Error> {
    let map_err = |name| move |source| Error::Map { name, source };
    let mut applied = Applied::default();
    {
        let mut local: Array<&mut MapData, LocalEndpoints> =
            Array::try_from(dp.map_mut(LOCAL_MAP)?).map_err(map_err(LOCAL_MAP))?;
        local.set(0, tables.local, 0).map_err(map_err(LOCAL_MAP))?;
    }
    {
        let mut vnis: HashMap<&mut MapData, u32, VniEntry> =
            HashMap::try_from(dp.map_mut(VNIS_MAP)?).map_err(map_err(VNIS_MAP))?;
        for vni in &tables.vnis {
            vnis.insert(vni, VniEntry::default(), 0)
                .map_err(map_err(VNIS_MAP))?;
        }
        let stale: Vec<u32> = vnis
            .keys()
            .filter_map(Result::ok)
            .filter(|v| !tables.vnis.contains(v))
            .collect();
        for vni in stale {
            vnis.remove(&vni).map_err(map_err(VNIS_MAP))?;
        }
        applied.vnis = tables.vnis.len();
    }
    let (w, r) = sync_lpm(dp.map_mut(ROUTES_V4_MAP)?, ROUTES_V4_MAP, &tables.routes_v4)?;
    applied.routes_written += w;
    applied.routes_removed += r;
    let (w, r) = sync_lpm(dp.map_mut(ROUTES_V6_MAP)?, ROUTES_V6_MAP, &tables.routes_v6)?;
    applied.routes_written += w;
    applied.routes_removed += r;
    info!(
        written = applied.routes_written,
        removed = applied.routes_removed,
        vnis = applied.vnis,
        "fabric routes reconciled"
    );
    Ok(applied)
}

fn sync_lpm<K: aya::Pod + Ord>(
    map: &mut aya::maps::Map,
    name: &'static str,
    desired: &BTreeMap<(K, u32), NextHop>,
) -> Result<(usize, usize), Error> {
    let map_err = |source| Error::Map { name, source };
    let mut trie: LpmTrie<&mut MapData, K, NextHop> = LpmTrie::try_from(map).map_err(map_err)?;
    let mut written = 0;
    for ((addr, len), hop) in desired {
        let key = Key::new(*len, *addr);
        if trie.get(&key, 0).ok().as_ref() != Some(hop) {
            trie.insert(&key, hop, 0).map_err(map_err)?;
            written += 1;
        }
    }
    let stale: Vec<Key<K>> = trie
        .keys()
        .filter_map(Result::ok)
        .filter(|k| !desired.contains_key(&(k.data(), k.prefix_len())))
        .collect();
    for key in &stale {
        trie.remove(key).map_err(map_err)?;
    }
    Ok((written, stale.len()))
}

/// The IPv4 destinations in the pinned route map, as `a.b.c.d/len`, sorted
/// (what the fabric steers, for checks that a removed route is gone).
pub fn pinned_routes_v4(pin_dir: &crate::bpffs::PinDir) -> Result<Vec<String>, Error> {
    let map_err = |source| Error::Map {
        name: ROUTES_V4_MAP,
        source,
    };
    let map = pin_dir.open_map(ROUTES_V4_MAP).map_err(map_err)?;
    let trie: LpmTrie<&MapData, [u8; 4], NextHop> = LpmTrie::try_from(&map).map_err(map_err)?;
    let mut routes: Vec<String> = trie
        .keys()
        .filter_map(Result::ok)
        .map(|k| format!("{}/{}", std::net::Ipv4Addr::from(k.data()), k.prefix_len()))
        .collect();
    routes.sort();
    Ok(routes)
}

/// Fabric and drop counters summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FabricStats {
    pub counters: Vec<CountRow>,
    pub drops: DropCounts,
}

/// One fabric counter summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CountRow {
    pub name: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

impl FabricStats {
    pub fn read(dp: &Dataplane) -> Result<Self, Error> {
        let map = |name: &'static str| dp.ebpf().map(name).ok_or(Error::MissingMap(name));
        Self::read_maps(map(STATS_MAP)?, map(DROPS_MAP)?)
    }

    pub fn read_pinned(pin_dir: &crate::bpffs::PinDir) -> Result<Self, Error> {
        let open = |name: &'static str| {
            pin_dir
                .open_map(name)
                .map_err(|source| Error::Map { name, source })
        };
        Self::read_maps(&open(STATS_MAP)?, &open(DROPS_MAP)?)
    }

    fn read_maps(stats: &aya::maps::Map, drops: &aya::maps::Map) -> Result<Self, Error> {
        let stats_err = |source| Error::Map {
            name: STATS_MAP,
            source,
        };
        let stats: PerCpuArray<&MapData, PacketCount> =
            PerCpuArray::try_from(stats).map_err(stats_err)?;
        let mut out = FabricStats {
            drops: DropCounts::read(drops)?,
            ..FabricStats::default()
        };
        for counter in FabricCounter::ALL {
            let per_cpu = stats.get(&(counter as u32), 0).map_err(stats_err)?;
            let (packets, bytes) = per_cpu
                .iter()
                .fold((0, 0), |(p, b), c| (p + c.packets, b + c.bytes));
            out.counters.push(CountRow {
                name: counter.as_str(),
                packets,
                bytes,
            });
        }
        Ok(out)
    }

    pub fn counter(&self, counter: FabricCounter) -> CountRow {
        self.counters
            .iter()
            .find(|row| row.name == counter.as_str())
            .copied()
            .unwrap_or_default()
    }

    pub fn drops(&self, reason: DropReason) -> u64 {
        self.drops.get(reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(yaml: &str) -> FabricConfig {
        serde_norway::from_str(yaml).expect("test config parses")
    }

    const NODE: &str = "
underlay: eth0
encapInterfaces: [pod1]
localEndpoints: [198.18.0.11, 'fd00:f::11']
routes:
  - destinations: [198.19.0.0/24, 'fd00:19::/64']
    gateways: [198.18.0.2]
    vni: 4242
";

    #[test]
    fn routes_become_lpm_entries_toward_a_usable_gateway() {
        let tables = config(NODE).tables(1, 1500).expect("valid");
        let hop = tables.routes_v4[&([198, 19, 0, 0], 24)];
        assert_eq!(
            (hop.family, hop.vni, &hop.endpoint[..4]),
            (FAMILY_V4, 4242, &[198, 18, 0, 2][..])
        );
        // An IPv6 destination may ride an IPv4 underlay.
        assert_eq!(
            tables.routes_v6[&([0xfd, 0, 0, 0x19, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 64)],
            hop
        );
        assert_eq!(tables.vnis, BTreeSet::from([4242]));
        assert_eq!(
            tables.local.present,
            LocalEndpoints::HAS_V4 | LocalEndpoints::HAS_V6
        );
    }

    #[test]
    fn bad_configs_name_the_entry_at_fault() {
        let with = |from: &str, to: &str| {
            config(&NODE.replace(from, to))
                .tables(1, 1500)
                .expect_err("invalid")
        };
        assert_eq!(
            with("198.19.0.0/24", "198.19.0.1/24"),
            ConfigError::HostBits("198.19.0.1/24".into(), "198.19.0.0/24".into())
        );
        assert_eq!(
            with("198.19.0.0/24", "198.19.0.0/33"),
            ConfigError::BadCidr("198.19.0.0/33".into())
        );
        assert_eq!(
            with("vni: 4242", "vni: 0"),
            ConfigError::BadVni {
                what: "routes[0]".into(),
                vni: 0
            }
        );
        let v4_only = NODE
            .replace(", 'fd00:f::11'", "")
            .replace("[198.18.0.2]", "['fd00:f::2']");
        assert_eq!(
            config(&v4_only).tables(1, 1500),
            Err(ConfigError::NoUsableEndpoint {
                what: "routes[0]".into()
            })
        );
        assert_eq!(
            with("'fd00:f::11'", "198.18.0.12"),
            ConfigError::DuplicateFamily("IPv4")
        );
        assert!(
            serde_norway::from_str::<FabricConfig>(&NODE.replace("routes:", "rotues:")).is_err(),
            "typos are refused"
        );
    }

    #[test]
    fn a_destination_in_two_routes_is_refused() {
        let yaml = format!(
            "{NODE}  - destinations: [198.19.0.0/24]\n    gateways: [198.18.0.3]\n    vni: 7\n"
        );
        assert_eq!(
            config(&yaml).tables(1, 1500),
            Err(ConfigError::DuplicateDestination("198.19.0.0/24".into()))
        );
    }

    #[test]
    fn a_gateway_accepts_the_vnis_of_routes_toward_itself_and_nodes_the_node_vni() {
        let gateway = config(
            "underlay: eth0\nlocalEndpoints: [198.18.0.2]\nnodeVni: 1\nroutes:\n  - destinations: [198.19.0.0/24]\n    gateways: [198.18.0.2, 'fd00:f::2']\n    vni: 4096\n",
        )
        .tables(1, 1500)
        .expect("valid");
        assert!(tables_empty(&gateway), "no route toward itself");
        assert_eq!(gateway.vnis, BTreeSet::from([1, 4096]));
        let node = config(&format!("{NODE}nodeVni: 1\n"))
            .tables(1, 1500)
            .expect("valid");
        assert_eq!(node.vnis, BTreeSet::from([1, 4242]));
        assert_eq!(
            config(&format!("{NODE}nodeVni: 16777216\n")).tables(1, 1500),
            Err(ConfigError::BadVni {
                what: "nodeVni".into(),
                vni: 16_777_216
            })
        );
    }

    fn tables_empty(tables: &FabricTables) -> bool {
        tables.routes_v4.is_empty() && tables.routes_v6.is_empty()
    }

    #[test]
    fn overlay_mtu_leaves_room_for_the_largest_outer_header() {
        assert_eq!(config(NODE).overlay_mtu(1500), 1500 - 56);
        let v4_only = config(&NODE.replace(", 'fd00:f::11'", ""));
        assert_eq!(v4_only.overlay_mtu(1500), 1464);
    }
}
