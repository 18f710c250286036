//! `strait-fabric nat run --from-cluster`: the NAT tables follow the
//! NatConfiguration CRs of a gateway. Every CR the agent selects is merged
//! into one table, in a stable order (namespace, then name) after the
//! static `--config` file, and applied atomically; each CR's status gets
//! this host's entry (`Applied` or `Error` with the reason, and the
//! generation it is about) by server-side apply. A CR that is refused
//! alone, or that conflicts with those before it, keeps its last applied
//! spec in the table; a deleted CR's entries leave with the next apply.

use std::collections::BTreeMap;

use k8s_openapi::{apimachinery::pkg::apis::meta::v1::Time, jiff::Timestamp};
use kube::{
    api::{Patch, PatchParams},
    Api, Client, ResourceExt as _,
};
use strait_api::networking::{ApplyState, HostApplyStatus, NatConfiguration, NatConfigurationSpec};

use super::{NatError, NatPlan};

/// What `nat run --from-cluster` calls, as RBAC rules (the chart's
/// ClusterRole strait-gateway-nat grants exactly these): read the
/// NatConfigurations it follows and write its entry in their status.
pub const RBAC: &[strait_api::rbac::Rule] = &[
    strait_api::rbac::Rule {
        api_group: strait_api::names::group::NETWORKING,
        resources: &["natconfigurations"],
        verbs: &["get", "list", "watch"],
        resource_names: &[],
    },
    strait_api::rbac::Rule {
        api_group: strait_api::names::group::NETWORKING,
        resources: &["natconfigurations/status"],
        verbs: &["patch"],
        resource_names: &[],
    },
];

/// Label of the static file's entries in errors.
pub const FILE_LABEL: &str = "--config";

/// What became of one CR in a merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    /// None when its current spec is in the table, else why not.
    pub error: Option<String>,
}

/// A merge of the file and the CRs.
#[derive(Debug)]
pub struct Merged {
    pub plan: NatPlan,
    pub outcomes: Vec<Outcome>,
}

/// The CRs' specs last merged successfully, so that a bad edit keeps a
/// CR's previous entries instead of dropping them.
#[derive(Debug, Default)]
pub struct Follower {
    last_good: BTreeMap<(String, String), NatConfigurationSpec>,
}

impl Follower {
    /// Merges `file` (refused whole when invalid: it is the operator's)
    /// and `crs`, CR by CR in (namespace, name) order.
    pub fn merge(
        &mut self,
        file: Option<&NatConfigurationSpec>,
        crs: &[NatConfiguration],
    ) -> Result<Merged, NatError> {
        let mut sorted: Vec<&NatConfiguration> = crs.iter().collect();
        sorted.sort_by_key(|c| (c.namespace().unwrap_or_default(), c.name_any()));
        let mut accepted: Vec<(String, NatConfigurationSpec)> = Vec::new();
        if let Some(file) = file {
            NatPlan::from_specs([(FILE_LABEL, file)])?;
            accepted.push((FILE_LABEL.to_owned(), file.clone()));
        }
        let mut outcomes = Vec::new();
        let mut good = BTreeMap::new();
        for cr in sorted {
            let key = (cr.namespace().unwrap_or_default(), cr.name_any());
            let label = format!("NatConfiguration {}/{}", key.0, key.1);
            let fits = |spec: &NatConfigurationSpec| -> Result<(), NatError> {
                let labelled = accepted
                    .iter()
                    .map(|(l, s)| (l.as_str(), s))
                    .chain([(label.as_str(), spec)]);
                NatPlan::from_specs(labelled).map(|_| ())
            };
            let error = match fits(&cr.spec) {
                Ok(()) => {
                    accepted.push((label.clone(), cr.spec.clone()));
                    good.insert(key.clone(), cr.spec.clone());
                    None
                }
                Err(e) => {
                    let mut message = e.to_string();
                    if let Some(previous) = self.last_good.get(&key) {
                        if fits(previous).is_ok() {
                            accepted.push((label.clone(), previous.clone()));
                            good.insert(key.clone(), previous.clone());
                            message.push_str("; its previously applied spec stays in effect");
                        }
                    }
                    Some(message)
                }
            };
            outcomes.push(Outcome {
                namespace: key.0,
                name: key.1,
                generation: cr.metadata.generation.unwrap_or_default(),
                error,
            });
        }
        let plan = NatPlan::from_specs(accepted.iter().map(|(l, s)| (l.as_str(), s)))?;
        self.last_good = good;
        Ok(Merged { plan, outcomes })
    }
}

/// The field manager of a host's status entries.
pub fn field_manager(host: &str) -> String {
    format!("strait-nat-{host}")
}

