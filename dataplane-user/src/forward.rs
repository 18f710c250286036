//! The NAT forwarding fast path seen from userspace: its switch (set when
//! the programs are loaded) and its per-outcome counters (`STRAIT_NAT_FWD`).

use std::collections::BTreeMap;

use aya::maps::{Map, MapData, PerCpuArray};
use strait_common::forward::NAT_FORWARD_MAP;
pub use strait_common::forward::{ForwardOutcome, NatForward};

use crate::{bpffs::PinDir, programs::Dataplane, Error};

/// Packets per fast-path outcome so far (outcomes never seen are absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ForwardCounts(pub BTreeMap<ForwardOutcome, u64>);

impl ForwardCounts {
    /// Reads the counters of a loaded object.
    pub fn read_loaded(dp: &Dataplane) -> Result<Self, Error> {
        Self::read(
            dp.ebpf()
                .map(NAT_FORWARD_MAP)
                .ok_or(Error::MissingMap(NAT_FORWARD_MAP))?,
        )
    }

    /// Reads the counters pinned in `pin_dir`.
    pub fn read_pinned(pin_dir: &PinDir) -> Result<Self, Error> {
        let map = pin_dir
            .open_map(NAT_FORWARD_MAP)
            .map_err(|source| Error::Map {
                name: NAT_FORWARD_MAP,
                source,
            })?;
        Self::read(&map)
    }

    fn read(map: &Map) -> Result<Self, Error> {
        let err = |source| Error::Map {
            name: NAT_FORWARD_MAP,
            source,
        };
        let slots: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(err)?;
        let mut counts = BTreeMap::new();
        for outcome in ForwardOutcome::ALL {
            let total: u64 = slots.get(&(outcome as u32), 0).map_err(err)?.iter().sum();
            if total > 0 {
                counts.insert(outcome, total);
            }
        }
        Ok(ForwardCounts(counts))
    }

    /// Packets counted under `outcome`.
    pub fn get(&self, outcome: ForwardOutcome) -> u64 {
        self.0.get(&outcome).copied().unwrap_or(0)
    }

    /// Packets the fast path looked at and left to the stack.
    pub fn fallbacks(&self) -> u64 {
        self.0
            .iter()
            .filter(|(outcome, _)| **outcome != ForwardOutcome::Forwarded)
            .map(|(_, count)| count)
            .sum()
    }
}
