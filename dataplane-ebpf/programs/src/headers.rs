//! Wire headers, as laid out on the wire (all multi-byte fields big-endian).

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const IPPROTO_UDP: u8 = 17;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub saddr: [u8; 4],
    pub daddr: [u8; 4],
}

impl Ipv4Hdr {
    /// The header checksum (RFC 791) over the header with `check` zeroed.
    pub fn compute_checksum(&self) -> [u8; 2] {
        let words = [
            u16::from_be_bytes([self.version_ihl, self.tos]),
            u16::from_be_bytes(self.tot_len),
            u16::from_be_bytes(self.id),
            u16::from_be_bytes(self.frag_off),
            u16::from_be_bytes([self.ttl, self.protocol]),
            u16::from_be_bytes([self.saddr[0], self.saddr[1]]),
            u16::from_be_bytes([self.saddr[2], self.saddr[3]]),
            u16::from_be_bytes([self.daddr[0], self.daddr[1]]),
            u16::from_be_bytes([self.daddr[2], self.daddr[3]]),
        ];
        let mut sum: u32 = 0;
        for w in words {
            sum += u32::from(w);
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        (!(sum as u16)).to_be_bytes()
    }
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Ipv6Hdr {
    pub version_class_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy)]
pub struct UdpHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

/// RFC 8926 section 3.4, without options.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GeneveHdr {
    /// Version (2 bits, 0) and options length in 4-byte words (6 bits).
    pub ver_opt_len: u8,
    /// O (control) and C (critical options) bits, then reserved.
    pub flags: u8,
    /// EtherType of the payload.
    pub protocol: [u8; 2],
    /// VNI (24 bits) then a reserved byte.
    pub vni_reserved: [u8; 4],
}

impl GeneveHdr {
    pub fn new(protocol: u16, vni: u32) -> Self {
        let vni = vni.to_be_bytes();
        GeneveHdr {
            ver_opt_len: 0,
            flags: 0,
            protocol: protocol.to_be_bytes(),
            vni_reserved: [vni[1], vni[2], vni[3], 0],
        }
    }

    pub fn version(&self) -> u8 {
        self.ver_opt_len >> 6
    }

    pub fn options_len(&self) -> usize {
        usize::from(self.ver_opt_len & 0x3f) * 4
    }

    pub fn vni(&self) -> u32 {
        u32::from_be_bytes([
            0,
            self.vni_reserved[0],
            self.vni_reserved[1],
            self.vni_reserved[2],
        ])
    }
}

/// Outer headers for an IPv4 underlay, written in one store.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OuterV4 {
    pub ip: Ipv4Hdr,
    pub udp: UdpHdr,
    pub geneve: GeneveHdr,
}

/// Outer headers for an IPv6 underlay, written in one store.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OuterV6 {
    pub ip: Ipv6Hdr,
    pub udp: UdpHdr,
    pub geneve: GeneveHdr,
}

const _: () = assert!(core::mem::size_of::<Ipv4Hdr>() == 20);
const _: () = assert!(core::mem::size_of::<Ipv6Hdr>() == 40);
const _: () = assert!(core::mem::size_of::<OuterV4>() == strait_common::fabric::OVERHEAD_V4);
const _: () = assert!(core::mem::size_of::<OuterV6>() == strait_common::fabric::OVERHEAD_V6);
