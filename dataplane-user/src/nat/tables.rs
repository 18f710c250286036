//! The pinned NAT maps, and applying a plan to them atomically.
//!
//! Applying writes the whole plan into the generation the programs are not
//! using (range arrays through a shared memory mapping, then the lengths),
//! then flips the one-slot active-generation array: packets see either the
//! whole old table or the whole new one. The previous generation stays as it
//! was until the next apply overwrites it; a program that read the old
//! generation number just before the flip finishes its lookup in a table
//! nobody is writing.

use std::{
    marker::PhantomData,
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    ptr::NonNull,
    time::{Duration, Instant},
};

use aya::maps::{Array, Map, MapData, MapError};
use strait_common::{
    nat::{
        len_index, table_index, BPF_F_MMAPABLE, NAT_ACTIVE_MAP, NAT_GENERATIONS, NAT_LEN_MAP,
        NAT_LEN_MAX_ENTRIES, NAT_RANGES_MAX_ENTRIES, NAT_RANGES_PER_TABLE, NAT_V4_MAP, NAT_V6_MAP,
    },
    NatRangeV4, NatRangeV6,
};
use tracing::info;

use super::{
    ranges::{flatten, Range, TableRange},
    NatError, NatPlan, TableId,
};
use crate::bpffs::PinDir;

/// What an apply did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatApplied {
    /// The generation now active.
    pub generation: u8,
    /// Mappings of the plan (prefixes and addresses).
    pub entries: usize,
    /// Ranges written, after nested prefixes were split.
    pub ranges: usize,
    pub elapsed: Duration,
}

/// The pinned NAT maps, opened for writing.
pub struct NatTables {
    v4: MappedArray<NatRangeV4>,
    v6: MappedArray<NatRangeV6>,
    lens: Array<MapData, u32>,
    active: Array<MapData, u32>,
    /// The pin directory, flocked during an apply: two writers filling the
    /// same inactive generation would interleave their tables.
    pin_root: PathBuf,
}

impl NatTables {
    /// Opens the maps a loaded [`crate::programs::Dataplane`] pinned in `pin_dir`.
    pub fn open_pinned(pin_dir: &PinDir) -> Result<Self, NatError> {
        Ok(NatTables {
            v4: MappedArray::open(pin_dir, NAT_V4_MAP)?,
            v6: MappedArray::open(pin_dir, NAT_V6_MAP)?,
            lens: open_lens(pin_dir)?,
            active: Array::try_from(open_pinned(pin_dir, NAT_ACTIVE_MAP)?)
                .map_err(map_err(NAT_ACTIVE_MAP))?,
            pin_root: pin_dir.root().to_owned(),
        })
    }

    /// The generation the programs currently read.
    pub fn active_generation(&self) -> Result<u8, NatError> {
        let raw = self.active.get(&0, 0).map_err(map_err(NAT_ACTIVE_MAP))?;
        match u8::try_from(raw) {
            Ok(g) if g < NAT_GENERATIONS => Ok(g),
            _ => Err(NatError::CorruptGeneration(raw)),
        }
    }

    /// Replaces the whole table with `plan`, atomically for the programs.
    pub fn apply(&mut self, plan: &NatPlan) -> Result<NatApplied, NatError> {
        let started = Instant::now();
        let _lock = DirLock::exclusive(&self.pin_root)?;
        let target = (self.active_generation()? + 1) % NAT_GENERATIONS;
        let mut written = 0;
        for table in TableId::ALL {
            let v4 = flatten(plan.translations(), table, false);
            let v6 = flatten(plan.translations(), table, true);
            // NatPlan bounds translations so that ranges always fit; this
            // guards the memory writes below all the same.
            for (ranges, family) in [(&v4, "IPv4"), (&v6, "IPv6")] {
                if ranges.len() > NAT_RANGES_PER_TABLE as usize {
                    return Err(NatError::TooManyEntries {
                        family,
                        kind: table.filled_by().0.as_str(),
                        count: ranges.len(),
                        max: NAT_RANGES_PER_TABLE as usize,
                    });
                }
            }
            let (direction, field) = (table.direction, table.field);
            let start = table_index(target, direction, field) as usize;
            write_table(&mut self.v4, start, &v4, Range::to_v4);
            write_table(&mut self.v6, start, &v6, Range::to_v6);
            self.set_len(len_index(false, target, direction, field), v4.len())?;
            self.set_len(len_index(true, target, direction, field), v6.len())?;
            written += v4.len() + v6.len();
        }
        // The single write that makes the new table visible. The syscall
        // orders it after the writes through the mapping.
        self.active
            .set(0, u32::from(target), 0)
            .map_err(map_err(NAT_ACTIVE_MAP))?;
        let applied = NatApplied {
            generation: target,
            entries: plan.translations().len(),
            ranges: written,
            elapsed: started.elapsed(),
        };
        info!(
            generation = applied.generation,
            entries = applied.entries,
            ranges = applied.ranges,
            elapsed_us = applied.elapsed.as_micros() as u64,
            "applied NAT table"
        );
        Ok(applied)
    }

    fn set_len(&mut self, slot: u32, len: usize) -> Result<(), NatError> {
        // Bounded by NAT_RANGES_PER_TABLE above.
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.lens.set(slot, len, 0).map_err(map_err(NAT_LEN_MAP))
    }

