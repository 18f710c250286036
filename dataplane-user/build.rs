//! Builds the eBPF programs of dataplane-ebpf/programs for the BPF target and
//! leaves the object in OUT_DIR, where `lib.rs` embeds it. Cargo reruns this
//! whenever the programs' sources change, so a stale object is never shipped.
use std::{env, fs, path::PathBuf};

use anyhow::{anyhow, Context as _};

const PROGRAMS_PACKAGE: &str = "strait-ebpf";
const OBJECT_NAME: &str = "strait-tc";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let root_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../dataplane-ebpf/programs");
    let root_dir = root_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", root_dir.display()))?
        .to_owned();
    let package = aya_build::Package {
        name: PROGRAMS_PACKAGE,
        root_dir: &root_dir,
        ..Default::default()
    };
    aya_build::build_ebpf([package], aya_build::Toolchain::default()).context(
        "building the eBPF programs (run `cargo xtask bootstrap` for bpf-linker and rust-src)",
    )?;

    // With AYA_BUILD_SKIP nothing is built; embed an empty object so host-only
    // jobs (clippy, docs) compile, and the loader refuses it at run time.
    let object = out_dir.join(OBJECT_NAME);
    if !object.exists() {
        fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}
