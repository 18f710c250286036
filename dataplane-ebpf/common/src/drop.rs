//! Why a program dropped a packet. Shared by the datapath (which counts each
//! drop under its reason in the `STRAIT_DROPS` per-CPU array) and userspace
//! (which names them in logs, `strait-fabric stats` and metrics labels).

/// Name of the per-CPU array of drop counters, indexed by [`DropReason`].
pub const DROPS_MAP: &str = "STRAIT_DROPS";

/// A reason a packet was dropped. Values are map indexes: append new reasons,
/// never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than the headers it claims to have.
    Truncated = 0,
    /// A header field with an impossible value (IHL < 5, bad version, ...).
    Malformed = 1,
    /// NAT: the TCP/UDP/ICMP header whose checksum a translation must fix
    /// is cut short (first fragments and unfragmented packets only).
    NatL4Truncated = 2,
    /// NAT: an ICMP error's embedded packet is too short to hold the IP
    /// header that must be translated with the outer one.
    NatIcmpEmbeddedTruncated = 3,
    /// NAT: an ICMP error's embedded packet is not an IP header of the
    /// outer family (wrong version, IHL < 5).
    NatIcmpEmbeddedMalformed = 4,
    /// NAT: an IPv6 extension header chain longer than the programs walk
    /// before reaching the transport header.
    NatIpv6ExtensionChainTooLong = 5,
    /// NAT: the kernel refused to rewrite the packet (store or checksum
    /// helper failed); dropped rather than sent half-translated.
    NatRewriteFailed = 6,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 7] = [
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::NatL4Truncated,
        DropReason::NatIcmpEmbeddedTruncated,
        DropReason::NatIcmpEmbeddedMalformed,
        DropReason::NatIpv6ExtensionChainTooLong,
        DropReason::NatRewriteFailed,
    ];
    /// Size of the drop counter array: room to append reasons without
    /// resizing a pinned map.
    pub const SLOTS: u32 = 64;

    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(DropReason::Truncated),
            1 => Some(DropReason::Malformed),
            2 => Some(DropReason::NatL4Truncated),
            3 => Some(DropReason::NatIcmpEmbeddedTruncated),
            4 => Some(DropReason::NatIcmpEmbeddedMalformed),
            5 => Some(DropReason::NatIpv6ExtensionChainTooLong),
            6 => Some(DropReason::NatRewriteFailed),
            _ => None,
        }
    }

    /// Stable snake_case name, used as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::NatL4Truncated => "nat_l4_truncated",
            DropReason::NatIcmpEmbeddedTruncated => "nat_icmp_embedded_truncated",
            DropReason::NatIcmpEmbeddedMalformed => "nat_icmp_embedded_malformed",
            DropReason::NatIpv6ExtensionChainTooLong => "nat_ipv6_extension_chain_too_long",
            DropReason::NatRewriteFailed => "nat_rewrite_failed",
        }
    }
}

const _: () = assert!((DropReason::ALL.len() as u32) <= DropReason::SLOTS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_index() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as u32, i as u32, "ALL must be in index order");
            assert_eq!(DropReason::from_raw(i as u32), Some(*reason));
        }
        assert_eq!(DropReason::from_raw(DropReason::ALL.len() as u32), None);
    }
}