    /// The ranges of the active generation, by table (egress destination,
    /// egress source, ingress source, ingress destination), then address.
    pub fn active_entries(&self) -> Result<Vec<TableRange>, NatError> {
        let generation = self.active_generation()?;
        let mut out = Vec::new();
        for table in TableId::ALL {
            let (direction, field) = (table.direction, table.field);
            let start = table_index(generation, direction, field) as usize;
            let v4_len = self.len(len_index(false, generation, direction, field))?;
            let v6_len = self.len(len_index(true, generation, direction, field))?;
            out.extend(
                self.v4.entries()[start..start + v4_len]
                    .iter()
                    .map(|r| Range::from_v4(table, r)),
            );
            out.extend(
                self.v6.entries()[start..start + v6_len]
                    .iter()
                    .map(|r| Range::from_v6(table, r)),
            );
        }
        Ok(out)
    }

    fn len(&self, slot: u32) -> Result<usize, NatError> {
        let len = self.lens.get(&slot, 0).map_err(map_err(NAT_LEN_MAP))?;
        // The programs clamp the same way.
        Ok(len.min(NAT_RANGES_PER_TABLE) as usize)
    }
}

fn write_table<T: Copy>(
    array: &mut MappedArray<T>,
    start: usize,
    ranges: &[Range],
    entry: fn(Range) -> T,
) {
    let table = &mut array.entries_mut()[start..start + ranges.len()];
    for (slot, range) in table.iter_mut().zip(ranges) {
        *slot = entry(*range);
    }
}

/// A pinned `BPF_F_MMAPABLE` array map, mapped into this process: its
/// entries are read and written as memory, without a syscall each.
struct MappedArray<T> {
    base: NonNull<T>,
    entries: usize,
    mapped_bytes: usize,
    // Keeps the map open while it is mapped.
    _map: MapData,
    _entry: PhantomData<T>,
}

impl<T: Copy> MappedArray<T> {
    fn open(pin_dir: &PinDir, name: &'static str) -> Result<Self, NatError> {
        let incompatible = |problem: String| NatError::IncompatibleMap { name, problem };
        let Map::Array(map) = open_pinned(pin_dir, name)? else {
            return Err(incompatible("it is not an array".into()));
        };
        let info = map.info().map_err(map_err(name))?;
        let entry_size = std::mem::size_of::<T>();
        if info.value_size() as usize != entry_size
            || info.max_entries() != NAT_RANGES_MAX_ENTRIES
            || info.map_flags() & BPF_F_MMAPABLE == 0
        {
            return Err(incompatible(format!(
                "{} entries of {} bytes, flags {:#x}; this version expects {} of {entry_size} bytes, memory-mappable",
                info.max_entries(),
                info.value_size(),
                info.map_flags(),
                NAT_RANGES_MAX_ENTRIES,
            )));
        }
        // Array maps lay entries out 8-byte aligned; the entry types are
        // multiples of 8 (asserted in strait-common), so a slice of T matches.
        if !entry_size.is_multiple_of(8) {
            return Err(incompatible(format!("entries of {entry_size} bytes")));
        }
        let entries = NAT_RANGES_MAX_ENTRIES as usize;
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let mapped_bytes = (entries * entry_size).div_ceil(page) * page;
        // SAFETY: mapping a BPF array map's fd, which the kernel allows for
        // BPF_F_MMAPABLE arrays (checked above) up to the map's rounded-up
        // size; the fd stays open in `_map` for as long as the mapping lives.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                mapped_bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(NatError::Mmap {
                name,
                source: std::io::Error::last_os_error(),
            });
        }
        let base = NonNull::new(base.cast::<T>()).ok_or_else(|| NatError::Mmap {
            name,
            source: std::io::Error::other("mmap returned a null address"),
        })?;
        Ok(MappedArray {
            base,
            entries,
            mapped_bytes,
            _map: map,
            _entry: PhantomData,
        })
    }

    fn entries(&self) -> &[T] {
        // SAFETY: the mapping covers `entries` values of T (size checked at
        // open), is page-aligned, and lives as long as self.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.entries) }
    }

    fn entries_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `entries`; &mut self makes this process's view
        // exclusive, and the programs only read the generation not written.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), self.entries) }
    }
}

// SAFETY: the mapping belongs to the process, not to a thread; moving its
// owner to another thread moves the only handle, like moving a Vec<T>.
unsafe impl<T: Send> Send for MappedArray<T> {}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the region mmap returned, once; no
        // slice borrowed from it outlives self.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.mapped_bytes);
        }
    }
}

/// An exclusive flock(2) on a directory, released when dropped (the file
/// closes).
struct DirLock {
    _dir: std::fs::File,
}

impl DirLock {
    fn exclusive(path: &Path) -> Result<Self, NatError> {
        let err = |source| NatError::Lock {
            path: path.to_owned(),
            source,
        };
        let dir = std::fs::File::open(path).map_err(err)?;
        // SAFETY: flock on a descriptor we own and keep open for the lock's life.
        if unsafe { libc::flock(dir.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(err(std::io::Error::last_os_error()));
        }
        Ok(DirLock { _dir: dir })
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> NatError {
    move |source| NatError::Map { name, source }
}

/// The table lengths, refused when pinned by a version with another number
/// of tables (the programs would read the wrong slots).
fn open_lens(pin_dir: &PinDir) -> Result<Array<MapData, u32>, NatError> {
    let map = open_pinned(pin_dir, NAT_LEN_MAP)?;
    let lens = Array::try_from(map).map_err(map_err(NAT_LEN_MAP))?;
    let max_entries = lens.len();
    if max_entries != NAT_LEN_MAX_ENTRIES {
        return Err(NatError::IncompatibleMap {
            name: NAT_LEN_MAP,
            problem: format!(
                "{max_entries} table lengths; this version keeps {NAT_LEN_MAX_ENTRIES}"
            ),
        });
    }
    Ok(lens)
}

fn open_pinned(pin_dir: &PinDir, name: &'static str) -> Result<Map, NatError> {
    pin_dir.open_map(name).map_err(map_err(name))
}
