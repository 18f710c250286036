//! The NAT forwarding fast path: after destination NAT at ingress, packets
//! that plainly need forwarding go straight to the egress device
//! (`bpf_fib_lookup` + `bpf_redirect`) instead of walking the kernel's
//! forwarding path; everything the stack must see (TTL expiring, too big,
//! local delivery, ...) falls back to it. Each outcome is counted.

/// Per-CPU array of packet counts, indexed by [`ForwardOutcome`].
pub const NAT_FORWARD_MAP: &str = "STRAIT_NAT_FWD";
/// The `.rodata` global the loader sets: [`NatForward`] as a u32.
pub const NAT_FORWARD_GLOBAL: &str = "STRAIT_NAT_FORWARD";

/// How packets leave the NAT ingress program, chosen when it is loaded.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NatForward {
    /// Everything continues up the kernel stack (routing, netfilter).
    Stack = 0,
    /// Plainly forwardable packets are redirected to their egress device.
    Fast = 1,
}

/// What the fast path did with a packet. Values are map indexes: append new
/// outcomes, never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ForwardOutcome {
    /// Redirected to the egress device, TTL / hop limit decremented.
    Forwarded = 0,
    /// TTL / hop limit ≤ 1: the stack answers with time exceeded.
    TtlExpiring = 1,
    /// Larger than the route's MTU: the stack fragments it or answers with
    /// fragmentation needed / packet too big.
    TooBig = 2,
    /// The route says local delivery, or no route forwards it (blackhole,
    /// unreachable, prohibit): the stack delivers or rejects it.
    NotForwarded = 3,
    /// The next hop's link-layer address is not resolved yet: the stack
    /// resolves it, later packets take the fast path.
    NoNeighbour = 4,
    /// Forwarding is disabled on the arrival interface.
    ForwardingDisabled = 5,
    /// IPv4 options or an IPv6 hop-by-hop header, which routers must process.
    HeaderOptions = 6,
    /// Not addressed to this host at the link layer, multicast, broadcast or
    /// link-local: not ours to route.
    NotUnicast = 7,
    /// The route leads back out of the arrival interface: the stack may send
    /// an ICMP redirect.
    SameInterface = 8,
    /// A segmentation-offload aggregate whose segment size cannot be checked
    /// against the MTU (not TCP or UDP right after the IP header).
    UncheckedSegments = 9,
    /// The route lookup failed in some other way (unsupported tunnel
    /// encapsulation route, no source address, helper error).
    LookupFailed = 10,
    /// Not IPv4 or IPv6, or a header cut short.
    NotIp = 11,
}

impl ForwardOutcome {
    /// Every outcome, in index order.
    pub const ALL: [ForwardOutcome; 12] = [
        ForwardOutcome::Forwarded,
        ForwardOutcome::TtlExpiring,
        ForwardOutcome::TooBig,
        ForwardOutcome::NotForwarded,
        ForwardOutcome::NoNeighbour,
        ForwardOutcome::ForwardingDisabled,
        ForwardOutcome::HeaderOptions,
        ForwardOutcome::NotUnicast,
        ForwardOutcome::SameInterface,
        ForwardOutcome::UncheckedSegments,
        ForwardOutcome::LookupFailed,
        ForwardOutcome::NotIp,
    ];
    /// Size of the counter array: room to append outcomes without resizing
    /// a pinned map.
    pub const SLOTS: u32 = 32;

    /// Stable snake_case name, used as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ForwardOutcome::Forwarded => "forwarded",
            ForwardOutcome::TtlExpiring => "ttl_expiring",
            ForwardOutcome::TooBig => "too_big",
            ForwardOutcome::NotForwarded => "not_forwarded",
            ForwardOutcome::NoNeighbour => "no_neighbour",
            ForwardOutcome::ForwardingDisabled => "forwarding_disabled",
            ForwardOutcome::HeaderOptions => "header_options",
            ForwardOutcome::NotUnicast => "not_unicast",
            ForwardOutcome::SameInterface => "same_interface",
            ForwardOutcome::UncheckedSegments => "unchecked_segments",
            ForwardOutcome::LookupFailed => "lookup_failed",
            ForwardOutcome::NotIp => "not_ip",
        }
    }
}

const _: () = assert!((ForwardOutcome::ALL.len() as u32) <= ForwardOutcome::SLOTS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_is_at_its_index_with_a_distinct_name() {
        for (i, outcome) in ForwardOutcome::ALL.iter().enumerate() {
            assert_eq!(*outcome as u32, i as u32, "ALL must be in index order");
            for other in &ForwardOutcome::ALL[..i] {
                assert_ne!(outcome.as_str(), other.as_str());
            }
        }
    }
}
