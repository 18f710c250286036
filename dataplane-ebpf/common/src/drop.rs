//! Why a program dropped a packet. Shared by the datapath (which counts each
//! drop under its reason in the `STRAIT_DROPS` per-CPU array) and userspace
//! (which names them in logs, `strait-fabric stats` and metrics labels).

/// Name of the per-CPU array of drop counters, indexed by [`DropReason`].
pub const DROPS_MAP: &str = "STRAIT_DROPS";

/// A reason a packet was dropped. Values are map indexes: append new reasons,
/// never renumber.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than the headers it claims to have.
    Truncated = 0,
    /// A header field with an impossible value (IHL < 5, bad version, ...).
    Malformed = 1,
}

impl DropReason {
    /// Every reason, in index order.
    pub const ALL: [DropReason; 2] = [DropReason::Truncated, DropReason::Malformed];
    /// Size of the drop counter array: room to append reasons without
    /// resizing a pinned map.
    pub const SLOTS: u32 = 64;

    pub const fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(DropReason::Truncated),
            1 => Some(DropReason::Malformed),
            _ => None,
        }
    }

    /// Stable snake_case name, used as a metrics label.
    pub const fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Malformed => "malformed",
        }
    }
}

const _: () = assert!((DropReason::ALL.len() as u32) <= DropReason::SLOTS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_round_trips_through_its_index() {
        for (i, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(*reason as u32, i as u32, "ALL must be in index order");
            assert_eq!(DropReason::from_raw(i as u32), Some(*reason));
        }
        assert_eq!(DropReason::from_raw(DropReason::ALL.len() as u32), None);
    }
}
