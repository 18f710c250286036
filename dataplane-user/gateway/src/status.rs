//! The tunnel's health, in the shape of a Connection's status, so the
//! network controllers can copy it into the CR; in `--config` mode it is
//! written to a status file and exported as metrics.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};
use strait_api::networking::{ConnectionState, ConnectionStatus, Latency};

use crate::{keys::write_atomically, Error};

/// After this long without a handshake, WireGuard itself rejects the
/// session's keys (REJECT_AFTER_TIME): the tunnel is down.
pub const HANDSHAKE_STALE_AFTER: Duration = Duration::from_secs(180);
/// Consecutive unanswered probes that turn a handshaking tunnel into an error.
pub const FAILED_PROBES_FOR_ERROR: u32 = 3;

/// What a datapath knows about its peer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerStats {
    pub last_handshake: Option<SystemTime>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub endpoint: Option<SocketAddr>,
}

/// What the prober has seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ProbeState {
    pub sent: u64,
    pub answered: u64,
    pub consecutive_failures: u32,
    pub last_rtt: Option<Duration>,
    pub last_answer: Option<SystemTime>,
    /// The probes as large as the configured tunnel MTU.
    pub full_size: FullSizeProbes,
    /// The configured tunnel MTU the peer announces in its own probes.
    pub peer_mtu: Option<u32>,
}

/// Echoes as large as the configured tunnel MTU, don't-fragment set.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct FullSizeProbes {
    /// Their IP packet size (0: none sent).
    pub size: u32,
    pub sent: u64,
    pub answered: u64,
    pub consecutive_failures: u32,
}

/// The status file's content.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GatewayStatus {
    pub role: String,
    pub backend: String,
    pub interface: String,
    /// This gateway's public key (the only key ever published).
    pub public_key: String,
    /// The tunnel MTU in use: the spec's, lowered to what the path to the
    /// peer carries once the peer's endpoint is known.
    pub mtu: u32,
    /// The underlay family (`IPv4`, `IPv6`) of the peer's endpoint that
    /// `mtu` was fitted to; absent while the endpoint is unknown (a server
    /// before its first handshake), when `mtu` is no verdict on the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<String>,
    /// The peer's configured tunnel MTU (its spec's), as it announces it in
    /// its probes through the tunnel; absent until one arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_mtu: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_endpoint: Option<String>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
    pub probes_sent: u64,
    pub probes_answered: u64,
    /// Consecutive unanswered small probes (0 while the tunnel passes data).
    #[serde(default)]
    pub probes_failing: u32,
    /// The full-size (MTU) probes.
    #[serde(default)]
    pub full_size_probes: FullSizeProbes,
    /// Datagrams refused at the listen port, by reason.
    #[serde(default)]
    pub drops: BTreeMap<String, u64>,
    pub connection: ConnectionStatus,
}

impl GatewayStatus {
    pub fn write(&self, path: &Path) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        write_atomically(path, &json)
    }

    pub fn read(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&text).map_err(|e| Error::Read {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })
    }
}

/// Judges the tunnel from the last handshake and the probes.
pub fn assess(
    peer: &PeerStats,
    probe: &ProbeState,
    probing: bool,
    now: SystemTime,
) -> ConnectionStatus {
    let last_handshake_time = peer.last_handshake.and_then(time);
    let latency = match (probe.last_rtt, probe.last_answer.and_then(time)) {
        (Some(rtt), Some(timestamp)) => Some(Latency {
            value: format_rtt(rtt),
            timestamp,
        }),
        _ => None,
    };
    let age = peer
        .last_handshake
        .map(|t| now.duration_since(t).unwrap_or_default());
    let (value, message) = match age {
        None => (
            ConnectionState::Connecting,
            "no WireGuard handshake with the peer yet".to_owned(),
        ),
        Some(age) if age >= HANDSHAKE_STALE_AFTER => (
            ConnectionState::Connecting,
            format!(
                "the last handshake was {}s ago; waiting for the peer to answer",
                age.as_secs()
            ),
        ),
        Some(_) if probing && probe.consecutive_failures >= FAILED_PROBES_FOR_ERROR => (
            ConnectionState::Error,
            format!(
                "handshakes complete but the last {} probes through the tunnel were not answered: \
                 check the peer's allowed IPs, routes and the tunnel MTU",
                probe.consecutive_failures
            ),
        ),
        Some(_) => (ConnectionState::Connected, String::new()),
    };
    ConnectionStatus {
        value,
        latency,
        last_handshake_time,
        message,
    }
}

fn time(t: SystemTime) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::try_from(t).ok().map(Time)
}

/// `850us`, `1.234ms`, `2.5s`: a duration the Connection's schema accepts.
pub fn format_rtt(rtt: Duration) -> String {
    let micros = rtt.as_micros();
    if micros < 1000 {
        format!("{micros}us")
    } else if micros < 1_000_000 {
        format!("{}.{:03}ms", micros / 1000, micros % 1000)
    } else {
        format!("{}.{:03}s", micros / 1_000_000, (micros / 1000) % 1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
    }

    #[test]
    fn no_handshake_is_connecting() {
        let s = assess(&PeerStats::default(), &ProbeState::default(), true, at(0));
        assert_eq!(s.value, ConnectionState::Connecting);
        assert!(s.message.contains("no WireGuard handshake"));
        assert_eq!(s.last_handshake_time, None);
    }

    #[test]
    fn a_recent_handshake_and_answered_probes_are_connected() {
        let peer = PeerStats {
            last_handshake: Some(at(0)),
            ..Default::default()
        };
        let probe = ProbeState {
            sent: 5,
            answered: 5,
            last_rtt: Some(Duration::from_micros(1234)),
            last_answer: Some(at(9)),
            ..Default::default()
        };
        let s = assess(&peer, &probe, true, at(10));
        assert_eq!(s.value, ConnectionState::Connected);
        assert_eq!(
            s.latency.as_ref().map(|l| l.value.as_str()),
            Some("1.234ms")
        );
        assert_eq!(
            s.last_handshake_time.map(|t| t.0.as_second()),
            Some(1_800_000_000)
        );
    }

    #[test]
    fn a_stale_handshake_is_connecting_again() {
        let peer = PeerStats {
            last_handshake: Some(at(0)),
            ..Default::default()
        };
        let s = assess(&peer, &ProbeState::default(), true, at(181));
        assert_eq!(s.value, ConnectionState::Connecting);
        assert!(s.message.contains("181s ago"), "{}", s.message);
    }

    #[test]
    fn unanswered_probes_over_a_live_handshake_are_an_error() {
        let peer = PeerStats {
            last_handshake: Some(at(0)),
            ..Default::default()
        };
        let probe = ProbeState {
            sent: 3,
            consecutive_failures: 3,
            ..Default::default()
        };
        assert_eq!(
            assess(&peer, &probe, true, at(5)).value,
            ConnectionState::Error
        );
        // Without a probe target only the handshake counts.
        assert_eq!(
            assess(&peer, &probe, false, at(5)).value,
            ConnectionState::Connected
        );
    }

    #[test]
    fn rtts_use_units_the_schema_accepts() {
        assert_eq!(format_rtt(Duration::from_micros(850)), "850us");
        assert_eq!(format_rtt(Duration::from_micros(1200)), "1.200ms");
        assert_eq!(format_rtt(Duration::from_millis(2500)), "2.500s");
    }
}
