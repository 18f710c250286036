//! `strait peer` / `strait unpeer`: write (or delete) the declarative CRs of
//! a peering in both clusters and wait for the controllers. The CLI never
//! does what the controllers do: the same YAML with `kubectl apply -f` gives
//! the same peering (`--dry-run` prints it).
use std::{collections::BTreeMap, future::Future, io::Write, time::Duration};

use k8s_openapi::ByteString;
use serde_json::{json, Value};
use strait_api::{
    authentication::ResourceSlice,
    condition::find_condition,
    core::{ForeignCluster, ModuleSelection},
    names::{self, SYSTEM_NAMESPACE},
    ConditionStatus,
};

use crate::{
    cluster::{self, describe},
    error::{encode_error, next_for, Error},
};

/// Condition on the consumer's ForeignCluster once the handshake is done.
pub const AUTHENTICATION_READY: &str = "AuthenticationReady";
/// Conditions a provider may answer a ResourceSlice with (the contract's
/// `Accepted`, or the API doc's `Resources` with reason Accepted/Denied).
pub const SLICE_CONDITIONS: [&str; 2] = ["Accepted", "Resources"];

/// What `strait peer` writes.
#[derive(Debug, Clone)]
pub struct Peering {
    pub consumer_id: String,
    pub provider_id: String,
    /// The provider's kubeconfig, stored in the consumer.
    pub provider_kubeconfig: String,
    pub modules: ModuleSelection,
    pub slice: Option<Slice>,
}

#[derive(Debug, Clone)]
pub struct Slice {
    pub name: String,
    pub resources: BTreeMap<String, String>,
}

impl Peering {
    /// On the provider: a ForeignCluster for the consumer, authentication
    /// only, no credentials (the provider never calls the consumer).
    pub fn provider_objects(&self) -> Vec<Value> {
        vec![json!({
            "apiVersion": "core.strait.dev/v1beta1",
            "kind": "ForeignCluster",
            "metadata": { "name": self.consumer_id },
            "spec": {
                "clusterID": self.consumer_id,
                "modules": { "authentication": true },
            },
        })]
    }

    /// On the consumer: the provider's kubeconfig Secret, a ForeignCluster
    /// for the provider, and the ResourceSlice asked for (in the provider's
    /// tenant namespace).
    pub fn consumer_objects(&self) -> Vec<Value> {
        let secret = names::peering_kubeconfig_secret(&self.provider_id);
        let kubeconfig = ByteString(self.provider_kubeconfig.clone().into_bytes());
        let mut objects = vec![
            json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": secret,
                    "namespace": SYSTEM_NAMESPACE,
                    "labels": { names::label::REMOTE_CLUSTER_ID: self.provider_id },
                },
                "type": "Opaque",
                "data": { "kubeconfig": kubeconfig },
            }),
            json!({
                "apiVersion": "core.strait.dev/v1beta1",
                "kind": "ForeignCluster",
                "metadata": { "name": self.provider_id },
                "spec": {
                    "clusterID": self.provider_id,
                    "modules": self.modules,
                    "kubeconfigSecretRef": { "name": secret, "namespace": SYSTEM_NAMESPACE },
                },
            }),
        ];
        if let Some(slice) = &self.slice {
            let namespace = names::tenant_namespace(&self.provider_id);
            objects.push(json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": { "name": namespace },
            }));
            objects.push(json!({
                "apiVersion": "authentication.strait.dev/v1beta1",
                "kind": "ResourceSlice",
                "metadata": { "name": slice.name, "namespace": namespace },
                "spec": {
                    "consumerClusterID": self.consumer_id,
                    "providerClusterID": self.provider_id,
                    "resources": slice.resources,
                },
            }));
        }
        objects
    }

    /// Both clusters' objects as YAML for `kubectl apply -f`.
    pub fn to_yaml(&self) -> Result<String, Error> {
        let mut text = String::new();
        for (cluster, id, objects) in [
            ("provider", &self.provider_id, self.provider_objects()),
            ("consumer", &self.consumer_id, self.consumer_objects()),
        ] {
            text.push_str(&format!(
                "# On the {cluster} ({id}): kubectl --kubeconfig <{cluster} kubeconfig> apply -f -\n"
            ));
            for object in objects {
                text.push_str("---\n");
                text.push_str(
                    &serde_norway::to_string(&object).map_err(|e| encode_error("YAML", e))?,
                );
            }
        }
        Ok(text)
    }
}

