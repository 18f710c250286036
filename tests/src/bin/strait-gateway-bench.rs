//! `cargo xtask bench gateway`: TCP throughput through a WireGuard tunnel
//! between two namespaces on a simulated internet bridge, single stream and
//! 4 parallel streams (iperf3), for (a) Debian's wireguard-go, (b)
//! defguard_wireguard_rs's embedded boringtun device, (c) Strait's fast
//! userspace datapath, (d) kernel WireGuard when the machine has it; the CPU
//! seconds the two tunnel processes spend per GB moved; and the
//! ChaCha20-Poly1305 single-core limit (ring, boringtun's AEAD) measured in
//! the same run. Ratios only compare numbers from this one run.
//!
//! `STRAIT_BIN_DIR` should point at a release build of strait-gateway.

use std::{
    process::{Child, Stdio},
    thread::sleep,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use strait_gateway::backend::KernelProbe;
use strait_testbed::{
    gateway::{
        client_config, cpu_seconds, server_config, underlay_v4, unique_ifname, Gateway, Internet,
        Scratch, Tunnel, WireguardGo, PLACEHOLDER_KEY,
    },
    netns::run,
    NetNs,
};

const PORT: u16 = 51820;
const IPERF_SECONDS: u32 = 5;
/// Plaintext size sealed in the crypto measurement: a full tunnel MTU packet.
const CRYPTO_PACKET: usize = 1420;

#[derive(Clone, Copy, Debug)]
enum Implementation {
    WireguardGo,
    Embedded,
    Fast,
}

impl Implementation {
    fn name(self) -> &'static str {
        match self {
            Implementation::WireguardGo => "wireguard-go",
            Implementation::Embedded => "embedded (defguard boringtun)",
            Implementation::Fast => "strait fast path",
        }
    }
}

struct Sample {
    gbit_per_s: f64,
    cpu_s_per_gb: f64,
}

/// One side of the tunnel, whichever implementation runs it.
enum Endpoint {
    Go(WireguardGo),
    Strait(Gateway),
}

impl Endpoint {
    fn pid(&self) -> Option<u32> {
        match self {
            Endpoint::Go(g) => g.process.pid(),
            Endpoint::Strait(g) => g.process.pid(),
        }
    }
}

fn main() -> Result<()> {
    // The other builders sharing the cores make one sample noisy: the limit
    // is the best of samples taken before, between and after the tunnels.
    let mut crypto_samples = vec![crypto_limit_gbit()];
    let mut single = Vec::new();
    for implementation in [
        Implementation::WireguardGo,
        Implementation::Embedded,
        Implementation::Fast,
    ] {
        let (one, four) = measure(implementation)
            .with_context(|| format!("measuring {}", implementation.name()))?;
        println!(
            "{:<30} 1 stream: {:6.2} Gbit/s {:6.1} CPU s/GB | 4 streams: {:6.2} Gbit/s {:6.1} CPU s/GB",
            implementation.name(),
            one.gbit_per_s,
            one.cpu_s_per_gb,
            four.gbit_per_s,
            four.cpu_s_per_gb
        );
        single.push(one.gbit_per_s);
        crypto_samples.push(crypto_limit_gbit());
    }
    let crypto = crypto_samples.iter().copied().fold(0.0, f64::max);
    println!(
        "ChaCha20-Poly1305 single core ({CRYPTO_PACKET}-byte packets, ring): {crypto:.2} Gbit/s (best of {} samples: {})",
        crypto_samples.len(),
        crypto_samples
            .iter()
            .map(|c| format!("{c:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if KernelProbe::system().wireguard_available() {
        println!("kernel WireGuard: present but not measured by this bench yet");
    } else {
        println!("kernel WireGuard: absent (no module on this machine)");
    }
    let [go, embedded, fast] = single[..] else {
        bail!("expected three measurements");
    };
    println!(
        "gw_vs_wireguard_go={:.2} gw_vs_embedded={:.2} gw_vs_crypto_limit={:.2}",
        fast / go,
        fast / embedded,
        fast / crypto
    );
    Ok(())
}

/// Builds the two sites, starts `implementation` on both, and runs iperf3
/// with 1 then 4 streams from the client site to the server site.
fn measure(implementation: Implementation) -> Result<(Sample, Sample)> {
    let internet = Internet::new()?;
    let server_ns = NetNs::new("bench-srv")?;
    let client_ns = NetNs::new("bench-cli")?;
    internet.attach(&server_ns, 1)?;
    internet.attach(&client_ns, 2)?;
    let scratch = Scratch::new("bench")?;
    let endpoints = start(implementation, &server_ns, &client_ns, &scratch)?;
    wait_for_tunnel(&client_ns)?;
    let one = iperf3_retried(&client_ns, &server_ns, 1, &endpoints)?;
    let four = iperf3_retried(&client_ns, &server_ns, 4, &endpoints)?;
    Ok((one, four))
}

fn start(
    implementation: Implementation,
    server_ns: &NetNs,
    client_ns: &NetNs,
    scratch: &Scratch,
) -> Result<Vec<Endpoint>> {
    let v4 = |t: &str| t.to_owned();
    match implementation {
        Implementation::WireguardGo => {
            let server = WireguardGo::start(
                server_ns,
                scratch,
                PORT,
                PLACEHOLDER_KEY,
                None,
                [Tunnel::SERVER_V4, Tunnel::SERVER_V6],
                [Tunnel::CLIENT_V4, Tunnel::CLIENT_V6],
            )?;
            let endpoint = format!("{}:{PORT}", underlay_v4(1));
            let client = WireguardGo::start(
                client_ns,
                scratch,
                0,
                &server.public_key,
                Some(&endpoint),
                [Tunnel::CLIENT_V4, Tunnel::CLIENT_V6],
                [Tunnel::SERVER_V4, Tunnel::SERVER_V6],
            )?;
            let allowed = format!("{}/32,{}/128", v4(Tunnel::CLIENT_V4), Tunnel::CLIENT_V6);
            server.replace_peer(server_ns, PLACEHOLDER_KEY, &client.public_key, &allowed)?;
            Ok(vec![Endpoint::Go(server), Endpoint::Go(client)])
        }
        Implementation::Embedded | Implementation::Fast => {
            let datapath = match implementation {
                Implementation::Embedded => "embedded",
                _ => "fast",
            };
            let args = ["--wireguard", "userspace", "--datapath", datapath];
            let (server_pub, client_pub) = (scratch.path("server.pub"), scratch.path("client.pub"));
            let server = Gateway::start(
                server_ns,
                scratch,
                "server",
                &server_config(
                    &unique_ifname("bs"),
                    PORT,
                    &client_pub,
                    &server_pub,
                    &Tunnel,
                    "",
                ),
                &args,
            )?;
            let client = Gateway::start(
                client_ns,
                scratch,
                "client",
                &client_config(
                    &unique_ifname("bc"),
                    &underlay_v4(1),
                    PORT,
                    &server_pub,
                    &client_pub,
                    &Tunnel,
                    "",
                ),
                &args,
            )?;
            Ok(vec![Endpoint::Strait(server), Endpoint::Strait(client)])
        }
    }
}

fn wait_for_tunnel(client: &NetNs) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if strait_testbed::gateway::ping(client, Tunnel::SERVER_V4, 1, "0.2") == 1 {
            return Ok(());
        }
    }
    bail!("the tunnel did not come up within 30 s")
}

