//! Prometheus text exposition of a gateway's status.

use std::fmt::Write as _;

use strait_api::networking::ConnectionState;

use crate::GatewayStatus;

pub fn render(status: &GatewayStatus) -> String {
    let mut out = String::new();
    let labels = format!(
        "role=\"{}\",backend=\"{}\",interface=\"{}\"",
        status.role, status.backend, status.interface
    );
    family(
        &mut out,
        "strait_gateway_connected",
        "1 when the tunnel is connected.",
        "gauge",
    );
    let connected = u8::from(status.connection.value == ConnectionState::Connected);
    let _ = writeln!(out, "strait_gateway_connected{{{labels}}} {connected}");
    family(
        &mut out,
        "strait_gateway_state",
        "The tunnel's state: 1 for the current one.",
        "gauge",
    );
    for (name, state) in [
        ("Connecting", ConnectionState::Connecting),
        ("Connected", ConnectionState::Connected),
        ("Error", ConnectionState::Error),
    ] {
        let v = u8::from(status.connection.value == state);
        let _ = writeln!(out, "strait_gateway_state{{{labels},state=\"{name}\"}} {v}");
    }
    family(
        &mut out,
        "strait_gateway_last_handshake_seconds",
        "Unix time of the last completed handshake (0: none yet).",
        "gauge",
    );
    let handshake = status
        .connection
        .last_handshake_time
        .as_ref()
        .map_or(0, |t| t.0.as_second());
    let _ = writeln!(
        out,
        "strait_gateway_last_handshake_seconds{{{labels}}} {handshake}"
    );
    family(
        &mut out,
        "strait_gateway_latency_seconds",
        "Round-trip time of the last answered probe through the tunnel.",
        "gauge",
    );
    if let Some(rtt) = status
        .connection
        .latency
        .as_ref()
        .and_then(|l| parse_rtt(&l.value))
    {
        let _ = writeln!(out, "strait_gateway_latency_seconds{{{labels}}} {rtt}");
    }
    for (name, help, value) in [
        (
            "strait_gateway_tx_bytes_total",
            "Bytes sent to the peer (encrypted).",
            status.tx_bytes,
        ),
        (
            "strait_gateway_rx_bytes_total",
            "Bytes received from the peer (encrypted).",
            status.rx_bytes,
        ),
        (
            "strait_gateway_probes_sent_total",
            "Probes sent through the tunnel.",
            status.probes_sent,
        ),
        (
            "strait_gateway_probes_answered_total",
            "Probes answered through the tunnel.",
            status.probes_answered,
        ),
    ] {
        family(&mut out, name, help, "counter");
        let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
    family(
        &mut out,
        "strait_gateway_drops_total",
        "Datagrams refused at the listen port, by reason.",
        "counter",
    );
    for (reason, count) in &status.drops {
        let _ = writeln!(
            out,
            "strait_gateway_drops_total{{{labels},reason=\"{reason}\"}} {count}"
        );
    }
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Seconds from a duration written by [`crate::status::format_rtt`].
fn parse_rtt(value: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1e-3)
    } else {
        (value.strip_suffix('s')?, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::status::{assess, PeerStats, ProbeState};

    #[test]
    fn metrics_carry_state_latency_bytes_and_drops() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let connection = assess(
            &PeerStats {
                last_handshake: Some(now),
                ..Default::default()
            },
            &ProbeState {
                last_rtt: Some(Duration::from_micros(1500)),
                last_answer: Some(now),
                ..Default::default()
            },
            true,
            now,
        );
        let status = GatewayStatus {
            role: "server".into(),
            backend: "fast".into(),
            interface: "gw0".into(),
            public_key: "k".into(),
            mtu: 1420,
            underlay: Some("IPv4".into()),
            peer_mtu: Some(1420),
            peer_endpoint: None,
            tx_bytes: 1000,
            rx_bytes: 2000,
            probes_sent: 4,
            probes_answered: 3,
            probes_failing: 0,
            full_size_probes: Default::default(),
            drops: [("invalid_mac".to_owned(), 7)].into(),
            connection,
        };
        let text = render(&status);
        let l = "role=\"server\",backend=\"fast\",interface=\"gw0\"";
        for line in [
            format!("strait_gateway_connected{{{l}}} 1"),
            format!("strait_gateway_state{{{l},state=\"Error\"}} 0"),
            format!("strait_gateway_last_handshake_seconds{{{l}}} 1800000000"),
            format!("strait_gateway_latency_seconds{{{l}}} 0.0015"),
            format!("strait_gateway_rx_bytes_total{{{l}}} 2000"),
            format!("strait_gateway_drops_total{{{l},reason=\"invalid_mac\"}} 7"),
        ] {
            assert!(
                text.lines().any(|x| x == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
