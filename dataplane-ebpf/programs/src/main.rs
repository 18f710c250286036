//! Entry points of Strait's TC programs. Maps live in `maps`, logic in one
//! module per concern; this file only names the attach points.
#![no_std]
#![no_main]

mod counter;
mod drop;
mod fabric;
mod headers;
mod icmp;
mod maps;
mod mss;
mod nat;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};
use strait_common::Direction;

/// Counts every frame entering the interface; never changes the verdict.
#[classifier]
pub fn strait_count_ingress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Ingress);
    // UNSPEC = "no opinion": tcx runs the next program, cls_bpf passes.
    TC_ACT_UNSPEC
}

/// Counts every frame leaving the interface; never changes the verdict.
#[classifier]
pub fn strait_count_egress(ctx: TcContext) -> i32 {
    counter::count(&ctx, Direction::Egress);
    TC_ACT_UNSPEC
}

/// Geneve-encapsulates packets routed to the fabric (attach at ingress of
/// pod-facing interfaces on nodes, of the tunnel-facing one on gateways).
#[classifier]
pub fn strait_geneve_encap(ctx: TcContext) -> i32 {
    fabric::encap(&ctx)
}

/// Decapsulates Geneve for our VNIs (attach at ingress of the underlay).
#[classifier]
pub fn strait_geneve_decap(ctx: TcContext) -> i32 {
    fabric::decap(&ctx)
}

/// Gateway, from the peer: translates both addresses through the ingress
/// tables (the peer's real addresses back to how this cluster sees them,
/// the addresses it exposes back to the local ones), and the quoted packet
/// of ICMP errors the other way.
#[classifier]
pub fn strait_nat_ingress(ctx: TcContext) -> i32 {
    nat::translate::<{ nat::ETHERNET }>(&ctx, Direction::Ingress)
}

/// Gateway, towards the peer: translates both addresses through the egress
/// tables (how this cluster sees the peer to the peer's real addresses,
/// local addresses to those they are exposed as).
#[classifier]
pub fn strait_nat_egress(ctx: TcContext) -> i32 {
    nat::translate::<{ nat::ETHERNET }>(&ctx, Direction::Egress)
}

/// As `strait_nat_ingress`, on an L3-only device (WireGuard, tun, IP-in-IP).
#[classifier]
pub fn strait_nat_l3_ingress(ctx: TcContext) -> i32 {
    nat::translate::<{ nat::L3_ONLY }>(&ctx, Direction::Ingress)
}

/// As `strait_nat_egress`, on an L3-only device.
#[classifier]
pub fn strait_nat_l3_egress(ctx: TcContext) -> i32 {
    nat::translate::<{ nat::L3_ONLY }>(&ctx, Direction::Egress)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
