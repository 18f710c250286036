//! Geneve (RFC 8926) encapsulation toward the fabric and decapsulation from
//! it, entirely in TC: no kernel tunnel device.
//!
//! The payload is the inner IP packet (Geneve protocol type = its EtherType),
//! so the outer headers are IP + UDP + Geneve, inserted right after the
//! Ethernet header with `bpf_skb_adjust_room`; the kernel keeps GSO working
//! because the room is tagged as a UDP tunnel.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, bpf_fib_lookup as FibParams, BPF_FIB_LOOKUP_OUTPUT,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_OK,
    },
    helpers::{bpf_fib_lookup, bpf_get_hash_recalc, bpf_redirect_neigh},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use strait_common::{
    fabric::{FabricCounter, LocalEndpoints, FAMILY_V4, GENEVE_PORT, OVERHEAD_V4, OVERHEAD_V6},
    DropReason,
};

use crate::{
    drop::drop_packet,
    headers::{
        GeneveHdr, Ipv4Hdr, Ipv6Hdr, OuterV4, OuterV6, UdpHdr, ETH_HLEN, ETH_P_IP, ETH_P_IPV6,
        IPPROTO_UDP,
    },
    icmp,
    maps::{
        FABRIC_LOCAL, FABRIC_ROUTES_V4, FABRIC_ROUTES_V6, FABRIC_SCRATCH, FABRIC_STATS, FABRIC_VNIS,
    },
    mss,
};

const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// BPF_FIB_LKUP_RET_SUCCESS / _NO_NEIGH: a route exists.
const FIB_SUCCESS: i64 = 0;
const FIB_NO_NEIGH: i64 = 7;
const FIB_FWD_DISABLED: i64 = 5;
const FIB_FRAG_NEEDED: i64 = 8;
/// Outer UDP source ports come from this range, picked by flow hash, so ECMP
/// and RSS on the underlay spread flows while each flow keeps its path.
const SPORT_BASE: u32 = 49152;
const SPORT_SPAN: u32 = 16384;

fn count(counter: FabricCounter, bytes: u32) {
    if let Some(slot) = FABRIC_STATS.get_ptr_mut(counter as u32) {
        // SAFETY: this CPU's slot of a per-CPU array, preemption disabled in TC.
        unsafe {
            (*slot).packets += 1;
            (*slot).bytes += u64::from(bytes);
        }
    }
}

/// Encapsulates packets whose destination has a fabric route and sends them
/// to the route's endpoint; everything else passes untouched.
pub fn encap(ctx: &TcContext) -> i32 {
    match try_encap(ctx) {
        Ok(action) => action,
        Err(reason) => drop_packet(reason),
    }
}

