//! Dropping a packet, always with a counted reason.

use aya_ebpf::bindings::TC_ACT_SHOT;
use strait_common::DropReason;

use crate::maps::DROPS;

/// Counts the drop under `reason` and returns the verdict that drops.
#[inline(always)]
pub fn drop_packet(reason: DropReason) -> i32 {
    if let Some(slot) = DROPS.get_ptr_mut(reason as u32) {
        // SAFETY: this CPU's slot of a per-CPU array; TC programs run with
        // preemption disabled, so nobody else writes it.
        unsafe { *slot += 1 };
    }
    TC_ACT_SHOT
}
