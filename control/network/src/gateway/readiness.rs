//! How ready a peering's network is, from its gateway's Connection, in
//! words a person can act on: the ForeignCluster's `NetworkReady` condition
//! and `status.modules.network`.

use std::time::Duration;

use kube::{
    api::{Patch, PatchParams},
    Api, Client, ResourceExt as _,
};
use serde_json::json;
use strait_api::{
    condition::{owned_conditions, set_condition, ConditionStatus, ConditionUpdate},
    core::{ForeignCluster, ModuleState, PeeringRole},
    networking::{ConnectionState, ConnectionStatus},
};

pub const NETWORK_READY: &str = "NetworkReady";
/// Field manager of the ForeignCluster status this module writes.
pub const FIELD_MANAGER: &str = "strait-network-foreigncluster";
/// A tunnel still without a handshake after this long is failing, not starting.
pub const HANDSHAKE_FAILING_AFTER: Duration = Duration::from_secs(15);

/// What is known about one gateway of the peering.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayView {
    /// `GatewayServer/name` or `GatewayClient/name`, for messages.
    pub gateway: String,
    /// Why the gateway itself is not running, if it is not.
    pub not_ready: Option<String>,
    /// Whether the peer's PublicKey is known (None: not this controller's to know).
    pub peer_key_present: Option<bool>,
    /// Name of the PublicKey the peer's key is expected in.
    pub peer_key_name: String,
    /// The tunnel's status, when the gateway reported one.
    pub connection: Option<ConnectionStatus>,
    /// How long the gateway has been up.
    pub up_for: Option<Duration>,
    /// The tunnel MTU asked for and the one in use, when the gateway reported it.
    pub mtu: Option<MtuView>,
}

/// The tunnel MTU of a gateway: its spec's, and the one it could use. The
/// gateway lowers its tunnel below the spec's when the path to the peer
/// (its MTU as the kernel knows it, ICMP "packet too big" included) cannot
/// carry packets of the spec's size plus WireGuard's 60 (IPv4) or 80
/// (IPv6) bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MtuView {
    pub configured: u32,
    pub in_use: u32,
    /// Whether `in_use` was fitted to the peer's endpoint and its underlay
    /// family: a server learns it from the first handshake, and its MTU
    /// before that is no verdict on the path.
    pub fitted: bool,
    /// The peer gateway's spec.mtu, as it announces it through the tunnel.
    pub peer_configured: Option<u32>,
    /// Echoes of the configured size (don't-fragment set) unanswered in a
    /// row while small ones come back: the path drops that size silently.
    pub full_size_unanswered: u32,
}

/// Unanswered full-size probes in a row that make an MTU mismatch.
pub const FULL_SIZE_FAILURES_FOR_MISMATCH: u32 = 3;

/// Why the configured MTU does not fit the path, in words a person can act on.
fn mtu_mismatch(view: &GatewayView) -> Option<String> {
    let mtu = view.mtu?;
    if let Some(peer) = mtu.peer_configured.filter(|p| *p != mtu.configured) {
        let smaller = peer.min(mtu.configured);
        return Some(format!(
            "{} has spec.mtu {} but the peer gateway announces spec.mtu {peer}: packets sized for              the larger are dropped or fragmented on the way back: set the same spec.mtu on both              gateways ({smaller}, the smaller, unless the path carries more), and the MTU of the              pods behind them to match",
            view.gateway, mtu.configured
        ));
    }
    if mtu.in_use >= mtu.configured && mtu.full_size_unanswered >= FULL_SIZE_FAILURES_FOR_MISMATCH {
        return Some(format!(
            "{}: the last {} probes of {} bytes (spec.mtu) with don't-fragment set went \
             unanswered through the tunnel while small ones came back: something on the path \
             drops packets of that size plus WireGuard's 60-80 bytes without reporting it (ICMP \
             filtered?): lower spec.mtu on both gateways, or let ICMP \"packet too big\" through",
            view.gateway, mtu.full_size_unanswered, mtu.configured
        ));
    }
    // Before the peer's endpoint is known, the MTU in use is a guess.
    (mtu.fitted && mtu.in_use < mtu.configured).then(|| {
        format!(
            "{} is configured for a tunnel MTU of {} (spec.mtu) but the path to the peer carries \
             only {} bytes inside the tunnel once WireGuard's 60 (IPv4) or 80 (IPv6) bytes are \
             added; the gateway lowered its tunnel to {}, and packets sized for {} are dropped or \
             fragmented: set spec.mtu to {} or less on both gateways (and the MTU of the pods \
             behind them to match), or raise the underlay's MTU",
            view.gateway, mtu.configured, mtu.in_use, mtu.in_use, mtu.configured, mtu.in_use
        )
    })
}