fn try_encap(ctx: &TcContext) -> Result<i32, DropReason> {
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let hop = match ethertype {
        ETH_P_IP => {
            let daddr: [u8; 4] = ctx.load(ETH_HLEN + 16).map_err(|_| DropReason::Truncated)?;
            FABRIC_ROUTES_V4.get(Key::new(32, daddr))
        }
        ETH_P_IPV6 => {
            let daddr: [u8; 16] = ctx.load(ETH_HLEN + 24).map_err(|_| DropReason::Truncated)?;
            FABRIC_ROUTES_V6.get(Key::new(128, daddr))
        }
        _ => None,
    };
    let Some(hop) = hop else {
        count(FabricCounter::NotRouted, ctx.len());
        return Ok(TC_ACT_OK);
    };
    let local = FABRIC_LOCAL.get(0).ok_or(DropReason::NoLocalEndpoint)?;
    let inner_len = ctx.len().saturating_sub(ETH_HLEN as u32);
    // SAFETY: reading gso_size from the kernel-provided context.
    let gso = unsafe { (*ctx.skb.skb).gso_size } != 0;
    // GSO packets are segmented to their (clamped) MSS after encapsulation.
    let too_big = local.overlay_mtu != 0 && !gso && inner_len > local.overlay_mtu;
    if too_big {
        let df = match ethertype {
            ETH_P_IPV6 => true,
            _ => {
                let frag_off: [u8; 2] =
                    ctx.load(ETH_HLEN + 6).map_err(|_| DropReason::Truncated)?;
                frag_off[0] & 0x40 != 0
            }
        };
        if !df {
            // Fragmenting the inner packet is not done here (redirected
            // packets skip the kernel's fragmentation); the drop is counted.
            return Err(DropReason::FragmentationNeeded);
        }
        count(FabricCounter::AnsweredTooBig, inner_len);
        return if ethertype == ETH_P_IPV6 {
            icmp::too_big_v6(ctx, local, local.overlay_mtu)
        } else {
            icmp::too_big_v4(ctx, local, local.overlay_mtu)
        };
    }
    mss::clamp(ctx, ethertype, local.overlay_mtu);
    // Headers are built in a per-CPU scratch slot: the BPF stack is 512 bytes.
    let scratch = FABRIC_SCRATCH
        .get_ptr_mut(0)
        .ok_or(DropReason::AdjustRoomFailed)?;
    // SAFETY: this CPU's scratch slot, used only for the duration of this
    // program run with preemption disabled.
    let scratch = unsafe { &mut *scratch };

    // SAFETY: the context pointer the kernel passed us; the helper only reads the skb.
    let hash = unsafe { bpf_get_hash_recalc(ctx.skb.skb) };
    let udp = UdpHdr {
        source: (((hash % SPORT_SPAN) + SPORT_BASE) as u16).to_be_bytes(),
        dest: GENEVE_PORT.to_be_bytes(),
        len: ((inner_len + 16) as u16).to_be_bytes(),
        // Zero: RFC 8926 allows it over IPv4, and RFC 6935 for tunnels over IPv6.
        check: [0; 2],
    };
    let geneve = GeneveHdr::new(ethertype, hop.vni);
    scratch.fib = fib_params(local.underlay_ifindex);

    if hop.family == FAMILY_V4 {
        if local.present & LocalEndpoints::HAS_V4 == 0 {
            return Err(DropReason::NoLocalEndpoint);
        }
        let outer = &mut scratch.v4;
        outer.ip = Ipv4Hdr {
            version_ihl: 0x45,
            tos: 0,
            tot_len: ((inner_len as usize + OVERHEAD_V4) as u16).to_be_bytes(),
            id: [0; 2],
            // DF: the underlay must not fragment; oversized packets were answered above.
            frag_off: 0x4000u16.to_be_bytes(),
            ttl: 64,
            protocol: IPPROTO_UDP,
            check: [0; 2],
            saddr: local.v4,
            daddr: [
                hop.endpoint[0],
                hop.endpoint[1],
                hop.endpoint[2],
                hop.endpoint[3],
            ],
        };
        outer.ip.check = outer.ip.compute_checksum();
        outer.udp = udp;
        outer.geneve = geneve;
        grow(ctx, OVERHEAD_V4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4)?;
        ctx.store(ETH_HLEN, &scratch.v4, 0)
            .map_err(|_| DropReason::AdjustRoomFailed)?;
        ctx.store(12, &ETH_P_IP.to_be_bytes(), 0)
            .map_err(|_| DropReason::AdjustRoomFailed)?;
        scratch.fib.family = AF_INET;
        scratch.fib.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(scratch.v4.ip.saddr);
        scratch.fib.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(scratch.v4.ip.daddr);
    } else {
        if local.present & LocalEndpoints::HAS_V6 == 0 {
            return Err(DropReason::NoLocalEndpoint);
        }
        let outer = &mut scratch.v6;
        outer.ip = Ipv6Hdr {
            version_class_flow: [0x60, 0, 0, 0],
            payload_len: udp.len,
            next_header: IPPROTO_UDP,
            hop_limit: 64,
            saddr: local.v6,
            daddr: hop.endpoint,
        };
        outer.udp = udp;
        outer.geneve = geneve;
        grow(ctx, OVERHEAD_V6, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6)?;
        ctx.store(ETH_HLEN, &scratch.v6, 0)
            .map_err(|_| DropReason::AdjustRoomFailed)?;
        ctx.store(12, &ETH_P_IPV6.to_be_bytes(), 0)
            .map_err(|_| DropReason::AdjustRoomFailed)?;
        scratch.fib.family = AF_INET6;
        scratch.fib.__bindgen_anon_3.ipv6_src = words(scratch.v6.ip.saddr);
        scratch.fib.__bindgen_anon_4.ipv6_dst = words(scratch.v6.ip.daddr);
    }
    send(ctx, &mut scratch.fib, inner_len)
}

fn words(addr: [u8; 16]) -> [u32; 4] {
    [
        u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
        u32::from_ne_bytes([addr[4], addr[5], addr[6], addr[7]]),
        u32::from_ne_bytes([addr[8], addr[9], addr[10], addr[11]]),
        u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]),
    ]
}

fn grow(ctx: &TcContext, room: usize, l3_flag: u32) -> Result<(), DropReason> {
    let flags = u64::from(l3_flag | BPF_F_ADJ_ROOM_ENCAP_L4_UDP);
    ctx.adjust_room(room as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| DropReason::AdjustRoomFailed)
}

/// Parameters of an output route lookup out of the underlay, as for a
/// packet this host sends (the arrival interface, a pod veth, is irrelevant).
fn fib_params(underlay_ifindex: u32) -> FibParams {
    // SAFETY: bpf_fib_lookup is plain old data; all-zero is its documented initial state.
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.ifindex = underlay_ifindex;
    fib
}

