//! Allocation of CIDRs for peers: a peer's range is used as is when it does
//! not collide with anything in use, else remapped to a free range of the
//! same size from a configured pool. Allocations are recorded in Network
//! statuses; a controller rebuilds the allocator from them at start
//! ([`Allocator::restore`]), so nothing is handed out twice across restarts.

use std::collections::BTreeSet;

use ipnet::IpNet;

/// Why an allocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("{0}: not a CIDR")]
    BadCidr(String),
    #[error("{cidr}: host bits are set; did you mean {canonical}?")]
    HostBits { cidr: String, canonical: IpNet },
    #[error("no free /{prefix_len} left in the {family} remapping pool for {wanted}")]
    PoolExhausted {
        wanted: IpNet,
        prefix_len: u8,
        family: &'static str,
    },
    #[error("{0} is already allocated")]
    AlreadyAllocated(IpNet),
}

/// The outcome of an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Allocation {
    /// Free: used under its own addresses.
    AsRequested(IpNet),
    /// Overlapping: use this range of the same size instead.
    Remapped { wanted: IpNet, allocated: IpNet },
}

impl Allocation {
    pub fn allocated(&self) -> IpNet {
        match self {
            Allocation::AsRequested(net) => *net,
            Allocation::Remapped { allocated, .. } => *allocated,
        }
    }
}

/// Parses a CIDR and refuses host bits (10.0.0.1/16 is almost always a typo).
pub fn parse_cidr(text: &str) -> Result<IpNet, IpamError> {
    let net: IpNet = text
        .trim()
        .parse()
        .map_err(|_| IpamError::BadCidr(text.to_owned()))?;
    if net.trunc() != net {
        return Err(IpamError::HostBits {
            cidr: text.to_owned(),
            canonical: net.trunc(),
        });
    }
    Ok(net)
}

/// Ranges in use and the pools remapped ranges come from.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    /// Ranges this cluster uses itself (pod, service, node, external CIDRs):
    /// never handed out, and peers overlapping them get remapped.
    reserved: Vec<IpNet>,
    /// Where remapped ranges are carved from, per family.
    pools: Vec<IpNet>,
    allocated: BTreeSet<IpNet>,
}

impl Allocator {
    pub fn new(reserved: Vec<IpNet>, pools: Vec<IpNet>) -> Self {
        Allocator {
            reserved,
            pools,
            allocated: BTreeSet::new(),
        }
    }

    /// Records an allocation made earlier (read back from a Network status).
    pub fn restore(&mut self, net: IpNet) -> Result<(), IpamError> {
        if self.collides(&net) {
            return Err(IpamError::AlreadyAllocated(net));
        }
        self.allocated.insert(net);
        Ok(())
    }

    fn collides(&self, net: &IpNet) -> bool {
        self.reserved
            .iter()
            .chain(&self.allocated)
            .any(|used| overlaps(used, net))
    }

    /// Allocates `wanted` itself when free, else the first free range of the
    /// same prefix length from a pool of the same family.
    pub fn allocate(&mut self, wanted: IpNet) -> Result<Allocation, IpamError> {
        if !self.collides(&wanted) {
            self.allocated.insert(wanted);
            return Ok(Allocation::AsRequested(wanted));
        }
        let prefix_len = wanted.prefix_len();
        let same_family = |pool: &&IpNet| pool.addr().is_ipv4() == wanted.addr().is_ipv4();
        let candidate = self
            .pools
            .iter()
            .filter(same_family)
            .filter(|pool| pool.prefix_len() <= prefix_len)
            .find_map(|pool| {
                pool.subnets(prefix_len)
                    .ok()?
                    // Bounded: a pool yields at most 2^(len - pool len) subnets; a
                    // /8 pool cut in /24s is 65536 candidates, checked in memory.
                    .find(|candidate| !self.collides(candidate))
            });
        match candidate {
            Some(allocated) => {
                self.allocated.insert(allocated);
                Ok(Allocation::Remapped { wanted, allocated })
            }
            None => Err(IpamError::PoolExhausted {
                wanted,
                prefix_len,
                family: if wanted.addr().is_ipv4() {
                    "IPv4"
                } else {
                    "IPv6"
                },
            }),
        }
    }

    /// Returns a range to the pool; true when it was allocated.
    pub fn release(&mut self, net: &IpNet) -> bool {
        self.allocated.remove(net)
    }

    pub fn allocated(&self) -> impl Iterator<Item = &IpNet> {
        self.allocated.iter()
    }
}

