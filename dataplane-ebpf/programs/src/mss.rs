//! TCP MSS clamping for SYNs entering the fabric, so that TCP never builds
//! segments that would not fit through the tunnel once encapsulated.

use aya_ebpf::programs::TcContext;

use crate::headers::{ETH_HLEN, ETH_P_IP, ETH_P_IPV6};

const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCPOPT_EOL: u8 = 0;
const TCPOPT_NOP: u8 = 1;
const TCPOPT_MSS: u8 = 2;
/// Options are at most 40 bytes; 10 steps cover any sane layout (MSS is
/// nearly always first) and keep the loop bounded for the verifier.
const MAX_OPTION_STEPS: usize = 10;
/// BPF_F_... size field of bpf_l4_csum_replace: a 2-byte field.
const CSUM_FIELD_2_BYTES: u64 = 2;

/// Lowers the MSS option of a TCP SYN in the inner packet (at ETH_HLEN) to
/// `overlay_mtu` minus the IP and TCP headers. Anything else, including
/// packets it cannot parse, is left exactly as it was.
pub fn clamp(ctx: &TcContext, ethertype: u16, overlay_mtu: u32) {
    if overlay_mtu == 0 {
        return;
    }
    let Some((l4, ip_hdr_len)) = tcp_offset(ctx, ethertype) else {
        return;
    };
    let Some(max_mss) = overlay_mtu.checked_sub(ip_hdr_len as u32 + 20) else {
        return;
    };
    let Ok([data_offset, flags]) = ctx.load::<[u8; 2]>(l4 + 12) else {
        return;
    };
    if flags & TCP_FLAG_SYN == 0 {
        return;
    }
    let options_end = l4 + usize::from(data_offset >> 4) * 4;
    let mut off = l4 + 20;
    for _ in 0..MAX_OPTION_STEPS {
        if off >= options_end {
            return;
        }
        let Ok(kind) = ctx.load::<u8>(off) else {
            return;
        };
        match kind {
            TCPOPT_EOL => return,
            TCPOPT_NOP => off += 1,
            _ => {
                let Ok(len) = ctx.load::<u8>(off + 1) else {
                    return;
                };
                if len < 2 {
                    return;
                }
                if kind == TCPOPT_MSS && len == 4 {
                    rewrite_mss(ctx, l4, off + 2, max_mss);
                    return;
                }
                off += usize::from(len);
            }
        }
    }
}

fn rewrite_mss(ctx: &TcContext, l4: usize, at: usize, max_mss: u32) {
    let Ok(raw) = ctx.load::<[u8; 2]>(at) else {
        return;
    };
    if u32::from(u16::from_be_bytes(raw)) <= max_mss {
        return;
    }
    let clamped = (max_mss as u16).to_be_bytes();
    if ctx.store(at, &clamped, 0).is_ok() {
        // The MSS is not in the pseudo-header: a plain 2-byte replacement.
        let _ = ctx.l4_csum_replace(
            l4 + 16,
            u64::from(u16::from_ne_bytes(raw)),
            u64::from(u16::from_ne_bytes(clamped)),
            CSUM_FIELD_2_BYTES,
        );
    }
}

/// Offset of the TCP header and length of the IP header, for unfragmented
/// (or first-fragment) TCP over IPv4 without surprises, or TCP directly after
/// the IPv6 header.
fn tcp_offset(ctx: &TcContext, ethertype: u16) -> Option<(usize, usize)> {
    match ethertype {
        ETH_P_IP => {
            let [version_ihl, _] = ctx.load::<[u8; 2]>(ETH_HLEN).ok()?;
            let frag: [u8; 2] = ctx.load(ETH_HLEN + 6).ok()?;
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            let ihl = usize::from(version_ihl & 0x0f) * 4;
            let later_fragment = u16::from_be_bytes(frag) & 0x1fff != 0;
            (proto == IPPROTO_TCP && ihl >= 20 && !later_fragment).then_some((ETH_HLEN + ihl, ihl))
        }
        ETH_P_IPV6 => {
            let next: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            (next == IPPROTO_TCP).then_some((ETH_HLEN + 40, 40))
        }
        _ => None,
    }
}
