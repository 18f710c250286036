//! Reading the drop counters (`STRAIT_DROPS`), summed over CPUs, by reason.

use std::collections::BTreeMap;

use aya::maps::{Map, MapData, PerCpuArray};
use strait_common::{drop::DROPS_MAP, DropReason};

use crate::{bpffs::PinDir, programs::Dataplane, Error};

/// Packets dropped so far, per reason (reasons never seen are absent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DropCounts(pub BTreeMap<DropReason, u64>);

impl DropCounts {
    /// Reads the counters of a loaded object.
    pub fn read_loaded(dp: &Dataplane) -> Result<Self, Error> {
        Self::read(
            dp.ebpf()
                .map(DROPS_MAP)
                .ok_or(Error::MissingMap(DROPS_MAP))?,
        )
    }

    /// Reads the counters pinned in `pin_dir`.
    pub fn read_pinned(pin_dir: &PinDir) -> Result<Self, Error> {
        let map = pin_dir.open_map(DROPS_MAP).map_err(|source| Error::Map {
            name: DROPS_MAP,
            source,
        })?;
        Self::read(&map)
    }

    /// Reads the counters from the drop map itself.
    pub(crate) fn read(map: &Map) -> Result<Self, Error> {
        let err = |source| Error::Map {
            name: DROPS_MAP,
            source,
        };
        let drops: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(err)?;
        let mut counts = BTreeMap::new();
        for reason in DropReason::ALL {
            let total: u64 = drops.get(&(reason as u32), 0).map_err(err)?.iter().sum();
            if total > 0 {
                counts.insert(reason, total);
            }
        }
        Ok(DropCounts(counts))
    }

    /// Drops counted under `reason`.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0.get(&reason).copied().unwrap_or(0)
    }

    /// Drops under any reason.
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

/// As a map from reason name to count, for `strait-fabric stats --json`.
impl serde::Serialize for DropCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(
            self.0
                .iter()
                .map(|(reason, count)| (reason.as_str(), count)),
        )
    }
}