/// Kills and reaps the iperf3 server.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// On a loaded machine the iperf3 server sometimes is not listening yet
/// when the client connects: one retry, said out loud.
fn iperf3_retried(
    client: &NetNs,
    server_ns: &NetNs,
    streams: u32,
    endpoints: &[Endpoint],
) -> Result<Sample> {
    iperf3(client, server_ns, streams, endpoints).or_else(|e| {
        println!("  (retrying once: {e:#})");
        iperf3(client, server_ns, streams, endpoints)
    })
}

fn iperf3(
    client: &NetNs,
    server_ns: &NetNs,
    streams: u32,
    endpoints: &[Endpoint],
) -> Result<Sample> {
    let _server = Server(
        server_ns
            .command("timeout")
            .args(["60", "iperf3", "-s", "-1", "-B", Tunnel::SERVER_V4])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting iperf3 (installed by cargo xtask bootstrap)")?,
    );
    sleep(Duration::from_millis(300));
    let cpu = || -> f64 {
        endpoints
            .iter()
            .filter_map(|e| e.pid().and_then(cpu_seconds))
            .sum()
    };
    let cpu_before = cpu();
    let out = run(client.command("iperf3").args([
        "-c",
        Tunnel::SERVER_V4,
        "-t",
        &IPERF_SECONDS.to_string(),
        "-P",
        &streams.to_string(),
        "-J",
    ]))?;
    let cpu_used = cpu() - cpu_before;
    let report: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J output")?;
    if let Some(error) = report.get("error").and_then(serde_json::Value::as_str) {
        bail!("iperf3 with {streams} streams: {error}");
    }
    let received = |field: &str| {
        report
            .pointer(&format!("/end/sum_received/{field}"))
            .and_then(serde_json::Value::as_f64)
            .with_context(|| format!("iperf3 report has no end.sum_received.{field}"))
    };
    let bps = received("bits_per_second")?;
    let bytes = received("bytes")?;
    Ok(Sample {
        gbit_per_s: bps / 1e9,
        cpu_s_per_gb: if bytes > 0.0 {
            cpu_used / (bytes / 1e9)
        } else {
            f64::INFINITY
        },
    })
}

/// Plaintext Gbit/s one core seals with ChaCha20-Poly1305 (ring, the AEAD
/// boringtun uses), over about one second.
fn crypto_limit_gbit() -> f64 {
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305};
    let Ok(unbound) = UnboundKey::new(&CHACHA20_POLY1305, &[7u8; 32]) else {
        return f64::NAN;
    };
    let key = LessSafeKey::new(unbound);
    let mut buf = vec![0x5au8; CRYPTO_PACKET];
    let start = Instant::now();
    let mut sealed: u64 = 0;
    let mut counter: u64 = 0;
    while start.elapsed() < Duration::from_secs(1) {
        for _ in 0..256 {
            counter += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&counter.to_le_bytes());
            if key
                .seal_in_place_separate_tag(
                    Nonce::assume_unique_for_key(nonce),
                    Aad::empty(),
                    &mut buf,
                )
                .is_ok()
            {
                sealed += CRYPTO_PACKET as u64;
            }
        }
    }
    sealed as f64 * 8.0 / start.elapsed().as_secs_f64() / 1e9
}
