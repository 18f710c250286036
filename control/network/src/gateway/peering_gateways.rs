//! The gateways of a peering, made from the peering itself.
//!
//! Liqo's `liqoctl peer` creates a GatewayServer on the provider, waits for
//! the address it publishes and creates the matching GatewayClient on the
//! consumer. Strait does the same declaratively: once a consumer's
//! ForeignCluster selects the network module and its control-plane Identity
//! works, the consumer's network module keeps
//! - the GatewayServer `<this cluster's ID>` in its tenant namespace on the
//!   provider (through the Identity), and
//! - the GatewayClient `<provider ID>` in the Identity's namespace here,
//!   dialling the address and port in the server's `status.endpoint` with
//!   the server's MTU, followed when they change,
//!
//! both labelled [`PEERING_GATEWAY`]. Only gateways with that label are
//! updated or removed: a gateway a person made for the same peer (no label)
//! is used as it is and never touched. The ForeignCluster holds the
//! finalizer [`PEERING_GATEWAYS`] while these gateways exist, so deselecting
//! the network module or deleting the ForeignCluster removes both sides.
//! The outcome is the ForeignCluster condition [`CONDITION`].

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    api::{DeleteParams, ListParams, Patch, PatchParams},
    Api, Client, Resource as _, ResourceExt as _,
};
use serde_json::json;
use strait_api::{
    authentication::Identity,
    condition::{ConditionStatus, ConditionUpdate},
    core::ForeignCluster,
    names::{
        self,
        finalizer::PEERING_GATEWAYS,
        label::{MANAGED_BY, MANAGED_BY_VALUE, PEERING_GATEWAY, REMOTE_CLUSTER_ID},
    },
    networking::{GatewayClient, GatewayServer, PublicEndpoint, PublicKey},
};
use tracing::info;

use super::{key_exchange, remote_key_name};

/// The ForeignCluster condition saying where the peering's gateways are.
pub const CONDITION: &str = "GatewaysProvisioned";
pub const FIELD_MANAGER: &str = "strait-network-peering-gateways";
/// UDP port of a GatewayServer made for a peering (WireGuard's usual).
pub const SERVER_PORT: i32 = 51820;

fn update(
    status: ConditionStatus,
    reason: &'static str,
    message: String,
) -> ConditionUpdate<'static> {
    ConditionUpdate {
        type_: CONDITION,
        status,
        reason,
        message,
    }
}

