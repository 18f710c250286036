//! Packet captures with tcpdump, bounded and always reaped.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Stdio},
};

use crate::{netns::Error, NetNs};

/// A running `tcpdump -v` in a namespace. It stops by itself after
/// `max_packets` or `seconds`; dropping it kills and reaps it.
pub struct Capture {
    child: Option<Child>,
}

impl Capture {
    /// Starts the capture and returns once tcpdump's filter is in place.
    pub fn start(
        ns: &NetNs,
        iface: &str,
        filter: &str,
        max_packets: u32,
        seconds: u32,
    ) -> Result<Self, Error> {
        let mut cmd = ns.command("timeout");
        cmd.args([
            &seconds.to_string(),
            "tcpdump",
            "-l",
            "-n",
            "-v",
            "-i",
            iface,
        ])
        .args(["-c", &max_packets.to_string(), filter])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        let command = format!("{cmd:?}");
        let failed = |detail: String| Error::Command {
            command: command.clone(),
            detail,
        };
        let mut child = cmd.spawn().map_err(|e| failed(e.to_string()))?;
        let stderr = child.stderr.take();
        let mut capture = Capture { child: Some(child) };
        // tcpdump prints "listening on" once it captures; wait for that line.
        let listening = stderr.is_some_and(|stderr| {
            BufReader::new(stderr)
                .lines()
                .take(5)
                .map_while(Result::ok)
                .any(|line| line.contains("listening on"))
        });
        if !listening {
            capture.stop();
            return Err(failed("tcpdump did not start listening".into()));
        }
        Ok(capture)
    }

    /// Waits for the capture to end and returns what tcpdump decoded.
    pub fn finish(mut self) -> Result<String, Error> {
        let child = self.child.take().ok_or_else(|| Error::Command {
            command: "tcpdump".into(),
            detail: "already finished".into(),
        })?;
        let out = child.wait_with_output().map_err(|e| Error::Command {
            command: "tcpdump".into(),
            detail: e.to_string(),
        })?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}
