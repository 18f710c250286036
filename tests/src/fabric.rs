//! Driving the `strait-fabric` binary inside a namespace.

use std::{
    path::{Path, PathBuf},
    process::Output,
};

use strait_dataplane::{bpffs::PinDir, counter::CounterSnapshot};

use crate::{
    bins,
    netns::{run, Error},
    NetNs,
};

/// `strait-fabric --pin-dir <pins> …` run in `ns`.
pub struct FabricCli<'a> {
    bin: PathBuf,
    ns: &'a NetNs,
    pins: &'a Path,
}

impl<'a> FabricCli<'a> {
    pub fn new(ns: &'a NetNs, pins: &'a Path) -> Result<Self, Error> {
        let bin = bins::path("strait-fabric").map_err(|detail| Error::Command {
            command: "locate strait-fabric".into(),
            detail,
        })?;
        Ok(FabricCli { bin, ns, pins })
    }

    fn command(&self, args: &[&str]) -> std::process::Command {
        let mut cmd = self.ns.command(&self.bin);
        cmd.arg("--pin-dir")
            .arg(self.pins)
            .args(args)
            .env("RUST_LOG", "warn")
            .env("RUST_BACKTRACE", "0")
            .env("RUST_LIB_BACKTRACE", "0");
        cmd
    }

    /// Runs it; a failure is an error carrying its stderr. Returns stdout.
    pub fn run(&self, args: &[&str]) -> Result<String, Error> {
        let out = run(&mut self.command(args))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs it and returns the raw output, whatever the exit status.
    pub fn output(&self, args: &[&str]) -> Result<Output, Error> {
        let mut cmd = self.command(args);
        cmd.output().map_err(|e| Error::Command {
            command: format!("{cmd:?}"),
            detail: e.to_string(),
        })
    }

    /// The counters pinned in the pin directory, read in-process.
    pub fn snapshot(&self) -> Result<CounterSnapshot, Error> {
        let read = || CounterSnapshot::read_pinned(&PinDir::open(self.pins)?);
        read().map_err(|e: strait_dataplane::Error| Error::Command {
            command: format!("read counters in {}", self.pins.display()),
            detail: e.to_string(),
        })
    }
}

/// One host's fabric agent in a test: its own pin directory and config file,
/// both removed on drop.
pub struct FabricAgent<'a> {
    pub ns: &'a NetNs,
    pub pins: crate::bpffs::TestPinDir,
    pub config: PathBuf,
}

impl<'a> FabricAgent<'a> {
    pub fn new(ns: &'a NetNs, label: &str) -> Result<Self, Error> {
        let pins = crate::bpffs::TestPinDir::new(label)?;
        let config = std::env::temp_dir().join(format!("strait-{}-{label}.yaml", ns.name()));
        Ok(FabricAgent { ns, pins, config })
    }

    pub fn cli(&self) -> Result<FabricCli<'_>, Error> {
        FabricCli::new(self.ns, self.pins.path())
    }

    /// Writes `yaml` as the config and runs `strait-fabric apply` on it.
    pub fn apply(&self, yaml: &str) -> Result<String, Error> {
        std::fs::write(&self.config, yaml).map_err(|e| Error::Command {
            command: format!("write {}", self.config.display()),
            detail: e.to_string(),
        })?;
        let config = self.config.to_string_lossy().into_owned();
        self.cli()?.run(&["apply", "--config", &config])
    }

    pub fn stats(&self) -> Result<strait_dataplane::fabric::FabricStats, Error> {
        let read =
            || strait_dataplane::fabric::FabricStats::read_pinned(&PinDir::open(self.pins.path())?);
        read().map_err(|e: strait_dataplane::Error| Error::Command {
            command: format!("read fabric stats in {}", self.pins.path().display()),
            detail: e.to_string(),
        })
    }
}

impl Drop for FabricAgent<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.config);
    }
}