/// The `NetworkReady` condition of a peering with this gateway.
pub fn network_ready(view: &GatewayView) -> ConditionUpdate<'static> {
    let not = |reason: &'static str, message: String| ConditionUpdate {
        type_: NETWORK_READY,
        status: ConditionStatus::False,
        reason,
        message,
    };
    if let Some(why) = &view.not_ready {
        return not(
            "GatewayNotReady",
            format!("{} is not running: {why}", view.gateway),
        );
    }
    if view.peer_key_present == Some(false) {
        return not(
            "WaitingForPeerKey",
            format!(
                "the peer gateway's public key is missing: apply it as PublicKey {} next to {}",
                view.peer_key_name, view.gateway
            ),
        );
    }
    let Some(connection) = &view.connection else {
        return not(
            "GatewayNotReady",
            format!("{} has not reported a tunnel status yet", view.gateway),
        );
    };
    // A tunnel that works (or fails) with a smaller MTU than asked for:
    // the MTU is what to fix.
    if matches!(
        connection.value,
        ConnectionState::Connected | ConnectionState::Error
    ) {
        if let Some(message) = mtu_mismatch(view) {
            return not("MtuMismatch", message);
        }
    }
    match connection.value {
        ConnectionState::Connected => ConditionUpdate {
            type_: NETWORK_READY,
            status: ConditionStatus::True,
            reason: "Connected",
            // No latency here: it changes with every probe, and the
            // ForeignCluster would be rewritten each time (it is in the Connection).
            message: format!("tunnel up through {}", view.gateway),
        },
        ConnectionState::Error => not("TunnelNotPassingTraffic", connection.message.clone()),
        ConnectionState::Connecting
            if connection.last_handshake_time.is_none()
                && view.up_for.is_some_and(|up| up >= HANDSHAKE_FAILING_AFTER) =>
        {
            not(
                "HandshakeFailing",
                format!(
                    "no WireGuard handshake with the peer after {}s: check that the server endpoint \
                     is reachable over UDP from the client and that each side has the other's \
                     current PublicKey",
                    view.up_for.map(|d| d.as_secs()).unwrap_or_default()
                ),
            )
        }
        ConnectionState::Connecting => not("Connecting", connection.message.clone()),
    }
}