fn waiting(reason: &'static str, message: String) -> ConditionUpdate<'static> {
    update(ConditionStatus::False, reason, message)
}

/// `<remote>=<id>,<peering gateway>=true`: the gateways made for a peering.
fn made_for(remote: &str) -> ListParams {
    ListParams::default().labels(&format!(
        "{REMOTE_CLUSTER_ID}={remote},{PEERING_GATEWAY}=true"
    ))
}

fn is_made_by_peering(labels: &BTreeMap<String, String>) -> bool {
    labels.get(PEERING_GATEWAY).map(String::as_str) == Some("true")
}

fn labels(remote: &str) -> serde_json::Value {
    json!({
        REMOTE_CLUSTER_ID: remote,
        PEERING_GATEWAY: "true",
        MANAGED_BY: MANAGED_BY_VALUE,
    })
}

/// This cluster's ID: given to the controller, or the one the
/// authentication module stored (the provider's GatewayServer is named and
/// labelled with it, so the provider knows whose it is).
pub async fn local_cluster_id(
    client: &Client,
    given: Option<&str>,
) -> Result<Option<String>, kube::Error> {
    if let Some(id) = given {
        return Ok(Some(id.to_owned()));
    }
    Ok(
        Api::<ConfigMap>::namespaced(client.clone(), names::SYSTEM_NAMESPACE)
            .get_opt(names::identity::CLUSTER_IDENTITY_CONFIGMAP)
            .await?
            .and_then(|c| c.data)
            .and_then(|d| d.get(names::identity::CLUSTER_ID_KEY).cloned()),
    )
}

/// Whether the ForeignCluster holds [`PEERING_GATEWAYS`].
pub fn holds_finalizer(fc: &ForeignCluster) -> bool {
    fc.finalizers().iter().any(|f| f == PEERING_GATEWAYS)
}

/// Adds or removes [`PEERING_GATEWAYS`].
async fn set_finalizer(
    client: &Client,
    fc: &ForeignCluster,
    hold: bool,
) -> Result<(), kube::Error> {
    let mut finalizers: Vec<String> = fc
        .finalizers()
        .iter()
        .filter(|f| *f != PEERING_GATEWAYS)
        .cloned()
        .collect();
    if hold {
        finalizers.push(PEERING_GATEWAYS.to_owned());
    }
    // A patch carrying the resourceVersion read is refused if the object
    // changed since: another controller's finalizer is never lost.
    let patch = json!({
        "metadata": {"resourceVersion": fc.resource_version(), "finalizers": finalizers},
    });
    Api::<ForeignCluster>::all(client.clone())
        .patch(
            &fc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await?;
    Ok(())
}

/// Makes sure the peering's GatewayServer (on the provider, through
/// `provider`) and GatewayClient (here) exist and agree; the condition says
/// what is missing.
pub async fn ensure(
    client: &Client,
    fc: &ForeignCluster,
    identity: &Identity,
    local_id: Option<&str>,
) -> Result<ConditionUpdate<'static>, kube::Error> {
    let remote = fc.spec.cluster_id.as_str();
    let labelled = ListParams::default().labels(&format!("{REMOTE_CLUSTER_ID}={remote}"));
    // A gateway made by hand for this peer is the user's way: keep out.
    let servers = Api::<GatewayServer>::all(client.clone())
        .list(&labelled)
        .await?;
    let clients = Api::<GatewayClient>::all(client.clone())
        .list(&labelled)
        .await?;
    let by_hand = servers
        .items
        .iter()
        .map(|s| ("GatewayServer", s.meta(), s.labels()))
        .chain(
            clients
                .items
                .iter()
                .map(|c| ("GatewayClient", c.meta(), c.labels())),
        )
        .find(|(_, _, labels)| !is_made_by_peering(labels));
    if let Some((kind, meta, _)) = by_hand {
        return Ok(update(
            ConditionStatus::True,
            "UserGateway",
            format!(
                "{kind} {}/{} for {remote} was made by hand (no {PEERING_GATEWAY} label): it is \
                 used as it is and the peering creates no gateway; delete it to let the peering \
                 make both sides",
                meta.namespace.as_deref().unwrap_or_default(),
                meta.name.as_deref().unwrap_or_default()
            ),
        ));
    }
    let Some(local_id) = local_cluster_id(client, local_id).await? else {
        return Ok(waiting(
            "WaitingForClusterID",
            format!(
                "this cluster's ID is unknown, and the provider's GatewayServer is named after \
                 it: pass --cluster-id to strait-controller, or let the authentication module \
                 write ConfigMap {}/{}",
                names::SYSTEM_NAMESPACE,
                names::identity::CLUSTER_IDENTITY_CONFIGMAP
            ),
        ));
    };
    let provider = match key_exchange::identity_client(client, identity).await? {
        Ok(provider) => provider,
        Err(message) => return Ok(waiting("IdentityNotReady", message)),
    };
    let tenant = identity.spec.namespace.as_str();
    let remote_servers: Api<GatewayServer> = Api::namespaced(provider, tenant);
    let server = match provider_server(&remote_servers, remote, tenant, &local_id).await {
        Ok(Ok(server)) => server,
        Ok(Err(update)) => return Ok(update),
        Err(error) => return Ok(key_exchange::provider_failure(CONDITION, identity, &error)),
    };
    let server_name = format!("{tenant}/{}", server.name_any());
    let Some(endpoint) = server.status.as_ref().and_then(|s| s.endpoint.clone()) else {
        return Ok(waiting(
            "WaitingForProviderGateway",
            format!(
                "{remote}'s GatewayServer {server_name} has no status.endpoint yet: {remote}'s \
                 network module publishes one once its gateway runs and its Service has an \
                 address (kubectl get gatewayserver -n {tenant} on {remote})"
            ),
        ));
    };
    let namespace = identity.namespace().unwrap_or_default();
    let mtu = server.spec.mtu;
    apply_client(client, fc, &namespace, &endpoint, mtu).await?;
    Ok(update(
        ConditionStatus::True,
        "Provisioned",
        format!(
            "GatewayClient {namespace}/{remote} dials {remote}'s GatewayServer {server_name} at \
             {}:{} (MTU {mtu})",
            endpoint.addresses.join(","),
            endpoint.port
        ),
    ))
}

/// The provider's GatewayServer for this peering: the one made before, a
/// hand-made one, or a new one.
async fn provider_server(
    api: &Api<GatewayServer>,
    remote: &str,
    tenant: &str,
    local_id: &str,
) -> Result<Result<GatewayServer, ConditionUpdate<'static>>, kube::Error> {
    let mut found = api.list(&ListParams::default()).await?.items;
    if found.len() > 1 {
        let names: Vec<String> = found.iter().map(|s| s.name_any()).collect();
        return Ok(Err(waiting(
            "AmbiguousGateway",
            format!(
                "more than one GatewayServer in {tenant} on {remote} ({}): keep one per peering",
                names.join(", ")
            ),
        )));
    }
    if let Some(server) = found.pop() {
        return Ok(Ok(server));
    }
    let object = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "GatewayServer",
        "metadata": { "name": local_id, "labels": labels(local_id) },
        "spec": { "endpoint": { "port": SERVER_PORT } },
    });
    info!(%remote, namespace = %tenant, name = %local_id, "creating the provider's GatewayServer for the peering");
    let server = api
        .patch(
            local_id,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(object),
        )
        .await?;
    Ok(Ok(server))
}