/// Writes this host's entry into a CR's status.
pub async fn report(
    client: &Client,
    host: &str,
    outcome: &Outcome,
    apply_error: Option<&str>,
) -> Result<(), kube::Error> {
    let message = outcome
        .error
        .as_deref()
        .or(apply_error)
        .unwrap_or_default()
        .to_owned();
    let state = if message.is_empty() {
        ApplyState::Applied
    } else {
        ApplyState::Error
    };
    let entry = HostApplyStatus {
        host: host.to_owned(),
        observed_generation: outcome.generation,
        state,
        message,
        last_update_time: Time(Timestamp::now()),
    };
    let patch = serde_json::json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "NatConfiguration",
        "status": { "hosts": [entry] },
    });
    Api::<NatConfiguration>::namespaced(client.clone(), &outcome.namespace)
        .patch_status(
            &outcome.name,
            &PatchParams::apply(&field_manager(host)).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use strait_api::networking::{NatDirection, PrefixMapping};

    use super::*;

    fn cr(
        namespace: &str,
        name: &str,
        generation: i64,
        mappings: &[(&str, &str)],
    ) -> NatConfiguration {
        let mut cr = NatConfiguration::new(
            name,
            NatConfigurationSpec {
                prefixes: mappings
                    .iter()
                    .map(|(from, to)| PrefixMapping {
                        direction: NatDirection::Destination,
                        from: (*from).into(),
                        to: (*to).into(),
                    })
                    .collect(),
                addresses: vec![],
            },
        );
        cr.metadata.namespace = Some(namespace.into());
        cr.metadata.generation = Some(generation);
        cr
    }

    fn shown(merged: &Merged) -> Vec<String> {
        merged
            .plan
            .translations()
            .iter()
            .map(|t| t.to_string())
            .collect()
    }

    #[test]
    fn crs_merge_in_a_stable_order_and_a_bad_edit_keeps_the_last_good_spec() {
        let mut follower = Follower::default();
        let b = cr(
            "strait",
            "peer-b",
            1,
            &[("198.19.64.0/18", "198.18.64.0/18")],
        );
        let a = cr("strait", "peer-a", 3, &[("198.19.0.0/18", "198.18.0.0/18")]);
        let merged = follower
            .merge(None, &[b.clone(), a.clone()])
            .expect("merge");
        assert_eq!(
            shown(&merged),
            [
                "Destination 198.19.0.0/18 <-> 198.18.0.0/18",
                "Destination 198.19.64.0/18 <-> 198.18.64.0/18",
            ]
        );
        assert!(merged.outcomes.iter().all(|o| o.error.is_none()));
        assert_eq!(merged.outcomes[0].name, "peer-a");
        assert_eq!(merged.outcomes[0].generation, 3);

        // peer-b is edited into a conflict with peer-a: peer-b reports the
        // error and its previous mapping stays.
        let bad_b = cr(
            "strait",
            "peer-b",
            2,
            &[("198.19.128.0/18", "198.18.0.0/18")],
        );
        let merged = follower.merge(None, &[a.clone(), bad_b]).expect("merge");
        assert_eq!(shown(&merged).len(), 2);
        assert!(shown(&merged)[1].contains("198.19.64.0/18"));
        let error = merged.outcomes[1].error.as_deref().expect("an error");
        assert!(
            error.starts_with(
                "NatConfiguration strait/peer-b prefixes[0]: its `to` 198.18.0.0/18 overlaps"
            ) && error.ends_with("its previously applied spec stays in effect"),
            "{error}"
        );
        assert_eq!(merged.outcomes[1].generation, 2);

        // Deleted: its entries go, and so does what was remembered of it.
        let merged = follower.merge(None, &[a]).expect("merge");
        assert_eq!(shown(&merged).len(), 1);
        let fresh_bad = cr(
            "strait",
            "peer-b",
            3,
            &[("198.19.128.0/18", "198.18.0.0/18")],
        );
        let again = cr("strait", "peer-a", 3, &[("198.19.0.0/18", "198.18.0.0/18")]);
        let merged = follower.merge(None, &[again, fresh_bad]).expect("merge");
        assert_eq!(shown(&merged).len(), 1, "nothing to fall back on");
        assert!(merged.outcomes[1].error.is_some());
    }

    #[test]
    fn the_file_comes_first_and_is_refused_whole() {
        let mut follower = Follower::default();
        let file = cr("", "file", 0, &[("198.19.0.0/18", "198.18.0.0/18")]).spec;
        let clash = cr(
            "strait",
            "peer-a",
            1,
            &[("198.19.64.0/18", "198.18.0.0/18")],
        );
        let merged = follower.merge(Some(&file), &[clash]).expect("merge");
        assert_eq!(shown(&merged).len(), 1);
        assert!(merged.outcomes[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("the `to` of --config prefixes[0]")));
        let broken = cr("", "file", 0, &[("198.19.0.0/18", "198.18.0.0/17")]).spec;
        assert!(follower.merge(Some(&broken), &[]).is_err());
    }
}
