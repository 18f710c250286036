//! The embedded eBPF object and the programs in it.

use aya::{programs::SchedClassifier, Ebpf, EbpfLoader};
use strait_common::{
    forward::{NatForward, NAT_FORWARD_GLOBAL},
    Direction,
};

use crate::{bpffs::PinDir, Error};

/// The object built by build.rs from dataplane-ebpf/programs.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/strait-tc"));

/// A TC program of the object, by what it does and where it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcProgram {
    Count(Direction),
    /// Geneve encapsulation of fabric-routed packets, at ingress.
    GeneveEncap,
    /// Geneve decapsulation, at the underlay's ingress.
    GeneveDecap,
    /// NAT of packets arriving from (ingress) or leaving toward (egress)
    /// the peer.
    Nat(Direction),
    /// As `Nat`, for L3-only devices (WireGuard, tun, IP-in-IP), whose
    /// packets start with the IP header.
    NatL3(Direction),
}

impl TcProgram {
    /// The program's function name in the object.
    pub const fn name(self) -> &'static str {
        match self {
            TcProgram::Count(Direction::Ingress) => "strait_count_ingress",
            TcProgram::Count(Direction::Egress) => "strait_count_egress",
            TcProgram::GeneveEncap => "strait_geneve_encap",
            TcProgram::GeneveDecap => "strait_geneve_decap",
            TcProgram::Nat(Direction::Ingress) => "strait_nat_ingress",
            TcProgram::Nat(Direction::Egress) => "strait_nat_egress",
            TcProgram::NatL3(Direction::Ingress) => "strait_nat_l3_ingress",
            TcProgram::NatL3(Direction::Egress) => "strait_nat_l3_egress",
        }
    }

    pub const fn direction(self) -> Direction {
        match self {
            TcProgram::Count(direction)
            | TcProgram::Nat(direction)
            | TcProgram::NatL3(direction) => direction,
            TcProgram::GeneveEncap | TcProgram::GeneveDecap => Direction::Ingress,
        }
    }

    /// Name of the program's pinned tcx link on an interface: one per
    /// program, so programs sharing a hook do not replace each other.
    /// The counters keep the bare direction they were first pinned under.
    pub const fn link_name(self) -> &'static str {
        match self {
            TcProgram::Count(direction) => direction.as_str(),
            TcProgram::Nat(Direction::Ingress) => "nat_ingress",
            TcProgram::Nat(Direction::Egress) => "nat_egress",
            TcProgram::NatL3(Direction::Ingress) => "nat_l3_ingress",
            TcProgram::NatL3(Direction::Egress) => "nat_l3_egress",
            TcProgram::GeneveEncap => "geneve_encap",
            TcProgram::GeneveDecap => "geneve_decap",
        }
    }
}

/// The loaded object: its maps are pinned in (or reused from) `pin_dir`.
pub struct Dataplane {
    ebpf: Ebpf,
    pin_dir: PinDir,
}

impl Dataplane {
    /// Loads the object, reusing maps already pinned in `pin_dir` so counters
    /// and tables survive an agent restart. The NAT programs use the
    /// forwarding fast path (see [`Dataplane::load_with_nat_forward`]).
    pub fn load(pin_dir: PinDir) -> Result<Self, Error> {
        Self::load_with_nat_forward(pin_dir, NatForward::Fast)
    }

    /// As [`Dataplane::load`], choosing how the NAT ingress programs hand
    /// packets on: fast-path forwarding or the kernel stack. Fixed for the
    /// programs of this load (a read-only global the verifier sees).
    pub fn load_with_nat_forward(pin_dir: PinDir, forward: NatForward) -> Result<Self, Error> {
        if OBJECT.is_empty() {
            return Err(Error::NoObject);
        }
        let forward = forward as u32;
        let ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir.root())
            .override_global(NAT_FORWARD_GLOBAL, &forward, true)
            .load(OBJECT)?;
        Ok(Dataplane { ebpf, pin_dir })
    }

    pub fn pin_dir(&self) -> &PinDir {
        &self.pin_dir
    }

    pub fn ebpf(&self) -> &Ebpf {
        &self.ebpf
    }

    /// A map of the object, for writing.
    pub fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, Error> {
        self.ebpf.map_mut(name).ok_or(Error::MissingMap(name))
    }

    /// Loads `programs` into the kernel at once, one thread each: the
    /// verifier takes most of an attach (close to a second per NAT program on
    /// a busy machine), and a gateway's first packet waits for both of its
    /// NAT programs. Programs already loaded are skipped.
    pub fn load_classifiers(&mut self, programs: &[TcProgram]) -> Result<(), Error> {
        let names: Vec<&'static str> = programs.iter().map(|p| p.name()).collect();
        if let Some(missing) = names.iter().find(|n| self.ebpf.program(n).is_none()) {
            return Err(Error::MissingProgram(missing));
        }
        let mut pending: Vec<(&'static str, &mut SchedClassifier)> = Vec::new();
        for (name, program) in self.ebpf.programs_mut() {
            let Some(wanted) = names.iter().find(|n| **n == name) else {
                continue;
            };
            let classifier: &mut SchedClassifier =
                program.try_into().map_err(|source| Error::Program {
                    name: wanted,
                    source,
                })?;
            if classifier.fd().is_err() {
                pending.push((wanted, classifier));
            }
        }
        std::thread::scope(|scope| {
            let loading: Vec<_> = pending
                .into_iter()
                .map(|(name, classifier)| {
                    scope.spawn(move || {
                        classifier
                            .load()
                            .map_err(|source| Error::Program { name, source })
                    })
                })
                .collect();
            loading
                .into_iter()
                .try_for_each(|thread| thread.join().unwrap_or(Err(Error::LoadPanicked)))
        })
    }

    /// The program, loaded into the kernel (loading is idempotent).
    pub fn classifier(&mut self, program: TcProgram) -> Result<&mut SchedClassifier, Error> {
        let name = program.name();
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or(Error::MissingProgram(name))?
            .try_into()
            .map_err(|source| Error::Program { name, source })?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|source| Error::Program { name, source })?;
        }
        Ok(prog)
    }
}
