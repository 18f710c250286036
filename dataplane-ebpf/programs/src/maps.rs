//! Every map of the TC programs, in one place. Pinned maps are pinned by name
//! under the loader's pin directory and survive agent restarts.

use aya_ebpf::{
    macros::map,
    maps::{PerCpuArray, PerCpuHashMap},
};
use strait_common::{
    counter::{COUNTERS_MAP, COUNTERS_MAX_ENTRIES, COUNTER_OVERFLOW_MAP},
    drop::DROPS_MAP,
    Counter, CounterKey, DropReason,
};

const _: () = assert!(matches!(COUNTERS_MAP.as_bytes(), b"STRAIT_COUNTERS"));
const _: () = assert!(matches!(DROPS_MAP.as_bytes(), b"STRAIT_DROPS"));
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
