//! The hook that translates pod addresses between the provider's view and
//! the consumer's: identity without the network module, a prefix remap when
//! the network module remaps the provider's pod CIDR locally. The remap is
//! read from the network module's `Configuration` of the provider (its
//! status holds the ranges IPAM chose) when there is one, else from the
//! virtual kubelet's `--pod-cidr-remap` flags.

use std::net::IpAddr;

use ipnet::IpNet;
use strait_api::{condition::find_condition, networking::Configuration};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not REMOTE=LOCAL with two CIDRs of the same family and length, such as 10.0.0.0/16=10.70.0.0/16")]
pub struct RemapError(pub String);

/// One remote CIDR seen locally as another of the same size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CidrRemap {
    pub remote: IpNet,
    pub local: IpNet,
}

impl std::str::FromStr for CidrRemap {
    type Err = RemapError;
    fn from_str(text: &str) -> Result<Self, RemapError> {
        let error = || RemapError(text.to_owned());
        let (remote, local) = text.split_once('=').ok_or_else(error)?;
        let remote: IpNet = remote.trim().parse().map_err(|_| error())?;
        let local: IpNet = local.trim().parse().map_err(|_| error())?;
        let same_family = remote.addr().is_ipv4() == local.addr().is_ipv4();
        if !same_family || remote.prefix_len() != local.prefix_len() {
            return Err(error());
        }
        Ok(Self {
            remote: remote.trunc(),
            local: local.trunc(),
        })
    }
}

impl std::fmt::Display for CidrRemap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}", self.remote, self.local)
    }
}

/// Translates pod addresses; addresses outside every remap pass unchanged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpTranslation {
    pub remaps: Vec<CidrRemap>,
}

impl IpTranslation {
    /// A provider address as the consumer reaches it.
    pub fn to_local(&self, address: &str) -> String {
        self.translate(address, |r| (r.remote, r.local))
    }

    /// A consumer-side address of a provider pod, back to the provider's own.
    pub fn to_remote(&self, address: &str) -> String {
        self.translate(address, |r| (r.local, r.remote))
    }

    fn translate(&self, address: &str, direction: impl Fn(&CidrRemap) -> (IpNet, IpNet)) -> String {
        let Ok(ip) = address.parse::<IpAddr>() else {
            return address.to_owned();
        };
        for remap in &self.remaps {
            let (from, to) = direction(remap);
            if from.contains(&ip) {
                return swap_prefix(ip, from, to).to_string();
            }
        }
        address.to_owned()
    }
}

/// Why a Configuration gives no usable translation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigurationRemapError {
    #[error("the network module has not decided the remapped CIDRs yet (status.remote is empty{})", condition_note(.0))]
    NotDecided(Option<String>),
    #[error("its {kind} CIDRs {declared:?} and their remaps {remapped:?} do not pair up (one remap of the same size per declared CIDR and family)")]
    Mismatch {
        kind: &'static str,
        declared: Vec<String>,
        remapped: Vec<String>,
    },
}

fn condition_note(ready: &Option<String>) -> String {
    ready
        .as_ref()
        .map(|text| format!("; Ready: {text}"))
        .unwrap_or_default()
}

impl IpTranslation {
    /// The translation the network module decided for one provider: each
    /// declared pod and external CIDR (`spec.remote`) to the range it is
    /// seen under here (`status.remote`), an identical range when it did
    /// not overlap anything local.
    pub fn from_configuration(
        configuration: &Configuration,
    ) -> Result<Self, ConfigurationRemapError> {
        let Some(seen) = configuration
            .status
            .as_ref()
            .and_then(|s| s.remote.as_ref())
        else {
            let ready = configuration
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Ready"))
                .map(|c| format!("{} ({})", c.reason, c.message));
            return Err(ConfigurationRemapError::NotDecided(ready));
        };
        let declared = &configuration.spec.remote.cidr;
        let mut remaps = pair_up("pod", &declared.pod, &seen.cidr.pod)?;
        remaps.extend(pair_up(
            "external",
            &declared.external,
            &seen.cidr.external,
        )?);
        Ok(Self { remaps })
    }
}

/// Declared CIDRs matched with their remaps by address family.
fn pair_up(
    kind: &'static str,
    declared: &[String],
    remapped: &[String],
) -> Result<Vec<CidrRemap>, ConfigurationRemapError> {
    let mismatch = || ConfigurationRemapError::Mismatch {
        kind,
        declared: declared.to_vec(),
        remapped: remapped.to_vec(),
    };
    let parse = |list: &[String]| -> Result<Vec<IpNet>, ConfigurationRemapError> {
        list.iter()
            .map(|c| c.trim().parse::<IpNet>().map(|n| n.trunc()))
            .collect::<Result<_, _>>()
            .map_err(|_| mismatch())
    };
    let (declared_nets, remapped_nets) = (parse(declared)?, parse(remapped)?);
    if declared_nets.len() != remapped_nets.len() {
        return Err(mismatch());
    }
    declared_nets
        .iter()
        .map(|remote| {
            let local = remapped_nets
                .iter()
                .find(|l| l.addr().is_ipv4() == remote.addr().is_ipv4())
                .filter(|l| l.prefix_len() == remote.prefix_len())
                .ok_or_else(mismatch)?;
            Ok(CidrRemap {
                remote: *remote,
                local: *local,
            })
        })
        .collect()
}

fn swap_prefix(ip: IpAddr, from: IpNet, to: IpNet) -> IpAddr {
    match (ip, from.hostmask(), to.network()) {
        (IpAddr::V4(ip), IpAddr::V4(host), IpAddr::V4(network)) => {
            IpAddr::V4((u32::from(ip) & u32::from(host) | u32::from(network)).into())
        }
        (IpAddr::V6(ip), IpAddr::V6(host), IpAddr::V6(network)) => {
            IpAddr::V6((u128::from(ip) & u128::from(host) | u128::from(network)).into())
        }
        _ => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remapped_addresses_keep_their_host_bits_both_ways() {
        let translation = IpTranslation {
            remaps: vec![
                "10.0.0.0/16=10.70.0.0/16".parse().expect("v4"),
                "fd00:1::/64=fd00:70::/64".parse().expect("v6"),
            ],
        };
        assert_eq!(translation.to_local("10.0.3.4"), "10.70.3.4");
        assert_eq!(translation.to_remote("10.70.3.4"), "10.0.3.4");
        assert_eq!(translation.to_local("fd00:1::9"), "fd00:70::9");
        assert_eq!(translation.to_local("192.168.1.1"), "192.168.1.1");
        assert_eq!(IpTranslation::default().to_local("10.0.3.4"), "10.0.3.4");
    }

    #[test]
    fn remaps_of_different_sizes_or_families_are_refused() {
        for bad in [
            "10.0.0.0/16=10.70.0.0/24",
            "10.0.0.0/16=fd00::/16",
            "10.0.0.0/16",
            "x=y",
        ] {
            assert!(bad.parse::<CidrRemap>().is_err(), "{bad}");
        }
    }
}
