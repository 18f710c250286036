//! A bounded prober: `ping` from a namespace, one echo request every
//! interval, that says when the first reply came back (for "time from a
//! change to the first packet through" measurements).

use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Stdio},
    time::{Duration, SystemTime},
};

use crate::{netns::Error, NetNs};

/// `ping` running in a namespace; killed when dropped.
pub struct Prober {
    child: Child,
    target: String,
    count: u32,
}

impl Prober {
    /// Starts pinging `target` from `ns`: `count` requests at most, one
    /// every `interval` (below 200 ms needs root).
    pub fn start(ns: &NetNs, target: &str, interval: Duration, count: u32) -> Result<Self, Error> {
        // Timestamps (-D) say when each reply came; no deadline (-w): with
        // one, ping stops at the first error, and "network unreachable"
        // answers before the routes exist are errors.
        let child = ns
            .command("ping")
            .args([
                "-n",
                "-D",
                "-i",
                &format!("{:.3}", interval.as_secs_f64()),
                "-c",
                &count.to_string(),
                target,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| Error::Command {
                command: format!("ping {target} in {}", ns.name()),
                detail: e.to_string(),
            })?;
        Ok(Self {
            child,
            target: target.to_owned(),
            count,
        })
    }

    /// When the first echo reply came back (its `-D` timestamp); waits for
    /// it at most as long as the requests last.
    pub fn first_reply(&mut self) -> Result<SystemTime, String> {
        let stdout = self.child.stdout.take().ok_or("ping has no stdout")?;
        let mut seen = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.map_err(|e| format!("reading ping's output: {e}"))?;
            if line.contains(" bytes from ") {
                let stamp = line
                    .strip_prefix('[')
                    .and_then(|l| l.split_once(']'))
                    .and_then(|(s, _)| s.parse::<f64>().ok())
                    .ok_or_else(|| format!("no timestamp in {line:?}"))?;
                return Ok(SystemTime::UNIX_EPOCH + Duration::from_secs_f64(stamp));
            }
            seen.push(line);
        }
        let last: Vec<_> = seen.iter().rev().take(3).rev().cloned().collect();
        Err(format!(
            "no echo reply from {} in {} requests; ping said, last: {last:?}",
            self.target, self.count
        ))
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
