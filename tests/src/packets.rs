//! Reference packet builders and an RFC 1071 checksum for the datapath
//! tests: written independently of the code under test, so a checksum the
//! programs get wrong cannot be "verified" by the same mistake.

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;
pub const ICMP: u8 = 1;
pub const ICMPV6: u8 = 58;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;

/// The Internet checksum of the concatenation of `parts`.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for chunk in bytes.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Whether data including its checksum field sums to all ones.
pub fn checksum_ok(parts: &[&[u8]]) -> bool {
    internet_checksum(parts) == 0
}

pub fn pseudo_header(src: &[u8], dst: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(src);
    p.extend_from_slice(dst);
    if src.len() == 4 {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    p
}

pub fn ethernet(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An IPv4 header (with checksum) and payload; `frag` is the flags and
/// fragment offset field, `total` overrides the total length.
pub fn ipv4_with(src: [u8; 4], dst: [u8; 4], proto: u8, frag: u16, payload: &[u8]) -> Vec<u8> {
    let total = (20 + payload.len()) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let csum = internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&csum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    ipv4_with(src, dst, proto, 0x4000, payload)
}

pub fn ipv6(src: [u8; 16], dst: [u8; 16], next: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h.extend_from_slice(payload);
    h
}

pub fn udp(src: &[u8], dst: &[u8], data: &[u8]) -> Vec<u8> {
    let len = 8 + data.len();
    let mut u = vec![0x9c, 0x40, 0x13, 0x88];
    u.extend_from_slice(&(len as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    let csum = internet_checksum(&[&pseudo_header(src, dst, UDP, len), &u]);
    // RFC 768: a computed zero is sent as all ones.
    let csum = if csum == 0 { 0xffff } else { csum };
    u[6..8].copy_from_slice(&csum.to_be_bytes());
    u
}

pub fn udp_without_checksum(data: &[u8]) -> Vec<u8> {
    let mut u = vec![0x9c, 0x40, 0x13, 0x88];
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    u
}

pub fn tcp(src: &[u8], dst: &[u8], data: &[u8]) -> Vec<u8> {
    let mut t = vec![0xc3, 0x50, 0x00, 0x50, 0, 0, 0x10, 0, 0, 0, 0x20, 0];
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    let csum = internet_checksum(&[&pseudo_header(src, dst, TCP, t.len()), &t]);
    t[16..18].copy_from_slice(&csum.to_be_bytes());
    t
}

/// An ICMP message: no pseudo header.
pub fn icmp4(kind: u8, code: u8, rest: [u8; 4], body: &[u8]) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let csum = internet_checksum(&[&m]);
    m[2..4].copy_from_slice(&csum.to_be_bytes());
    m
}

/// An ICMPv6 message: pseudo header of the outer addresses.
pub fn icmp6(
    src: [u8; 16],
    dst: [u8; 16],
    kind: u8,
    code: u8,
    rest: [u8; 4],
    body: &[u8],
) -> Vec<u8> {
    let mut m = vec![kind, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(body);
    let csum = internet_checksum(&[&pseudo_header(&src, &dst, ICMPV6, m.len()), &m]);
    m[2..4].copy_from_slice(&csum.to_be_bytes());
    m
}

pub fn eth4(packet: Vec<u8>) -> Vec<u8> {
    ethernet(0x0800, &packet)
}

pub fn eth6(packet: Vec<u8>) -> Vec<u8> {
    ethernet(0x86dd, &packet)
}

/// Independently checks every checksum of an output frame: the IPv4 header,
/// and the TCP/UDP/ICMP/ICMPv6 checksum of unfragmented packets (UDP over
/// IPv4 may carry none).
pub fn assert_checksums_valid(frame: &[u8]) {
    if !matches!(frame[12..14], [0x08, 0x00] | [0x86, 0xdd]) {
        return;
    }
    let ip = &frame[14..];
    let (src, dst, proto, l4): (&[u8], &[u8], u8, &[u8]) = match ip[0] >> 4 {
        4 => {
            let ihl = usize::from(ip[0] & 0xf) * 4;
            assert!(checksum_ok(&[&ip[..ihl]]), "bad IPv4 header checksum");
            if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
                return; // a fragment: its transport checksum spans others
            }
            (&ip[12..16], &ip[16..20], ip[9], &ip[ihl..])
        }
        6 => (&ip[8..24], &ip[24..40], ip[6], &ip[40..]),
        v => panic!("not IP: version {v}"),
    };
    match proto {
        TCP | UDP | ICMPV6 => {
            if proto == UDP && src.len() == 4 && l4[6..8] == [0, 0] {
                return;
            }
            assert!(
                checksum_ok(&[&pseudo_header(src, dst, proto, l4.len()), l4]),
                "bad checksum of protocol {proto}"
            );
        }
        ICMP => assert!(checksum_ok(&[l4]), "bad ICMP checksum"),
        _ => {}
    }
}