/// Applies the GatewayClient `<remote>` unless it already says this.
async fn apply_client(
    client: &Client,
    fc: &ForeignCluster,
    namespace: &str,
    endpoint: &PublicEndpoint,
    mtu: i32,
) -> Result<(), kube::Error> {
    let remote = fc.spec.cluster_id.as_str();
    let api: Api<GatewayClient> = Api::namespaced(client.clone(), namespace);
    if let Some(current) = api.get_opt(remote).await? {
        if &current.spec.endpoint == endpoint && current.spec.mtu == mtu {
            return Ok(());
        }
    }
    let owner = fc.controller_owner_ref(&()).map(|mut owner| {
        // Deleting the ForeignCluster waits for the finalizer, not for this.
        owner.controller = Some(false);
        owner.block_owner_deletion = None;
        owner
    });
    let object = json!({
        "apiVersion": "networking.strait.dev/v1beta1",
        "kind": "GatewayClient",
        "metadata": {
            "name": remote,
            "labels": labels(remote),
            "ownerReferences": owner.into_iter().collect::<Vec<_>>(),
        },
        "spec": { "mtu": mtu, "endpoint": endpoint },
    });
    info!(%remote, %namespace, address = ?endpoint.addresses, port = endpoint.port, "applying the peering's GatewayClient");
    api.patch(
        remote,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(object),
    )
    .await?;
    Ok(())
}

async fn delete_key(api: &Api<PublicKey>, name: &str) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::default()).await {
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        other => other.map(|_| ()),
    }
}

/// Removes the GatewayClients made for the peering here, and the PublicKey
/// the key exchange wrote for each.
async fn remove_local(client: &Client, remote: &str) -> Result<(), kube::Error> {
    let api = Api::<GatewayClient>::all(client.clone());
    for gateway in api.list(&made_for(remote)).await? {
        let namespace = gateway.namespace().unwrap_or_default();
        let name = gateway.name_any();
        info!(%remote, %namespace, %name, "removing the peering's GatewayClient");
        match Api::<GatewayClient>::namespaced(client.clone(), &namespace)
            .delete(&name, &DeleteParams::default())
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => {
                other?;
            }
        }
        delete_key(
            &Api::namespaced(client.clone(), &namespace),
            &remote_key_name(&name),
        )
        .await?;
    }
    Ok(())
}

/// Removes the GatewayServer made for the peering on the provider (and the
/// key written there for it). Without a working Identity there is nothing
/// this side can do: the provider removes the tenant namespace, and all in
/// it, when it forgets the peering.
async fn remove_remote(
    client: &Client,
    identity: Option<&Identity>,
    local_id: Option<&str>,
) -> Result<(), kube::Error> {
    let (Some(identity), Some(local_id)) = (identity, local_id) else {
        return Ok(());
    };
    let Ok(provider) = key_exchange::identity_client(client, identity).await? else {
        return Ok(());
    };
    let tenant = identity.spec.namespace.as_str();
    let servers: Api<GatewayServer> = Api::namespaced(provider.clone(), tenant);
    let result = async {
        for server in servers.list(&made_for(local_id)).await? {
            let name = server.name_any();
            info!(namespace = %tenant, %name, "removing the provider's GatewayServer of the peering");
            servers.delete(&name, &DeleteParams::default()).await?;
            delete_key(&Api::namespaced(provider.clone(), tenant), &remote_key_name(&name)).await?;
        }
        Ok(())
    }
    .await;
    match result {
        // Refused or gone: the peering is over on the provider's side.
        Err(kube::Error::Api(status)) if [401, 403, 404].contains(&status.code) => Ok(()),
        other => other,
    }
}

/// Removes both sides' gateways made for the peering, then lets the
/// ForeignCluster go.
pub async fn remove(
    client: &Client,
    fc: &ForeignCluster,
    identity: Option<&Identity>,
    local_id: Option<&str>,
) -> Result<(), kube::Error> {
    let local_id = local_cluster_id(client, local_id).await?;
    remove_remote(client, identity, local_id.as_deref()).await?;
    remove_local(client, &fc.spec.cluster_id).await?;
    set_finalizer(client, fc, false).await
}

/// Holds [`PEERING_GATEWAYS`] before anything is created.
pub async fn hold(client: &Client, fc: &ForeignCluster) -> Result<(), kube::Error> {
    if holds_finalizer(fc) {
        return Ok(());
    }
    set_finalizer(client, fc, true).await
}
