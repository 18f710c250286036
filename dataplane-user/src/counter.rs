//! Reading the traffic counters, from a live object or from their pins.

use std::collections::BTreeMap;

use aya::maps::{Map, MapData, PerCpuArray, PerCpuHashMap};
use serde::Serialize;
use strait_common::{
    counter::{COUNTERS_MAP, COUNTER_OVERFLOW_MAP, IP_PROTO_NONE},
    Counter, CounterKey, Direction, TrafficClass,
};

use crate::{bpffs::PinDir, Error};

/// Counters summed over all CPUs, one row per (interface, direction, class).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CounterSnapshot {
    pub rows: Vec<CounterRow>,
    /// Packets not counted because the counter map was full.
    pub overflow: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CounterRow {
    pub ifindex: u32,
    pub direction: &'static str,
    pub class: &'static str,
    /// IP protocol number, 255 when not IP.
    pub ip_proto: u8,
    pub packets: u64,
    pub bytes: u64,
}

impl CounterSnapshot {
    /// Reads the counters pinned in `pin_dir` (no program needs to be loaded).
    pub fn read_pinned(pin_dir: &PinDir) -> Result<Self, Error> {
        let counters = open_pinned(pin_dir, COUNTERS_MAP)?;
        let overflow = open_pinned(pin_dir, COUNTER_OVERFLOW_MAP)?;
        Self::read(&counters, &overflow)
    }

    /// Reads the counters of a loaded object.
    pub fn read_loaded(dp: &crate::programs::Dataplane) -> Result<Self, Error> {
        let map = |name: &'static str| dp.ebpf().map(name).ok_or(Error::MissingMap(name));
        Self::read(map(COUNTERS_MAP)?, map(COUNTER_OVERFLOW_MAP)?)
    }

    fn read(counters: &Map, overflow: &Map) -> Result<Self, Error> {
        let map_err = |name| move |source| Error::Map { name, source };
        let counters: PerCpuHashMap<&MapData, CounterKey, Counter> =
            PerCpuHashMap::try_from(counters).map_err(map_err(COUNTERS_MAP))?;
        let mut sums: BTreeMap<(u32, u8, u8, u8), Counter> = BTreeMap::new();
        for entry in counters.iter() {
            let (key, per_cpu) = entry.map_err(map_err(COUNTERS_MAP))?;
            let total = per_cpu
                .iter()
                .fold(Counter::default(), |acc, c| acc.plus(*c));
            sums.insert((key.ifindex, key.direction, key.class, key.ip_proto), total);
        }
        let overflow: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(overflow).map_err(map_err(COUNTER_OVERFLOW_MAP))?;
        let overflow = overflow
            .get(&0, 0)
            .map_err(map_err(COUNTER_OVERFLOW_MAP))?
            .iter()
            .sum();
        let rows = sums
            .into_iter()
            .filter_map(|((ifindex, direction, class, ip_proto), c)| {
                // Keys come from our own program; anything else is skipped, not trusted.
                Some(CounterRow {
                    ifindex,
                    direction: Direction::from_raw(direction)?.as_str(),
                    class: TrafficClass::from_raw(class)?.as_str(),
                    ip_proto,
                    packets: c.packets,
                    bytes: c.bytes,
                })
            })
            .collect();
        Ok(CounterSnapshot { rows, overflow })
    }

    /// The counter of one (interface, direction, class, protocol), zero if never seen.
    pub fn get(
        &self,
        ifindex: u32,
        direction: Direction,
        class: TrafficClass,
        ip_proto: u8,
    ) -> Counter {
        self.total(|r| {
            r.ifindex == ifindex
                && r.direction == direction.as_str()
                && r.class == class.as_str()
                && r.ip_proto == ip_proto
        })
    }

    /// The sum of the rows matching `pred`.
    pub fn total(&self, pred: impl Fn(&CounterRow) -> bool) -> Counter {
        self.rows
            .iter()
            .filter(|r| pred(r))
            .fold(Counter::default(), |acc, r| {
                acc.plus(Counter {
                    packets: r.packets,
                    bytes: r.bytes,
                })
            })
    }
}

/// A short name for the IP protocols people recognise, else the number.
pub fn ip_proto_name(proto: u8) -> String {
    match proto {
        0 => "hopopt".into(),
        1 => "icmp".into(),
        6 => "tcp".into(),
        17 => "udp".into(),
        58 => "icmpv6".into(),
        IP_PROTO_NONE => "-".into(),
        n => n.to_string(),
    }
}

fn open_pinned(pin_dir: &PinDir, name: &'static str) -> Result<Map, Error> {
    pin_dir
        .open_map(name)
        .map_err(|source| Error::Map { name, source })
}
