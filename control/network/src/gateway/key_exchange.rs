//! Gateway keys exchanged through Strait's own peering.
//!
//! Where the authentication module has peered, the consumer holds a
//! control-plane Identity limited to its tenant namespace on the provider,
//! and the provider's gateway for this peering lives in that namespace. The
//! consumer's network module then does the exchange a person would
//! otherwise do by hand: it writes its own gateway's key there as the
//! PublicKey `remote-<provider gateway>` (which the provider's gateway
//! controller already follows), and copies the provider's published
//! `local-<provider gateway>` here as `remote-<own gateway>`.
//!
//! The modules meet only through CRs: this reads Identities and their
//! kubeconfig Secrets, never the authentication module's code. Without an
//! Identity nothing happens here, and hand-applied PublicKeys keep working.
//! The outcome is the ForeignCluster condition [`CONDITION`].
//!
//! Before the exchange, the same reconcile makes the peering's gateways
//! themselves ([`super::peering_gateways`]), so a peering that selects the
//! network module needs no hand-written gateway at all.

use std::{sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::{api::core::v1::Secret, apimachinery::pkg::apis::meta::v1::Time};
use kube::{
    api::{ListParams, Patch, PatchParams},
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{controller::Action, watcher, Controller},
    Api, Client, ResourceExt as _,
};
use serde_json::json;
use strait_api::{
    authentication::{Identity, IdentityType},
    condition::{find_condition, owned_conditions, ConditionStatus, ConditionUpdate},
    core::{ForeignCluster, PeeringRole},
    names::label::REMOTE_CLUSTER_ID,
    networking::{GatewayClient, GatewayServer, PublicEndpoint, PublicKey},
};
use tracing::warn;

use super::{local_key_name, peering_gateways, remote_key_name};

pub const FIELD_MANAGER: &str = "strait-network-key-exchange";
/// The ForeignCluster condition this controller owns.
pub const CONDITION: &str = "GatewayKeysExchanged";
/// How often keys are compared again (a rotated key, a revoked Identity).
const RESYNC: Duration = Duration::from_secs(2);
/// The Secret key holding an Identity's kubeconfig.
const KUBECONFIG_KEY: &str = "kubeconfig";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

struct Context {
    client: Client,
    /// This cluster's ID when the controller was given one.
    cluster_id: Option<String>,
}

/// Makes the gateways of, and exchanges keys for, every ForeignCluster that
/// selects the network module. `cluster_id` is this cluster's ID (read
/// from the cluster identity ConfigMap when None).
pub async fn run(client: Client, cluster_id: Option<String>) {
    let context = Arc::new(Context {
        client: client.clone(),
        cluster_id,
    });
    Controller::new(
        Api::<ForeignCluster>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, context)
    .for_each(|result| async move {
        if let Err(error) = result {
            warn!(%error, "gateway key exchange failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<ForeignCluster>, error: &Error, _: Arc<Context>) -> Action {
    warn!(%error, "gateway key exchange error");
    Action::requeue(RESYNC)
}

async fn reconcile(fc: Arc<ForeignCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let remote = &fc.spec.cluster_id;
    let deleting = fc.metadata.deletion_timestamp.is_some();
    if deleting || !fc.spec.modules.network {
        if peering_gateways::holds_finalizer(&fc) {
            let identity = control_plane_identity(&ctx.client, remote).await?;
            let local_id = ctx.cluster_id.as_deref();
            peering_gateways::remove(&ctx.client, &fc, identity.as_ref(), local_id).await?;
        }
        // A module left out reports nothing on the peering: the condition
        // of gateways made from it goes (this writer stops applying it).
        if !deleting && find_condition(&conditions(&fc), peering_gateways::CONDITION).is_some() {
            let kept = conditions(&fc)
                .into_iter()
                .filter(|c| c.type_ == CONDITION)
                .collect();
            write_conditions(&ctx.client, &fc, kept).await?;
        }
        return Ok(Action::await_change());
    }
    let outcome = match control_plane_identity(&ctx.client, remote).await? {
        Some(identity) => {
            peering_gateways::hold(&ctx.client, &fc).await?;
            let local_id = ctx.cluster_id.as_deref();
            let gateways = peering_gateways::ensure(&ctx.client, &fc, &identity, local_id).await?;
            let keys = exchange(&ctx.client, remote, &identity).await?;
            vec![gateways, keys]
        }
        // A provider, or a peering without the authentication module, has
        // no Identity and needs none; an exchange on record that lost its
        // Identity says so.
        None if find_condition(&conditions(&fc), CONDITION).is_some() => vec![not(
            "NoIdentity",
            format!(
                "no control-plane Identity for {remote} any more: gateway keys are no longer \
                 exchanged with it (apply the peer's PublicKey by hand, or peer again)"
            ),
        )],
        None => return Ok(Action::requeue(RESYNC)),
    };
    publish(&ctx.client, &fc, outcome).await?;
    Ok(Action::requeue(RESYNC))
}

fn conditions(fc: &ForeignCluster) -> Vec<strait_api::Condition> {
    fc.status
        .as_ref()
        .map(|s| s.conditions.clone())
        .unwrap_or_default()
}

fn not(reason: &'static str, message: String) -> ConditionUpdate<'static> {
    ConditionUpdate {
        type_: CONDITION,
        status: ConditionStatus::False,
        reason,
        message,
    }
}

async fn control_plane_identity(
    client: &Client,
    remote: &str,
) -> Result<Option<Identity>, kube::Error> {
    let identities = Api::<Identity>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    Ok(identities
        .items
        .into_iter()
        .find(|i| i.spec.cluster_id == remote && i.spec.type_ == IdentityType::ControlPlane))
}

/// A gateway of either kind: its namespace, name and, for a server, the
/// endpoint it publishes.
struct GatewayRef {
    namespace: String,
    name: String,
    endpoint: Option<PublicEndpoint>,
}

/// The gateways of `namespace` (all namespaces when None) matching `params`.
async fn gateways(
    client: &Client,
    namespace: Option<&str>,
    params: &ListParams,
) -> Result<Vec<GatewayRef>, kube::Error> {
    let servers: Api<GatewayServer> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let clients: Api<GatewayClient> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let mut found: Vec<GatewayRef> = servers
        .list(params)
        .await?
        .items
        .into_iter()
        .map(|s| GatewayRef {
            namespace: s.namespace().unwrap_or_default(),
            name: s.name_any(),
            endpoint: s.status.and_then(|st| st.endpoint),
        })
        .collect();
    found.extend(
        clients
            .list(params)
            .await?
            .items
            .into_iter()
            .map(|c| GatewayRef {
                namespace: c.namespace().unwrap_or_default(),
                name: c.name_any(),
                endpoint: None,
            }),
    );
    Ok(found)
}

/// The one gateway in `found`, or why there is not exactly one.
fn single(found: Vec<GatewayRef>, where_: &str) -> Result<GatewayRef, (&'static str, String)> {
    let names: Vec<String> = found
        .iter()
        .map(|g| format!("{}/{}", g.namespace, g.name))
        .collect();
    let mut found = found.into_iter();
    match (found.next(), found.next()) {
        (Some(gateway), None) => Ok(gateway),
        (None, _) => Err((
            "WaitingForGateway",
            format!("no GatewayServer or GatewayClient {where_} yet"),
        )),
        (Some(_), Some(_)) => Err((
            "AmbiguousGateway",
            format!(
                "more than one gateway {where_} ({}): keep one per peering",
                names.join(", ")
            ),
        )),
    }
}

/// A client acting as the Identity, from the kubeconfig Secret the
/// authentication module (or a person) wrote for it.
pub(super) async fn identity_client(
    client: &Client,
    identity: &Identity,
) -> Result<Result<Client, String>, kube::Error> {
    let namespace = identity.namespace().unwrap_or_default();
    let Some(secret_ref) = identity
        .status
        .as_ref()
        .and_then(|s| s.kubeconfig_secret_ref.as_ref())
    else {
        return Ok(Err(format!(
            "Identity {namespace}/{} has no kubeconfig yet (status.kubeconfigSecretRef)",
            identity.name_any()
        )));
    };
    let secret_namespace = secret_ref.namespace.as_deref().unwrap_or(&namespace);
    let Some(secret) = Api::<Secret>::namespaced(client.clone(), secret_namespace)
        .get_opt(&secret_ref.name)
        .await?
    else {
        return Ok(Err(format!(
            "Secret {secret_namespace}/{} of Identity {} is missing",
            secret_ref.name,
            identity.name_any()
        )));
    };
    let Some(yaml) = secret
        .data
        .as_ref()
        .and_then(|d| d.get(KUBECONFIG_KEY))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
    else {
        return Ok(Err(format!(
            "Secret {secret_namespace}/{} has no `{KUBECONFIG_KEY}` key",
            secret_ref.name
        )));
    };
    Ok(remote_client(&yaml).await)
}

async fn remote_client(yaml: &str) -> Result<Client, String> {
    let kubeconfig =
        Kubeconfig::from_yaml(yaml).map_err(|e| format!("unreadable kubeconfig: {e}"))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("unusable kubeconfig: {e}"))?;
    config.connect_timeout = Some(CONNECT_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    Client::try_from(config).map_err(|e| format!("unusable kubeconfig: {e}"))
}

/// What a failed call to the provider means for the peering, as condition
/// `type_`.
pub(super) fn provider_failure(
    type_: &'static str,
    identity: &Identity,
    error: &kube::Error,
) -> ConditionUpdate<'static> {
    let not = |reason, message| ConditionUpdate {
        type_,
        status: ConditionStatus::False,
        reason,
        message,
    };
    match error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => not(
            "IdentityRejected",
            format!(
                "the provider refused Identity {}/{} ({}): the peering was revoked or its \
                 credentials expired, so nothing more is done on the provider for the network",
                identity.namespace().unwrap_or_default(),
                identity.name_any(),
                status.message
            ),
        ),
        other => not(
            "ProviderUnreachable",
            format!(
                "the provider's API server through Identity {}: {other}",
                identity.name_any()
            ),
        ),
    }
}

async fn key_of(api: &Api<PublicKey>, name: &str) -> Result<Option<String>, kube::Error> {
    Ok(api.get_opt(name).await?.map(|k| k.spec.public_key))
}

/// Writes PublicKey `name` = `key` unless it already says so.
async fn put_key(api: &Api<PublicKey>, name: &str, key: &str) -> Result<bool, kube::Error> {
    if key_of(api, name).await?.as_deref() == Some(key) {
        return Ok(false);
    }
    let object = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "PublicKey",
        "metadata": { "name": name },
        "spec": { "publicKey": key },
    });
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(true)
}

async fn exchange(
    client: &Client,
    remote: &str,
    identity: &Identity,
) -> Result<ConditionUpdate<'static>, kube::Error> {
    let labelled = ListParams::default().labels(&format!("{REMOTE_CLUSTER_ID}={remote}"));
    let own = match single(
        gateways(client, None, &labelled).await?,
        &format!("labelled {REMOTE_CLUSTER_ID}={remote} in this cluster"),
    ) {
        Ok(gateway) => gateway,
        Err((reason, message)) => return Ok(not(reason, message)),
    };
    let own_keys: Api<PublicKey> = Api::namespaced(client.clone(), &own.namespace);
    let Some(own_key) = key_of(&own_keys, &local_key_name(&own.name)).await? else {
        return Ok(not(
            "WaitingForKey",
            format!(
                "gateway {}/{} has not published PublicKey {} yet",
                own.namespace,
                own.name,
                local_key_name(&own.name)
            ),
        ));
    };
    let provider = match identity_client(client, identity).await? {
        Ok(provider) => provider,
        Err(message) => return Ok(not("IdentityNotReady", message)),
    };
    let tenant = identity.spec.namespace.as_str();
    let peer = match gateways(&provider, Some(tenant), &ListParams::default()).await {
        Ok(found) => match single(found, &format!("in namespace {tenant} of {remote}")) {
            Ok(gateway) => gateway,
            Err((reason, message)) => return Ok(not(reason, message)),
        },
        Err(error) => return Ok(provider_failure(CONDITION, identity, &error)),
    };
    let peer_keys: Api<PublicKey> = Api::namespaced(provider, tenant);
    if let Err(error) = put_key(&peer_keys, &remote_key_name(&peer.name), &own_key).await {
        return Ok(provider_failure(CONDITION, identity, &error));
    }
    let peer_key = match key_of(&peer_keys, &local_key_name(&peer.name)).await {
        Ok(Some(key)) => key,
        Ok(None) => {
            return Ok(not(
                "WaitingForPeerKey",
                format!(
                    "{remote}'s gateway {tenant}/{} has not published PublicKey {} yet",
                    peer.name,
                    local_key_name(&peer.name)
                ),
            ))
        }
        Err(error) => return Ok(provider_failure(CONDITION, identity, &error)),
    };
    put_key(&own_keys, &remote_key_name(&own.name), &peer_key).await?;
    let endpoint = peer
        .endpoint
        .map(|e| {
            format!(
                "; its server endpoint is {}:{}",
                e.addresses.join(","),
                e.port
            )
        })
        .unwrap_or_default();
    Ok(ConditionUpdate {
        type_: CONDITION,
        status: ConditionStatus::True,
        reason: "Exchanged",
        message: format!(
            "through Identity {}: {}/{}'s key is {remote}'s PublicKey {tenant}/{}, and {remote}'s \
             gateway {}'s key is PublicKey {}/{}{endpoint}",
            identity.name_any(),
            own.namespace,
            own.name,
            remote_key_name(&peer.name),
            peer.name,
            own.namespace,
            remote_key_name(&own.name),
        ),
    })
}

/// Applies this controller's conditions on the ForeignCluster (the list
/// merges by type: the other modules' stay as they are).
async fn publish<'a>(
    client: &Client,
    fc: &ForeignCluster,
    updates: impl IntoIterator<Item = ConditionUpdate<'a>>,
) -> Result<(), kube::Error> {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let (conditions, changed) =
        owned_conditions(&conditions(fc), updates, fc.metadata.generation, &now);
    if !changed {
        return Ok(());
    }
    write_conditions(client, fc, conditions).await
}

/// Applies `conditions` as this controller's on the ForeignCluster, keeping its role.
async fn write_conditions(
    client: &Client,
    fc: &ForeignCluster,
    conditions: Vec<strait_api::Condition>,
) -> Result<(), kube::Error> {
    let role = fc
        .status
        .as_ref()
        .map(|s| s.role)
        .unwrap_or(PeeringRole::Unknown);
    let patch = json!({
        "apiVersion": "core.strait.dev/v1beta1",
        "kind": "ForeignCluster",
        "status": { "role": role, "conditions": conditions },
    });
    Api::<ForeignCluster>::all(client.clone())
        .patch_status(
            &fc.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}