/// Writes `NetworkReady` and `status.modules.network` on the ForeignCluster
/// named `remote_cluster_id`, if it exists and selects the network module.
/// Like the other modules, the whole conditions list is applied with the
/// conditions of the others kept as they are.
pub async fn publish(
    client: &Client,
    remote_cluster_id: &str,
    ready: ConditionUpdate<'_>,
) -> Result<(), kube::Error> {
    let api = Api::<ForeignCluster>::all(client.clone());
    let Some(fc) = api.get_opt(remote_cluster_id).await? else {
        return Ok(());
    };
    if !fc.spec.modules.network {
        return Ok(());
    }
    let status = fc.status.as_ref();
    let state = match (&ready.status, ready.reason) {
        (ConditionStatus::True, _) => ModuleState::Ready,
        (_, "TunnelNotPassingTraffic" | "HandshakeFailing" | "MtuMismatch") => ModuleState::Error,
        _ => ModuleState::Pending,
    };
    let now =
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now());
    let existing = status.map(|s| s.conditions.clone()).unwrap_or_default();
    // Only NetworkReady: the other modules apply their own.
    let (conditions, changed) =
        owned_conditions(&existing, [ready.clone()], fc.metadata.generation, &now);
    let existing_module = status.and_then(|s| s.modules.network.as_ref());
    let mut module = existing_module
        .map(|m| m.conditions.clone())
        .unwrap_or_default();
    let module_changed = set_condition(&mut module, ready, fc.metadata.generation, &now);
    if !changed && !module_changed && existing_module.is_some_and(|m| m.state == state) {
        return Ok(());
    }
    let role = status.map(|s| s.role).unwrap_or(PeeringRole::Unknown);
    let patch = json!({
        "apiVersion": "core.strait.dev/v1beta1",
        "kind": "ForeignCluster",
        "status": {
            "role": role,
            "modules": {"network": {"state": state, "conditions": module}},
            "conditions": conditions,
        },
    });
    api.patch_status(
        &fc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(connection: Option<ConnectionStatus>) -> GatewayView {
        GatewayView {
            gateway: "GatewayClient/to-a".into(),
            not_ready: None,
            peer_key_present: Some(true),
            peer_key_name: "remote-to-a".into(),
            connection,
            up_for: Some(Duration::from_secs(1)),
            mtu: Some(MtuView {
                configured: 1420,
                in_use: 1420,
                fitted: true,
                peer_configured: Some(1420),
                full_size_unanswered: 0,
            }),
        }
    }

    fn connecting() -> ConnectionStatus {
        ConnectionStatus {
            value: ConnectionState::Connecting,
            latency: None,
            last_handshake_time: None,
            message: "no WireGuard handshake with the peer yet".into(),
        }
    }

    #[test]
    fn reasons_follow_the_first_thing_missing() {
        let mut v = view(None);
        v.not_ready = Some("exited with signal 9".into());
        assert_eq!(network_ready(&v).reason, "GatewayNotReady");
        let mut v = view(Some(connecting()));
        v.peer_key_present = Some(false);
        let c = network_ready(&v);
        assert_eq!(c.reason, "WaitingForPeerKey");
        assert!(c.message.contains("PublicKey remote-to-a"), "{}", c.message);
        assert_eq!(
            network_ready(&view(Some(connecting()))).reason,
            "Connecting"
        );
        let mut v = view(Some(connecting()));
        v.up_for = Some(HANDSHAKE_FAILING_AFTER);
        assert_eq!(network_ready(&v).reason, "HandshakeFailing");
    }

    #[test]
    fn connected_is_ready_and_errors_keep_the_gateways_words() {
        let mut up = connecting();
        up.value = ConnectionState::Connected;
        let c = network_ready(&view(Some(up)));
        assert_eq!(c.status, ConditionStatus::True);
        let mut broken = connecting();
        broken.value = ConnectionState::Error;
        broken.message = "check the tunnel MTU".into();
        let c = network_ready(&view(Some(broken)));
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::False, "TunnelNotPassingTraffic")
        );
        assert_eq!(c.message, "check the tunnel MTU");
    }

    #[test]
    fn a_path_narrower_than_the_configured_mtu_is_an_mtu_mismatch() {
        let narrow = Some(MtuView {
            configured: 1420,
            in_use: 1390,
            fitted: true,
            peer_configured: None,
            full_size_unanswered: 0,
        });
        let mut up = connecting();
        up.value = ConnectionState::Connected;
        let mut v = view(Some(up.clone()));
        v.mtu = narrow;
        let c = network_ready(&v);
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::False, "MtuMismatch")
        );
        for words in [
            "1420 (spec.mtu)",
            "only 1390 bytes",
            "set spec.mtu to 1390 or less",
        ] {
            assert!(c.message.contains(words), "{words:?} not in {}", c.message);
        }
        // Unanswered probes with a narrow path: the MTU is the likely cause.
        let mut broken = connecting();
        broken.value = ConnectionState::Error;
        let mut v = view(Some(broken));
        v.mtu = narrow;
        assert_eq!(network_ready(&v).reason, "MtuMismatch");
        // Still handshaking: the handshake is the first thing to fix.
        let mut v = view(Some(connecting()));
        v.mtu = narrow;
        assert_eq!(network_ready(&v).reason, "Connecting");
        // A path that drops full-size packets without saying so.
        let mut v = view(Some(up.clone()));
        v.mtu = Some(MtuView {
            configured: 1420,
            in_use: 1420,
            fitted: true,
            peer_configured: None,
            full_size_unanswered: FULL_SIZE_FAILURES_FOR_MISMATCH,
        });
        let c = network_ready(&v);
        assert_eq!(c.reason, "MtuMismatch");
        assert!(c.message.contains("probes of 1420 bytes"), "{}", c.message);
        v.mtu = Some(MtuView {
            full_size_unanswered: FULL_SIZE_FAILURES_FOR_MISMATCH - 1,
            ..v.mtu.unwrap_or_default()
        });
        assert_eq!(
            network_ready(&v).reason,
            "Connected",
            "one lost probe is no verdict"
        );
        // A path as wide as asked (or no report) is no mismatch.
        assert_eq!(network_ready(&view(Some(up.clone()))).reason, "Connected");
        let mut v = view(Some(up));
        v.mtu = None;
        assert_eq!(network_ready(&v).reason, "Connected");
    }

    #[test]
    fn different_spec_mtus_on_the_two_sides_are_an_mtu_mismatch_with_both_numbers() {
        let mut up = connecting();
        up.value = ConnectionState::Connected;
        let mut v = view(Some(up.clone()));
        v.mtu = Some(MtuView {
            peer_configured: Some(1380),
            ..v.mtu.unwrap_or_default()
        });
        let c = network_ready(&v);
        assert_eq!(
            (c.status, c.reason),
            (ConditionStatus::False, "MtuMismatch")
        );
        for words in [
            "GatewayClient/to-a has spec.mtu 1420",
            "announces spec.mtu 1380",
            "(1380, the smaller",
        ] {
            assert!(c.message.contains(words), "{words:?} not in {}", c.message);
        }
        // The same on both sides, or not announced yet: no verdict from it.
        v.mtu = Some(MtuView {
            peer_configured: Some(1420),
            ..v.mtu.unwrap_or_default()
        });
        assert_eq!(network_ready(&v).reason, "Connected");
        v.mtu = Some(MtuView {
            peer_configured: None,
            ..v.mtu.unwrap_or_default()
        });
        assert_eq!(network_ready(&v).reason, "Connected");
    }

    #[test]
    fn an_mtu_not_yet_fitted_to_the_peer_is_no_verdict() {
        // A server assumed a narrower path before its peer's first
        // handshake said which family it uses: not a mismatch.
        let mut up = connecting();
        up.value = ConnectionState::Connected;
        let mut v = view(Some(up));
        v.mtu = Some(MtuView {
            configured: 1440,
            in_use: 1420,
            fitted: false,
            peer_configured: None,
            full_size_unanswered: 0,
        });
        assert_eq!(network_ready(&v).reason, "Connected");
        v.mtu = Some(MtuView {
            fitted: true,
            ..v.mtu.unwrap_or_default()
        });
        assert_eq!(network_ready(&v).reason, "MtuMismatch");
    }
}
