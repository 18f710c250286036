//! The hook that translates pod addresses between the provider's view and
//! the consumer's: identity without the network module, a prefix remap when
//! the network module remaps the provider's pod CIDR locally.

use std::net::IpAddr;

use ipnet::IpNet;

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
