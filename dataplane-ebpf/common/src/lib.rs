//! Types shared between Strait's eBPF programs and userspace.
//!
//! Everything here is `repr(C)` with explicit padding, no `bool`, no enums and
//! no `Option`, so the layout the verifier sees is the layout userspace reads.
//! Layouts are pinned by compile-time asserts below.
#![cfg_attr(not(test), no_std)]

pub mod counter;
pub mod drop;
pub mod fabric;
pub mod forward;
pub mod nat;

pub use counter::{Counter, CounterKey, Direction, TrafficClass};
pub use drop::DropReason;
pub use nat::{NatField, NatRangeV4, NatRangeV6};