/// Whether two ranges share an address (one contains the other, as CIDRs nest).
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn net(text: &str) -> IpNet {
        parse_cidr(text).expect("test CIDR")
    }

    fn allocator() -> Allocator {
        Allocator::new(
            vec![
                net("10.244.0.0/16"),
                net("10.96.0.0/12"),
                net("fd00:10:244::/56"),
            ],
            vec![net("10.64.0.0/10"), net("fd00:ffff::/32")],
        )
    }

    #[test]
    fn a_free_peer_range_is_used_as_is() {
        let mut ipam = allocator();
        assert_eq!(
            ipam.allocate(net("10.245.0.0/16")),
            Ok(Allocation::AsRequested(net("10.245.0.0/16")))
        );
    }

    #[test]
    fn an_overlapping_range_is_remapped_to_a_free_one_of_the_same_size_and_family() {
        let mut ipam = allocator();
        let Allocation::Remapped { allocated, .. } =
            ipam.allocate(net("10.244.0.0/16")).expect("pool has room")
        else {
            panic!("overlap must remap");
        };
        assert_eq!(allocated, net("10.64.0.0/16"));
        // The next peer with the same CIDR gets another range.
        assert_eq!(
            ipam.allocate(net("10.244.0.0/16")).map(|a| a.allocated()),
            Ok(net("10.65.0.0/16"))
        );
        let v6 = ipam.allocate(net("fd00:10:244::/56")).expect("v6 pool");
        assert_eq!(v6.allocated(), net("fd00:ffff::/56"));
    }

    #[test]
    fn overlap_is_detected_in_both_directions() {
        let mut ipam = allocator();
        // Inside a reserved range, and containing one.
        assert!(matches!(
            ipam.allocate(net("10.244.7.0/24")),
            Ok(Allocation::Remapped { .. })
        ));
        assert!(
            matches!(
                ipam.allocate(net("10.0.0.0/8")),
                Err(IpamError::PoolExhausted { .. })
            ),
            "a /8 does not fit a /10 pool"
        );
    }

    #[test]
    fn pool_exhaustion_and_release() {
        let mut ipam = Allocator::new(vec![net("10.244.0.0/16")], vec![net("10.64.0.0/15")]);
        let a = ipam
            .allocate(net("10.244.0.0/16"))
            .expect("first")
            .allocated();
        let b = ipam
            .allocate(net("10.244.0.0/16"))
            .expect("second")
            .allocated();
        assert_ne!(a, b);
        let err = ipam
            .allocate(net("10.244.0.0/16"))
            .expect_err("pool of two /16s is full");
        assert_eq!(
            err.to_string(),
            "no free /16 left in the IPv4 remapping pool for 10.244.0.0/16"
        );
        assert!(ipam.release(&a));
        assert_eq!(
            ipam.allocate(net("10.244.0.0/16")).map(|x| x.allocated()),
            Ok(a)
        );
    }

    #[test]
    fn restored_allocations_are_never_handed_out_again() {
        let mut ipam = allocator();
        ipam.restore(net("10.64.0.0/16")).expect("restore");
        assert_eq!(
            ipam.restore(net("10.64.0.0/24")),
            Err(IpamError::AlreadyAllocated(net("10.64.0.0/24")))
        );
        assert_eq!(
            ipam.allocate(net("10.244.0.0/16")).map(|a| a.allocated()),
            Ok(net("10.65.0.0/16"))
        );
    }

    #[test]
    fn bad_input_is_refused_clearly() {
        assert_eq!(
            parse_cidr("10.244.0.0/33"),
            Err(IpamError::BadCidr("10.244.0.0/33".into()))
        );
        assert_eq!(
            parse_cidr("10.244.1.1/16")
                .expect_err("host bits")
                .to_string(),
            "10.244.1.1/16: host bits are set; did you mean 10.244.0.0/16?"
        );
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let ipam = Arc::new(Mutex::new(allocator()));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let ipam = Arc::clone(&ipam);
                std::thread::spawn(move || {
                    (0..16)
                        .map(|_| {
                            ipam.lock()
                                .expect("not poisoned")
                                .allocate(net("10.244.0.0/24"))
                                .expect("room")
                                .allocated()
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let all: Vec<IpNet> = handles
            .into_iter()
            .flat_map(|h| h.join().expect("thread"))
            .collect();
        assert_eq!(all.len(), 128);
        for (i, a) in all.iter().enumerate() {
            for b in &all[i + 1..] {
                assert!(!overlaps(a, b), "{a} and {b} were both handed out");
            }
        }
    }
}
