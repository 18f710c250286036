//! Library target so that dataplane-user can name this crate as a
//! build-dependency (and be rebuilt when it changes); the programs are the
//! `strait-tc` binary.
#![no_std]