/// Where a wait stands.
enum Progress {
    Done(String),
    Waiting(String),
    Refused { problem: String, next: String },
}

/// Polls `check` until done, printing each new state once.
async fn wait_for<F, Fut>(
    what: &str,
    timeout: Duration,
    out: &mut dyn Write,
    mut check: F,
) -> Result<(), Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Progress, Error>>,
{
    let started = tokio::time::Instant::now();
    let mut last = String::new();
    loop {
        match check().await? {
            Progress::Done(message) => {
                writeln!(
                    out,
                    "  ✓ {message} ({:.1}s)",
                    started.elapsed().as_secs_f64()
                )?;
                return Ok(());
            }
            Progress::Refused { problem, next } => return Err(Error::failed(problem, next)),
            Progress::Waiting(state) => {
                if state != last {
                    writeln!(out, "  … {what}: {state}")?;
                    last = state;
                }
            }
        }
        if started.elapsed() >= timeout {
            return Err(Error::failed(
                format!("timed out after {}s waiting for {what}; last state: {last}", timeout.as_secs()),
                "see `strait status` in both clusters and the controller's log (kubectl -n strait logs deploy/strait-controller); strait peer is safe to re-run, or raise --timeout",
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn condition_line(type_: &str, status: &str, reason: &str, message: &str) -> String {
    if message.is_empty() {
        format!("{type_}={status} ({reason})")
    } else {
        format!("{type_}={status} ({reason}): {message}")
    }
}

/// Writes the peering and waits for AuthenticationReady and the slice.
pub async fn peer(
    consumer: &kube::Client,
    provider: &kube::Client,
    peering: &Peering,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let (consumer_name, provider_name) = (
        format!("the consumer ({})", peering.consumer_id),
        format!("the provider ({})", peering.provider_id),
    );
    writeln!(
        out,
        "peering consumer {} with provider {}",
        peering.consumer_id, peering.provider_id
    )?;
    for object in peering.provider_objects() {
        cluster::apply(provider, &object, &provider_name).await?;
        writeln!(out, "  provider: applied {}", describe(&object))?;
    }
    for object in peering.consumer_objects() {
        cluster::apply(consumer, &object, &consumer_name).await?;
        writeln!(out, "  consumer: applied {}", describe(&object))?;
    }
    if peering.modules.authentication {
        let api = kube::Api::<ForeignCluster>::all(consumer.clone());
        let name = peering.provider_id.clone();
        wait_for(
            &format!("{AUTHENTICATION_READY} on ForeignCluster {name}"),
            timeout,
            out,
            || async {
                let fc = api.get_opt(&name).await.map_err(|e| {
                    let next = next_for(&e, &consumer_name);
                    Error::api(format!("reading ForeignCluster {name}"), e, next)
                })?;
                let conditions = fc.and_then(|f| f.status).map(|s| s.conditions).unwrap_or_default();
                Ok(match find_condition(&conditions, AUTHENTICATION_READY) {
                    Some(c) if c.status == ConditionStatus::True => Progress::Done(condition_line(
                        AUTHENTICATION_READY, "True", &c.reason, &c.message,
                    )),
                    Some(c) => Progress::Waiting(condition_line(
                        AUTHENTICATION_READY,
                        &format!("{:?}", c.status),
                        &c.reason,
                        &c.message,
                    )),
                    None => Progress::Waiting(
                        "no condition yet (is strait-controller running with --authentication in the consumer?)".to_owned(),
                    ),
                })
            },
        )
        .await?;
    }
    if let Some(slice) = &peering.slice {
        let namespace = names::tenant_namespace(&peering.provider_id);
        let api = kube::Api::<ResourceSlice>::namespaced(consumer.clone(), &namespace);
        wait_for(
            &format!("ResourceSlice {namespace}/{} accepted", slice.name),
            timeout,
            out,
            || async {
                let found = api.get_opt(&slice.name).await.map_err(|e| {
                    let next = next_for(&e, &consumer_name);
                    Error::api(format!("reading ResourceSlice {}", slice.name), e, next)
                })?;
                let status = found.and_then(|s| s.status);
                let conditions = status.as_ref().map(|s| s.conditions.clone()).unwrap_or_default();
                let answer = SLICE_CONDITIONS
                    .iter()
                    .find_map(|t| find_condition(&conditions, t));
                Ok(match answer {
                    Some(c) if c.status == ConditionStatus::True => {
                        let granted = status
                            .map(|s| {
                                s.resources
                                    .iter()
                                    .map(|(k, v)| format!("{k}={}", v.0))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            })
                            .unwrap_or_default();
                        Progress::Done(format!("ResourceSlice {} accepted, granted: {granted}", slice.name))
                    }
                    Some(c) if c.status == ConditionStatus::False && c.reason == "Denied" => {
                        Progress::Refused {
                            problem: format!(
                                "the provider denied ResourceSlice {namespace}/{}: {}",
                                slice.name, c.message
                            ),
                            next: "ask for less with --resource-slice, or ask the provider's admin to raise its policy; then re-run strait peer".to_owned(),
                        }
                    }
                    Some(c) => Progress::Waiting(condition_line(
                        &c.type_,
                        &format!("{:?}", c.status),
                        &c.reason,
                        &c.message,
                    )),
                    None => Progress::Waiting("no answer from the provider yet".to_owned()),
                })
            },
        )
        .await?;
    }
    writeln!(
        out,
        "peered: {} consumes {} (strait status shows each module)",
        peering.consumer_id, peering.provider_id
    )?;
    Ok(())
}

/// Deletes what `peer` wrote, in the order the controllers need: the slice,
/// then the consumer's ForeignCluster (its finalizer still uses the
/// kubeconfig Secret to tear the Tenant down), then the Secret, then the
/// provider's ForeignCluster. Each is waited for until gone.
pub async fn unpeer(
    consumer: &kube::Client,
    provider: &kube::Client,
    peering: &Peering,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let consumer_name = format!("the consumer ({})", peering.consumer_id);
    let provider_name = format!("the provider ({})", peering.provider_id);
    writeln!(
        out,
        "unpeering consumer {} from provider {}",
        peering.consumer_id, peering.provider_id
    )?;
    const ORDER: [&str; 4] = ["ResourceSlice", "ForeignCluster", "Secret", "Namespace"];
    let mut consumer_objects = peering.consumer_objects();
    consumer_objects.sort_by_key(|o| ORDER.iter().position(|kind| o["kind"] == *kind));
    let steps = consumer_objects
        .into_iter()
        .map(|o| (consumer, o, &consumer_name, "consumer"))
        .chain(
            peering
                .provider_objects()
                .into_iter()
                .map(|o| (provider, o, &provider_name, "provider")),
        );
    for (client, object, cluster, side) in steps {
        cluster::delete(client, &object, cluster).await?;
        wait_for(
            &format!("{side}: {} deleted", describe(&object)),
            timeout,
            out,
            || async {
                Ok(if cluster::exists(client, &object, cluster).await? {
                    Progress::Waiting(
                        "still there (a controller's finalizer is tearing it down)".to_owned(),
                    )
                } else {
                    Progress::Done(format!("{side}: {} gone", describe(&object)))
                })
            },
        )
        .await?;
    }
    writeln!(
        out,
        "unpeered: nothing of the peering is left in either cluster"
    )?;
    Ok(())
}

/// Parses the flags' module list into the API's selection.
pub fn module_selection(modules: &[crate::cli::Module]) -> ModuleSelection {
    use crate::cli::Module;
    ModuleSelection {
        network: modules.contains(&Module::Network),
        authentication: modules.contains(&Module::Authentication),
        offloading: modules.contains(&Module::Offloading),
    }
}
