//! The Geneve fabric between nodes and gateways: route and VNI tables the
//! `strait_geneve_*` programs read, and the counters they keep.

use core::mem::size_of;

/// IANA port of Geneve (RFC 8926).
pub const GENEVE_PORT: u16 = 6081;
/// Outer headers added by encapsulation, without options.
pub const GENEVE_HDR_LEN: usize = 8;
pub const UDP_HDR_LEN: usize = 8;
pub const IPV4_HDR_LEN: usize = 20;
pub const IPV6_HDR_LEN: usize = 40;
/// Bytes added to an inner IPv4/IPv6 packet by an IPv4 / IPv6 outer header.
pub const OVERHEAD_V4: usize = IPV4_HDR_LEN + UDP_HDR_LEN + GENEVE_HDR_LEN;
pub const OVERHEAD_V6: usize = IPV6_HDR_LEN + UDP_HDR_LEN + GENEVE_HDR_LEN;

/// LPM trie: inner IPv4 destination prefix → [`NextHop`].
pub const ROUTES_V4_MAP: &str = "STRAIT_FAB_RT4";
/// LPM trie: inner IPv6 destination prefix → [`NextHop`].
pub const ROUTES_V6_MAP: &str = "STRAIT_FAB_RT6";
/// Hash: VNI (u32) → [`VniEntry`]; decapsulation accepts only these.
pub const VNIS_MAP: &str = "STRAIT_FAB_VNIS";
/// Array with one [`LocalEndpoints`]: the outer source addresses.
pub const LOCAL_MAP: &str = "STRAIT_FAB_LOCAL";
/// Per-CPU array of [`FabricCounter`] slots.
pub const STATS_MAP: &str = "STRAIT_FAB_STATS";

pub const ROUTES_MAX_ENTRIES: u32 = 16384;
pub const VNIS_MAX_ENTRIES: u32 = 1024;

/// Address family tags stored in maps.
pub const FAMILY_V4: u32 = 4;
pub const FAMILY_V6: u32 = 6;

/// Where to send packets for a destination: the outer destination (a
/// gateway's or a node's underlay address) and the VNI.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct NextHop {
    /// Outer destination; IPv4 in the first 4 bytes when `family` is 4.
    pub endpoint: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`]: the outer header's family.
    pub family: u32,
    /// Geneve VNI, 24 bits.
    pub vni: u32,
}

/// Accepted VNI (the value is reserved for per-VNI options).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VniEntry {
    pub flags: u32,
}

/// This host's underlay addresses, used as outer source.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct LocalEndpoints {
    pub v6: [u8; 16],
    pub v4: [u8; 4],
    /// Bit 0: `v4` is set; bit 1: `v6` is set.
    pub present: u32,
    /// The underlay interface: outer packets are routed out of it only.
    pub underlay_ifindex: u32,
    /// MTU left for inner packets; TCP SYNs entering the fabric get their
    /// MSS clamped to fit it. 0 disables clamping.
    pub overlay_mtu: u32,
}

impl LocalEndpoints {
    pub const HAS_V4: u32 = 1;
    pub const HAS_V6: u32 = 2;
}

/// Slots of [`STATS_MAP`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FabricCounter {
    Encapsulated = 0,
    Decapsulated = 1,
    /// Packets with no route: passed on untouched.
    NotRouted = 2,
    /// Packets too big for the overlay, answered with ICMP so the sender
    /// lowers its path MTU.
    AnsweredTooBig = 3,
}

impl FabricCounter {
    pub const ALL: [FabricCounter; 4] = [
        FabricCounter::Encapsulated,
        FabricCounter::Decapsulated,
        FabricCounter::NotRouted,
        FabricCounter::AnsweredTooBig,
    ];
    pub const SLOTS: u32 = 8;

    pub const fn as_str(self) -> &'static str {
        match self {
            FabricCounter::Encapsulated => "encapsulated",
            FabricCounter::Decapsulated => "decapsulated",
            FabricCounter::NotRouted => "not_routed",
            FabricCounter::AnsweredTooBig => "answered_too_big",
        }
    }
}

/// Value of a [`STATS_MAP`] slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PacketCount {
    pub packets: u64,
    pub bytes: u64,
}

const _: () = assert!(size_of::<NextHop>() == 24);
const _: () = assert!(size_of::<LocalEndpoints>() == 32);
const _: () = assert!(size_of::<VniEntry>() == 4);
const _: () = assert!(size_of::<PacketCount>() == 16);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), integer fields only, no implicit padding (asserted above).
    unsafe impl aya::Pod for super::NextHop {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::VniEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::LocalEndpoints {}
    // SAFETY: as above.
    unsafe impl aya::Pod for super::PacketCount {}
}
