//! Per-interface traffic counters kept by the `strait_count_*` TC programs.

use core::mem::{align_of, size_of};

/// Name of the per-CPU hash map that holds the counters (also its pin name).
pub const COUNTERS_MAP: &str = "STRAIT_COUNTERS";
/// Name of the per-CPU array counting packets that found the counter map full.
pub const COUNTER_OVERFLOW_MAP: &str = "STRAIT_CNT_OVERFLOW";
/// Upper bound of distinct (interface, direction, class) keys.
pub const COUNTERS_MAX_ENTRIES: u32 = 4096;

/// Direction of a packet relative to the interface it was seen on.
///
/// Stored as a `u8` in [`CounterKey`]; the enum is for code, not for maps.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress = 0,
    Egress = 1,
}

impl Direction {
    pub const ALL: [Direction; 2] = [Direction::Ingress, Direction::Egress];

    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(Direction::Ingress),
            1 => Some(Direction::Egress),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// What kind of frame was counted, from the skb's L3 protocol.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TrafficClass {
    Ipv4 = 0,
    Ipv6 = 1,
    /// ARP, LLDP and anything else that is not IP.
    Other = 2,
}

impl TrafficClass {
    pub const ALL: [TrafficClass; 3] =
        [TrafficClass::Ipv4, TrafficClass::Ipv6, TrafficClass::Other];

    /// Classifies by EtherType in host byte order.
    pub const fn from_ethertype(ethertype: u16) -> Self {
        match ethertype {
            0x0800 => TrafficClass::Ipv4,
            0x86DD => TrafficClass::Ipv6,
            _ => TrafficClass::Other,
        }
    }

    /// Offset of the protocol / next-header byte from the start of the L3 header.
    pub const fn ip_proto_offset(self) -> Option<u32> {
        match self {
            TrafficClass::Ipv4 => Some(9),
            TrafficClass::Ipv6 => Some(6),
            TrafficClass::Other => None,
        }
    }

    pub const fn from_raw(raw: u8) -> Option<Self> {
        match raw {
            0 => Some(TrafficClass::Ipv4),
            1 => Some(TrafficClass::Ipv6),
            2 => Some(TrafficClass::Other),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            TrafficClass::Ipv4 => "ipv4",
            TrafficClass::Ipv6 => "ipv6",
            TrafficClass::Other => "other",
        }
    }
}

/// `ip_proto` of frames that are not IP or whose header could not be read
/// (255 is reserved by IANA, so it never collides with a real protocol).
pub const IP_PROTO_NONE: u8 = 255;

/// Key of [`COUNTERS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterKey {
    pub ifindex: u32,
    /// A [`Direction`] as `u8`.
    pub direction: u8,
    /// A [`TrafficClass`] as `u8`.
    pub class: u8,
    /// IPv4 protocol or IPv6 first next-header (6 TCP, 17 UDP, 1 ICMP,
    /// 58 ICMPv6, 0 hop-by-hop as in MLD), else [`IP_PROTO_NONE`].
    pub ip_proto: u8,
    pub _pad: u8,
}

impl CounterKey {
    pub const fn new(
        ifindex: u32,
        direction: Direction,
        class: TrafficClass,
        ip_proto: u8,
    ) -> Self {
        Self {
            ifindex,
            direction: direction as u8,
            class: class as u8,
            ip_proto,
            _pad: 0,
        }
    }
}

/// Value of [`COUNTERS_MAP`] (one per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    /// Bytes as `skb->len`: L2 header included.
    pub bytes: u64,
}

impl Counter {
    pub const fn plus(self, other: Counter) -> Counter {
        Counter {
            packets: self.packets.wrapping_add(other.packets),
            bytes: self.bytes.wrapping_add(other.bytes),
        }
    }
}

const _: () = assert!(size_of::<CounterKey>() == 8 && align_of::<CounterKey>() == 4);
const _: () = assert!(size_of::<Counter>() == 16 && align_of::<Counter>() == 8);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), only integer fields, explicit padding: every bit pattern is valid.
    unsafe impl aya::Pod for super::CounterKey {}
    // SAFETY: repr(C) with two u64 fields and no padding.
    unsafe impl aya::Pod for super::Counter {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ethertypes_map_to_classes() {
        assert_eq!(TrafficClass::from_ethertype(0x0800), TrafficClass::Ipv4);
        assert_eq!(TrafficClass::from_ethertype(0x86DD), TrafficClass::Ipv6);
        assert_eq!(TrafficClass::from_ethertype(0x0806), TrafficClass::Other);
    }

    #[test]
    fn raw_values_round_trip_and_reject_unknown() {
        for d in Direction::ALL {
            assert_eq!(Direction::from_raw(d as u8), Some(d));
        }
        for c in TrafficClass::ALL {
            assert_eq!(TrafficClass::from_raw(c as u8), Some(c));
        }
        assert_eq!(Direction::from_raw(2), None);
        assert_eq!(TrafficClass::from_raw(3), None);
    }

    #[test]
    fn key_padding_is_zeroed() {
        let key = CounterKey::new(7, Direction::Egress, TrafficClass::Ipv6, 17);
        assert_eq!(
            (
                key.ifindex,
                key.direction,
                key.class,
                key.ip_proto,
                key._pad
            ),
            (7, 1, 1, 17, 0)
        );
    }
}
