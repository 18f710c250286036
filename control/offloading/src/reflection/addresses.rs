//! How the provider's pod addresses are seen on the consumer, decided by
//! the network module when it runs: its `Configuration` labelled with the
//! provider's cluster ID holds, in its status, the ranges IPAM remapped the
//! provider's pod and external CIDRs to. Without such a Configuration (a
//! third-party network, or none) the virtual kubelet's `--pod-cidr-remap`
//! flags apply, identity when there are none. The two modules meet only
//! through that CR.

use futures::StreamExt as _;
use kube::{
    runtime::{reflector, watcher, WatchStreamExt as _},
    Api, Client, ResourceExt as _,
};
use strait_api::{names::label::REMOTE_CLUSTER_ID, networking::Configuration};
use tokio::sync::watch;

use crate::ipmap::IpTranslation;

/// The translation in force for one provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Translation {
    /// No Configuration for the provider: the flags' remaps (maybe none).
    Static(IpTranslation),
    /// The remap of the network module's Configuration `namespace/name`.
    Network {
        configuration: String,
        translation: IpTranslation,
    },
    /// A Configuration exists but gives no usable remap (yet): addresses
    /// are not published rather than published wrong.
    Pending {
        configuration: String,
        reason: String,
    },
}

impl Translation {
    /// The translation to apply, or why there is none.
    pub fn usable(&self) -> Result<&IpTranslation, String> {
        match self {
            Self::Static(translation) | Self::Network { translation, .. } => Ok(translation),
            Self::Pending {
                configuration,
                reason,
            } => Err(format!(
                "Configuration {configuration} of the provider gives no remap: {reason}"
            )),
        }
    }

    /// What the Configurations labelled with the provider's ID decide;
    /// `fallback` when there are none. Several (a misconfiguration) are
    /// reported and the first by namespace/name is used, so every virtual
    /// kubelet of the provider picks the same one.
    pub fn decide(configurations: &[Configuration], fallback: &IpTranslation) -> Self {
        let mut sorted: Vec<&Configuration> = configurations
            .iter()
            .filter(|c| c.metadata.deletion_timestamp.is_none())
            .collect();
        sorted.sort_by_key(|c| (c.namespace(), c.name_any()));
        let Some(configuration) = sorted.first() else {
            return Self::Static(fallback.clone());
        };
        let name = format!(
            "{}/{}",
            configuration.namespace().unwrap_or_default(),
            configuration.name_any()
        );
        if sorted.len() > 1 {
            tracing::warn!(
                used = %name,
                count = sorted.len(),
                "several Configurations carry this provider's cluster ID; using the first"
            );
        }
        match IpTranslation::from_configuration(configuration) {
            Ok(translation) => Self::Network {
                configuration: name,
                translation,
            },
            Err(error) => Self::Pending {
                configuration: name,
                reason: error.to_string(),
            },
        }
    }
}

/// Publishes the translation for `provider_cluster_id` on `translation`,
/// following the consumer's Configurations. Until a list of them succeeds
/// (the networking CRDs may not even be installed) the fallback stays.
pub async fn follow_configurations(
    local: Client,
    provider_cluster_id: String,
    fallback: IpTranslation,
    translation: watch::Sender<Translation>,
) {
    let (store, writer) = reflector::store::<Configuration>();
    let selector = format!("{REMOTE_CLUSTER_ID}={provider_cluster_id}");
    let mut changes = watcher(
        Api::<Configuration>::all(local),
        watcher::Config::default().labels(&selector),
    )
    .default_backoff()
    .reflect(writer)
    .boxed();
    let mut reported_unavailable = false;
    while let Some(change) = changes.next().await {
        if let Err(error) = change {
            if !reported_unavailable {
                tracing::info!(%error, "cannot read networking Configurations (no network module?); pod addresses use the --pod-cidr-remap flags");
                reported_unavailable = true;
            }
            continue;
        }
        reported_unavailable = false;
        let current: Vec<Configuration> = store.state().iter().map(|c| (**c).clone()).collect();
        let decided = Translation::decide(&current, &fallback);
        translation.send_if_modified(|current| {
            if *current == decided {
                return false;
            }
            match &decided {
                Translation::Pending {
                    configuration,
                    reason,
                } => tracing::warn!(%configuration, %reason, "pod addresses of this provider cannot be translated; they are withheld"),
                other => tracing::info!(translation = ?other, "pod address translation changed"),
            }
            *current = decided.clone();
            true
        });
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn configuration(name: &str, status: serde_json::Value) -> Configuration {
        serde_json::from_value(json!({
            "apiVersion": "networking.strait.dev/v1beta1", "kind": "Configuration",
            "metadata": {"name": name, "namespace": "peering"},
            "spec": {"remote": {"cidr": {"pod": ["10.0.0.0/16", "fd00:1::/64"], "external": ["10.9.0.0/16"]}}},
            "status": status,
        }))
        .expect("configuration")
    }

    #[test]
    fn the_configuration_remap_wins_over_the_flags_and_none_falls_back_to_them() {
        let flags = IpTranslation {
            remaps: vec!["10.0.0.0/16=10.50.0.0/16".parse().expect("remap")],
        };
        assert_eq!(
            Translation::decide(&[], &flags),
            Translation::Static(flags.clone())
        );
        let remapped = configuration(
            "b",
            json!({"remote": {"cidr": {"pod": ["fd00:70::/64", "10.70.0.0/16"], "external": ["10.71.0.0/16"]}}}),
        );
        let decided = Translation::decide(&[remapped], &flags);
        let translation = decided.usable().expect("usable");
        assert_eq!(translation.to_local("10.0.1.2"), "10.70.1.2");
        assert_eq!(translation.to_local("fd00:1::5"), "fd00:70::5");
        assert_eq!(translation.to_local("10.9.0.7"), "10.71.0.7");
        assert_eq!(translation.to_remote("10.70.1.2"), "10.0.1.2");
    }

    #[test]
    fn a_configuration_without_a_decided_remap_is_pending_and_says_why() {
        let waiting = configuration(
            "b",
            json!({"conditions": [{"type": "Ready", "status": "False", "reason": "WaitingForIPAM", "message": "waiting for allocations of b-pod", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}),
        );
        let decided = Translation::decide(&[waiting], &IpTranslation::default());
        let reason = decided.usable().expect_err("pending");
        assert!(reason.contains("peering/b"), "{reason}");
        assert!(reason.contains("WaitingForIPAM"), "{reason}");
        let lopsided = configuration("b", json!({"remote": {"cidr": {"pod": ["10.70.0.0/24"]}}}));
        let decided = Translation::decide(&[lopsided], &IpTranslation::default());
        assert!(decided.usable().is_err(), "{decided:?}");
    }
}