/// Routes the encapsulated packet on the underlay and hands it to the
/// neighbour subsystem of the egress device (which fills in the MACs).
fn send(ctx: &TcContext, fib: &mut FibParams, inner_len: u32) -> Result<i32, DropReason> {
    // SAFETY: `fib` is a valid, initialised bpf_fib_lookup in our scratch slot
    // and its size is passed along; the context pointer comes from the kernel.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.skb.skb as *mut _,
            fib,
            core::mem::size_of::<FibParams>() as i32,
            BPF_FIB_LOOKUP_OUTPUT,
        )
    };
    match rc {
        FIB_SUCCESS | FIB_NO_NEIGH => {}
        FIB_FRAG_NEEDED => return Err(DropReason::FragmentationNeeded),
        FIB_FWD_DISABLED => return Err(DropReason::UnderlayForwardingDisabled),
        _ => return Err(DropReason::NoUnderlayRoute),
    }
    count(FabricCounter::Encapsulated, inner_len);
    // SAFETY: no neighbour parameters: the kernel resolves the next hop from
    // the skb's (outer) destination on `fib.ifindex`.
    Ok(unsafe { bpf_redirect_neigh(fib.ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}

/// Decapsulates Geneve for our VNIs and lets the inner packet continue up
/// the stack; anything not Geneve passes untouched.
pub fn decap(ctx: &TcContext) -> i32 {
    match try_decap(ctx) {
        Ok(action) => action,
        Err(reason) => drop_packet(reason),
    }
}

fn try_decap(ctx: &TcContext) -> Result<i32, DropReason> {
    let ethertype = u16::from_be(ctx.skb.protocol() as u16);
    let ip_len = match ethertype {
        ETH_P_IP => {
            let Ok(ip) = ctx.load::<Ipv4Hdr>(ETH_HLEN) else {
                return Ok(TC_ACT_OK);
            };
            let fragmented = u16::from_be_bytes(ip.frag_off) & 0x3fff != 0;
            if ip.protocol != IPPROTO_UDP || fragmented {
                return Ok(TC_ACT_OK);
            }
            let ihl = usize::from(ip.version_ihl & 0x0f) * 4;
            if ihl < 20 {
                return Ok(TC_ACT_OK);
            }
            ihl
        }
        ETH_P_IPV6 => {
            let Ok(ip) = ctx.load::<Ipv6Hdr>(ETH_HLEN) else {
                return Ok(TC_ACT_OK);
            };
            if ip.next_header != IPPROTO_UDP {
                return Ok(TC_ACT_OK);
            }
            40
        }
        _ => return Ok(TC_ACT_OK),
    };
    let udp_off = ETH_HLEN + ip_len;
    let Ok(udp) = ctx.load::<UdpHdr>(udp_off) else {
        return Ok(TC_ACT_OK);
    };
    if u16::from_be_bytes(udp.dest) != GENEVE_PORT {
        return Ok(TC_ACT_OK);
    }
    // From here on the packet claims to be Geneve for this host: anything
    // wrong with it is a drop with a reason, never a pass.
    let geneve: GeneveHdr = ctx.load(udp_off + 8).map_err(|_| DropReason::Truncated)?;
    if geneve.version() != 0 {
        return Err(DropReason::GeneveBadVersion);
    }
    let outer_len = ip_len + 8 + 8 + geneve.options_len();
    let inner_proto = u16::from_be_bytes(geneve.protocol);
    // The inner IP header must be there in full.
    let inner_min = match inner_proto {
        ETH_P_IP => 20,
        ETH_P_IPV6 => 40,
        _ => return Err(DropReason::GeneveBadProtocol),
    };
    if (ctx.len() as usize) < ETH_HLEN + outer_len + inner_min {
        return Err(if (ctx.len() as usize) < ETH_HLEN + outer_len {
            DropReason::GeneveBadOptions
        } else {
            DropReason::Truncated
        });
    }
    if FABRIC_VNIS.get_ptr(geneve.vni()).is_none() {
        return Err(DropReason::UnknownVni);
    }
    let decap_flag = if inner_proto == ETH_P_IP {
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4
    } else {
        BPF_F_ADJ_ROOM_DECAP_L3_IPV6
    };
    ctx.adjust_room(-(outer_len as i32), BPF_ADJ_ROOM_MAC, u64::from(decap_flag))
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    ctx.store(12, &inner_proto.to_be_bytes(), 0)
        .map_err(|_| DropReason::AdjustRoomFailed)?;
    count(
        FabricCounter::Decapsulated,
        ctx.len().saturating_sub(ETH_HLEN as u32),
    );
    Ok(TC_ACT_OK)
}

/// Per-CPU working memory of the encapsulation program.
#[repr(C)]
pub struct EncapScratch {
    pub v4: OuterV4,
    pub v6: OuterV6,
    pub fib: FibParams,
}
