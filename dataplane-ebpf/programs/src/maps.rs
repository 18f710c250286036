//! Every map of the TC programs, in one place. Pinned maps are pinned by name
//! under the loader's pin directory and survive agent restarts.

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap},
};
use strait_common::forward::{ForwardOutcome, NAT_FORWARD_MAP};
use strait_common::{
    counter::{COUNTERS_MAP, COUNTERS_MAX_ENTRIES, COUNTER_OVERFLOW_MAP},
    drop::DROPS_MAP,
    fabric::{
        FabricCounter, LocalEndpoints, NextHop, PacketCount, VniEntry, LOCAL_MAP,
        ROUTES_MAX_ENTRIES, ROUTES_V4_MAP, ROUTES_V6_MAP, STATS_MAP, VNIS_MAP, VNIS_MAX_ENTRIES,
    },
    nat::{
        BPF_F_MMAPABLE, NAT_ACTIVE_MAP, NAT_LEN_MAP, NAT_LEN_MAX_ENTRIES, NAT_RANGES_MAX_ENTRIES,
        NAT_V4_MAP, NAT_V6_MAP,
    },
    Counter, CounterKey, DropReason, NatRangeV4, NatRangeV6,
};

const _: () = assert!(matches!(COUNTERS_MAP.as_bytes(), b"STRAIT_COUNTERS"));
const _: () = assert!(matches!(DROPS_MAP.as_bytes(), b"STRAIT_DROPS"));
const _: () = assert!(matches!(ROUTES_V4_MAP.as_bytes(), b"STRAIT_FAB_RT4"));
const _: () = assert!(matches!(ROUTES_V6_MAP.as_bytes(), b"STRAIT_FAB_RT6"));
const _: () = assert!(matches!(VNIS_MAP.as_bytes(), b"STRAIT_FAB_VNIS"));
const _: () = assert!(matches!(LOCAL_MAP.as_bytes(), b"STRAIT_FAB_LOCAL"));
const _: () = assert!(matches!(STATS_MAP.as_bytes(), b"STRAIT_FAB_STATS"));
const _: () = assert!(matches!(NAT_V4_MAP.as_bytes(), b"STRAIT_NAT_R4"));
const _: () = assert!(matches!(NAT_V6_MAP.as_bytes(), b"STRAIT_NAT_R6"));
const _: () = assert!(matches!(NAT_ACTIVE_MAP.as_bytes(), b"STRAIT_NAT_ACTIVE"));
const _: () = assert!(matches!(NAT_LEN_MAP.as_bytes(), b"STRAIT_NAT_LEN"));
const _: () = assert!(matches!(NAT_FORWARD_MAP.as_bytes(), b"STRAIT_NAT_FWD"));
const _: () = assert!(matches!(
    COUNTER_OVERFLOW_MAP.as_bytes(),
    b"STRAIT_CNT_OVERFLOW"
));

#[map(name = "STRAIT_COUNTERS")]
pub static COUNTERS: PerCpuHashMap<CounterKey, Counter> =
    PerCpuHashMap::pinned(COUNTERS_MAX_ENTRIES, 0);

/// Slot 0 counts packets that could not be counted because `COUNTERS` was full.
#[map(name = "STRAIT_CNT_OVERFLOW")]
pub static COUNTER_OVERFLOW: PerCpuArray<u64> = PerCpuArray::pinned(1, 0);

/// Packets dropped, per CPU, indexed by `DropReason`.
#[map(name = "STRAIT_DROPS")]
pub static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::SLOTS, 0);

/// Fabric routes for inner IPv4 destinations (LPM flag BPF_F_NO_PREALLOC = 1, required).
#[map(name = "STRAIT_FAB_RT4")]
pub static FABRIC_ROUTES_V4: LpmTrie<[u8; 4], NextHop> = LpmTrie::pinned(ROUTES_MAX_ENTRIES, 1);

/// Fabric routes for inner IPv6 destinations.
#[map(name = "STRAIT_FAB_RT6")]
pub static FABRIC_ROUTES_V6: LpmTrie<[u8; 16], NextHop> = LpmTrie::pinned(ROUTES_MAX_ENTRIES, 1);

/// VNIs this host decapsulates.
#[map(name = "STRAIT_FAB_VNIS")]
pub static FABRIC_VNIS: HashMap<u32, VniEntry> = HashMap::pinned(VNIS_MAX_ENTRIES, 0);

/// Slot 0: this host's underlay addresses (outer source).
#[map(name = "STRAIT_FAB_LOCAL")]
pub static FABRIC_LOCAL: Array<LocalEndpoints> = Array::pinned(1, 0);

/// Fabric packet counters, indexed by `FabricCounter`.
#[map(name = "STRAIT_FAB_STATS")]
pub static FABRIC_STATS: PerCpuArray<PacketCount> = PerCpuArray::pinned(FabricCounter::SLOTS, 0);

/// Per-CPU scratch space for building outer headers (too big for the stack).
#[map(name = "STRAIT_FAB_SCR")]
pub static FABRIC_SCRATCH: PerCpuArray<crate::fabric::EncapScratch> =
    PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for building ICMP "too big" answers.
#[map(name = "STRAIT_ICMP_SCR")]
pub static ICMP_SCRATCH: PerCpuArray<crate::icmp::IcmpScratch> =
    PerCpuArray::with_max_entries(1, 0);
/// IPv4 NAT ranges: eight tables, both generations of both addresses in
/// both directions (see strait_common::nat); userspace writes them through a
/// memory mapping.
#[map(name = "STRAIT_NAT_R4")]
pub static NAT_V4: Array<NatRangeV4> = Array::pinned(NAT_RANGES_MAX_ENTRIES, BPF_F_MMAPABLE);

/// IPv6 NAT ranges, as `NAT_V4`.
#[map(name = "STRAIT_NAT_R6")]
pub static NAT_V6: Array<NatRangeV6> = Array::pinned(NAT_RANGES_MAX_ENTRIES, BPF_F_MMAPABLE);

/// How many ranges each NAT table holds.
#[map(name = "STRAIT_NAT_LEN")]
pub static NAT_LEN: Array<u32> = Array::pinned(NAT_LEN_MAX_ENTRIES, 0);

/// Slot 0: the NAT generation the programs use.
#[map(name = "STRAIT_NAT_ACTIVE")]
pub static NAT_ACTIVE: Array<u32> = Array::pinned(1, 0);

/// What the NAT forwarding fast path did, per CPU, indexed by `ForwardOutcome`.
#[map(name = "STRAIT_NAT_FWD")]
pub static NAT_FORWARD_STATS: PerCpuArray<u64> = PerCpuArray::pinned(ForwardOutcome::SLOTS, 0);
