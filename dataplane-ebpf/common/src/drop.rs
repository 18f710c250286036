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
    /// Geneve with a version other than 0.
    GeneveBadVersion = 2,
    /// Geneve options longer than the packet.
    GeneveBadOptions = 3,
    /// Geneve carrying something other than IPv4 or IPv6.
    GeneveBadProtocol = 4,
    /// Geneve for a VNI this host does not serve.
    UnknownVni = 5,
    /// A route asks for an outer family this host has no address of.
    NoLocalEndpoint = 6,
    /// The kernel could not make room for, or remove, the outer headers.
    AdjustRoomFailed = 7,
    /// No underlay route to the outer destination.
    NoUnderlayRoute = 8,
    /// Encapsulated packet larger than the underlay MTU.
    FragmentationNeeded = 9,
    /// IP forwarding is off on the underlay interface: the kernel refuses to
    /// route the outer packet.
    UnderlayForwardingDisabled = 10,
    /// NAT: the TCP/UDP/ICMP header whose checksum a translation must fix
    /// is cut short (first fragments and unfragmented packets only).
    NatL4Truncated = 11,
    /// NAT: an ICMP error's embedded packet is too short to hold the IP
    /// header that must be translated with the outer one.
    NatIcmpEmbeddedTruncated = 12,
    /// NAT: an ICMP error's embedded packet is not an IP header of the
    /// outer family (wrong version, IHL < 5).
    NatIcmpEmbeddedMalformed = 13,
    /// NAT: an IPv6 extension header chain longer than the programs walk
    /// before reaching the transport header.
    NatIpv6ExtensionChainTooLong = 14,
    /// NAT: the kernel refused to rewrite the packet (store or checksum
    /// helper failed); dropped rather than sent half-translated.
    NatRewriteFailed = 15,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 16] = [
        DropReason::Truncated,
        DropReason::Malformed,
        DropReason::GeneveBadVersion,
        DropReason::GeneveBadOptions,
        DropReason::GeneveBadProtocol,
        DropReason::UnknownVni,
        DropReason::NoLocalEndpoint,
        DropReason::AdjustRoomFailed,
        DropReason::NoUnderlayRoute,
        DropReason::FragmentationNeeded,
        DropReason::UnderlayForwardingDisabled,
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
        if (raw as usize) < Self::ALL.len() {
            Some(Self::ALL[raw as usize])
        } else {
            None
        }
    }

    /// Stable snake_case name, used as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
            DropReason::GeneveBadVersion => "geneve_bad_version",
            DropReason::GeneveBadOptions => "geneve_bad_options",
            DropReason::GeneveBadProtocol => "geneve_bad_protocol",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::NoLocalEndpoint => "no_local_endpoint",
            DropReason::AdjustRoomFailed => "adjust_room_failed",
            DropReason::NoUnderlayRoute => "no_underlay_route",
            DropReason::FragmentationNeeded => "fragmentation_needed",
            DropReason::UnderlayForwardingDisabled => "underlay_forwarding_disabled",
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
