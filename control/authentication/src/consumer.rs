//! The consumer's side of a ForeignCluster: with the credentials the user
//! supplied once (the kubeconfig Secret), read the provider's nonce, sign it,
//! and create this cluster's Tenant there; store the Identity the provider
//! answers with, and from then on reach the provider only through it.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use strait_api::authentication::{AuthParams, Identity, ResourceSlice, Tenant};
use strait_api::condition::{find_condition, is_condition_true, ConditionStatus};
use strait_api::core::ForeignCluster;
use strait_api::names::{label, tenant_namespace, SYSTEM_NAMESPACE};
use strait_api::ConditionUpdate;

use crate::handshake::{self, Validity};
use crate::object_names::{
    control_plane_identity, identity_key_secret, identity_kubeconfig_secret, NONCE_KEY,
    NONCE_SECRET,
};
use crate::tenant::{ignore_missing, READY, VERIFIED};
use crate::{is_status, kubeconfig, merged_conditions, Context, Error, FIELD_MANAGER};

/// Where the peering with a provider stands, for the ForeignCluster's status.
pub struct ConsumerView {
    pub ready: bool,
    pub reason: String,
    pub message: String,
    /// When to look again.
    pub retry: Duration,
}

impl ConsumerView {
    fn waiting(reason: &str, message: String) -> Self {
        Self {
            ready: false,
            reason: reason.to_owned(),
            message,
            retry: Duration::from_millis(250),
        }
    }

    fn ready(reason: &str, message: String, retry: Duration) -> Self {
        Self {
            ready: true,
            reason: reason.to_owned(),
            message,
            retry,
        }
    }
}

/// Set on a Tenant by a consumer whose identity the provider refuses.
const HANDSHAKE_REQUESTED: &str = "authentication.strait.dev/handshake-requested";

/// A renewed certificate is fetched once two thirds of the current one's life have passed.
const RENEW_AT: f64 = 2.0 / 3.0;

/// One step of the handshake with a provider.
pub async fn peer(fc: &ForeignCluster, ctx: &Context) -> Result<ConsumerView, Error> {
    let provider = fc.spec.cluster_id.as_str();
    let namespace = tenant_namespace(provider);
    let name = control_plane_identity(provider);
    let identities: Api<Identity> = Api::namespaced(ctx.client.clone(), &namespace);
    let current = identities.get_opt(&name).await?;
    let validity = current
        .as_ref()
        .and_then(|i| Validity::of_pem(&i.spec.auth_params.signed_crt).ok());
    let now = handshake::now();
    let mut rejected = None;
    if let (Some(identity), Some(validity)) = (&current, validity) {
        if now < validity.at_fraction(RENEW_AT) {
            match usable(ctx, identity).await {
                Ok(()) => {
                    let until_renewal = (validity.at_fraction(RENEW_AT) - now).max(1) as u64;
                    return Ok(ConsumerView::ready(
                        "IdentityReady",
                        format!(
                            "control-plane Identity {namespace}/{name} works against {provider}"
                        ),
                        ctx.config
                            .identity_check_interval
                            .min(Duration::from_secs(until_renewal)),
                    ));
                }
                Err(why) => {
                    tracing::info!(%provider, %why, "the provider no longer accepts our identity: handshake again");
                    rejected = Some(why);
                }
            }
        }
    }
    let outcome = handshake(fc, ctx, rejected.is_some()).await?;
    let expired = validity.is_some_and(|v| now >= v.not_after);
    let current_certificate = current
        .as_ref()
        .map(|i| i.spec.auth_params.signed_crt.as_str());
    match outcome {
        Outcome::Issued(auth, remote_namespace) if Some(auth.signed_crt.as_str()) != current_certificate => {
            store_identity(ctx, &IdentityKind::control_plane(ctx, provider), auth, &remote_namespace).await?;
            Ok(ConsumerView::ready(
                "IdentityReady",
                format!("{provider} issued the control-plane Identity {namespace}/{name}"),
                Duration::from_secs(1),
            ))
        }
        Outcome::Issued(..) if expired => {
            let message = format!("the certificate of {namespace}/{name} expired and {provider} has not reissued it yet");
            set_identity_condition(ctx, &namespace, &name, ConditionStatus::False, "CertificateExpired", &message).await?;
            Ok(ConsumerView::waiting("CertificateExpired", message))
        }
        Outcome::Issued(..) => match rejected {
            Some(why) => Ok(ConsumerView::waiting(
                "IdentityRejected",
                format!("{provider} refuses the control-plane Identity ({why}) and has issued no other yet"),
            )),
            None => Ok(ConsumerView::ready(
                "RenewalPending",
                format!("the Identity works; waiting for {provider} to reissue its certificate"),
                Duration::from_secs(1),
            )),
        },
        Outcome::NotIssued { reason, message } if expired => {
            let message = format!("the certificate of {namespace}/{name} expired and cannot be renewed: {reason}: {message}");
            set_identity_condition(ctx, &namespace, &name, ConditionStatus::False, "CertificateExpired", &message).await?;
            Ok(ConsumerView::waiting("CertificateExpired", message))
        }
        Outcome::NotIssued { reason, message } => Ok(ConsumerView::waiting(&reason, message)),
    }
}

enum Outcome {
    /// The provider's current answer to our Tenant.
    Issued(AuthParams, String),
    NotIssued {
        reason: String,
        message: String,
    },
}

fn not_issued(reason: &str, message: String) -> Outcome {
    Outcome::NotIssued {
        reason: reason.to_owned(),
        message,
    }
}

/// Why a call to the provider failed, as a condition reason.
fn remote_failure(provider: &str, error: &kube::Error, what: &str) -> Outcome {
    match error {
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => not_issued(
            "BootstrapForbidden",
            format!(
                "the kubeconfig Secret's credentials may not {what} on {provider}: {}",
                status.message
            ),
        ),
        kube::Error::Api(status) => not_issued(
            "TenantRejected",
            format!("{provider} refused to {what}: {}", status.message),
        ),
        other => not_issued(
            "ProviderUnreachable",
            format!("cannot reach {provider}'s API server to {what}: {other}"),
        ),
    }
}

/// Reads the nonce, signs it and applies this cluster's Tenant on the
/// provider with the user's bootstrap credentials; returns its answer.
async fn handshake(fc: &ForeignCluster, ctx: &Context, nudge: bool) -> Result<Outcome, Error> {
    let provider = fc.spec.cluster_id.as_str();
    let local = ctx.identity.cluster_id.as_str();
    let Some(secret_ref) = &fc.spec.kubeconfig_secret_ref else {
        return Ok(not_issued(
            "KubeconfigSecretMissing",
            "spec.kubeconfigSecretRef is not set".into(),
        ));
    };
    let secret_namespace = secret_ref.namespace.as_deref().unwrap_or(SYSTEM_NAMESPACE);
    let Some(yaml) =
        kubeconfig::from_secret(&ctx.client, secret_namespace, &secret_ref.name).await?
    else {
        return Ok(not_issued(
            "KubeconfigSecretMissing",
            format!("create Secret {secret_namespace}/{} with key `kubeconfig`: credentials for {provider} that may read the nonce and create the Tenant", secret_ref.name),
        ));
    };
    let remote = match kubeconfig::client(&yaml).await {
        Ok(remote) => remote,
        Err(e) => {
            return Ok(not_issued(
                "KubeconfigInvalid",
                format!("Secret {secret_namespace}/{}: {e}", secret_ref.name),
            ))
        }
    };
    let nonce_namespace = tenant_namespace(local);
    let nonce = match Api::<Secret>::namespaced(remote.clone(), &nonce_namespace)
        .get(NONCE_SECRET)
        .await
    {
        Ok(secret) => secret
            .data
            .and_then(|d| d.get(NONCE_KEY).cloned())
            .and_then(|b| String::from_utf8(b.0).ok()),
        Err(e) if is_status(&e, 404) => None,
        Err(e) => return Ok(remote_failure(provider, &e, "read the nonce")),
    };
    let Some(nonce) = nonce else {
        return Ok(not_issued(
            "NonceMissing",
            format!("{provider} publishes no nonce for {local} (Secret {nonce_namespace}/{NONCE_SECRET}): apply a ForeignCluster named {local} with spec.modules.authentication: true on {provider}"),
        ));
    };
    let (_, csr) = client_key(ctx, &IdentityKind::control_plane(ctx, provider)).await?;
    let signature = handshake::sign(
        ctx.identity.key(),
        &handshake::statement(provider, local, &nonce),
    );
    let mut tenant = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "Tenant",
        "metadata": {"name": local, "labels": {label::MANAGED_BY: label::MANAGED_BY_VALUE}},
        "spec": {
            "clusterID": local,
            "publicKey": ctx.identity.public_key,
            "signature": signature,
            "csr": csr,
        },
    });
    if nudge {
        // The provider refuses an identity it issued: asking again with an
        // unchanged Tenant would not wake its controller, this annotation does.
        tenant["metadata"]["annotations"] =
            json!({HANDSHAKE_REQUESTED: k8s_openapi::jiff::Timestamp::now().to_string()});
    }
    let applied = Api::<Tenant>::all(remote)
        .patch(
            local,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(tenant),
        )
        .await;
    let tenant = match applied {
        Ok(tenant) => tenant,
        Err(e) => return Ok(remote_failure(provider, &e, "create the Tenant")),
    };
    let status = tenant.status.clone().unwrap_or_default();
    let current = |type_| {
        find_condition(&status.conditions, type_)
            .filter(|c| c.observed_generation == tenant.metadata.generation)
    };
    if let Some(refused) = current(VERIFIED).filter(|c| c.status == ConditionStatus::False) {
        return Ok(not_issued(
            &refused.reason,
            format!("{provider} refused the Tenant: {}", refused.message),
        ));
    }
    match (current(READY), status.auth_params, status.tenant_namespace) {
        (Some(ready), Some(auth), Some(namespace))
            if ready.status == ConditionStatus::True && !auth.signed_crt.is_empty() =>
        {
            Ok(Outcome::Issued(auth, namespace))
        }
        _ => Ok(not_issued(
            "TenantPending",
            format!("waiting for {provider} to verify the Tenant and issue the Identity"),
        )),
    }
}

/// What an Identity this cluster holds is for.
pub(crate) struct IdentityKind<'a> {
    pub provider: &'a str,
    /// The Identity's name in the provider's tenant namespace here.
    pub name: String,
    /// The user its certificate names.
    pub user: String,
    pub type_: &'a str,
}

impl<'a> IdentityKind<'a> {
    fn control_plane(ctx: &Context, provider: &'a str) -> Self {
        Self {
            provider,
            name: control_plane_identity(provider),
            user: handshake::control_plane_user(&ctx.identity.cluster_id),
            type_: "ControlPlane",
        }
    }
}

/// This cluster's client key and CSR for an Identity, made once and kept
/// in a Secret next to it.
pub(crate) async fn client_key(
    ctx: &Context,
    kind: &IdentityKind<'_>,
) -> Result<(String, String), Error> {
    let provider = kind.provider;
    let namespace = tenant_namespace(provider);
    let name = identity_key_secret(&kind.name);
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    let text = |secret: &Secret, key: &str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    if let Some(secret) = secrets.get_opt(&name).await? {
        if let (Some(key), Some(csr)) = (text(&secret, "key"), text(&secret, "csr")) {
            return Ok((key, csr));
        }
    }
    let (key, csr) = handshake::new_client_request(&kind.user)?;
    apply_secret(
        &ctx.client,
        &namespace,
        &name,
        provider,
        &[("key", &key), ("csr", &csr)],
    )
    .await?;
    Ok((key, csr))
}

async fn apply_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    provider: &str,
    entries: &[(&str, &str)],
) -> Result<(), Error> {
    let encode = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    let data: BTreeMap<&str, String> = entries.iter().map(|(k, v)| (*k, encode(v))).collect();
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": {
            label::MANAGED_BY: label::MANAGED_BY_VALUE,
            label::REMOTE_CLUSTER_ID: provider,
        }},
        "type": "Opaque",
        "data": data,
    });
    Api::<Secret>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(secret),
        )
        .await?;
    Ok(())
}

/// Writes the Identity the provider issued and the kubeconfig made from it.
pub(crate) async fn store_identity(
    ctx: &Context,
    kind: &IdentityKind<'_>,
    auth: AuthParams,
    remote_namespace: &str,
) -> Result<(), Error> {
    let provider = kind.provider;
    let namespace = tenant_namespace(provider);
    let name = kind.name.clone();
    let (key, _) = client_key(ctx, kind).await?;
    let server = auth
        .api_server
        .as_ref()
        .map(|a| a.address.clone())
        .unwrap_or_default();
    let yaml = kubeconfig::render(
        provider,
        &server,
        &auth.ca,
        &auth.signed_crt,
        &key,
        remote_namespace,
    )?;
    let kubeconfig_name = identity_kubeconfig_secret(&name);
    apply_secret(
        &ctx.client,
        &namespace,
        &kubeconfig_name,
        provider,
        &[(kubeconfig::KUBECONFIG_KEY, &yaml)],
    )
    .await?;
    let validity = Validity::of_pem(&auth.signed_crt)?;
    let identity = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "Identity",
        "metadata": {"name": name, "namespace": namespace, "labels": {
            label::MANAGED_BY: label::MANAGED_BY_VALUE,
            label::REMOTE_CLUSTER_ID: provider,
        }},
        "spec": {
            "clusterID": provider,
            "type": kind.type_,
            "authParams": auth,
            "namespace": remote_namespace,
        },
    });
    let identities: Api<Identity> = Api::namespaced(ctx.client.clone(), &namespace);
    identities
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(identity),
        )
        .await?;
    set_identity_condition(
        ctx,
        &namespace,
        &name,
        ConditionStatus::True,
        "CertificateValid",
        &format!("kubeconfig in Secret {kubeconfig_name}; certificate valid until {} (unix), renewed before", validity.not_after),
    )
    .await
}

async fn set_identity_condition(
    ctx: &Context,
    namespace: &str,
    name: &str,
    status: ConditionStatus,
    reason: &str,
    message: &str,
) -> Result<(), Error> {
    let identities: Api<Identity> = Api::namespaced(ctx.client.clone(), namespace);
    let Some(identity) = identities.get_opt(name).await? else {
        return Ok(());
    };
    let existing = identity.status.clone().unwrap_or_default();
    let conditions = merged_conditions(
        &existing.conditions,
        &[ConditionUpdate {
            type_: "Ready",
            status,
            reason,
            message: message.to_owned(),
        }],
        identity.metadata.generation,
    );
    let patch = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "Identity",
        "status": {
            "kubeconfigSecretRef": {"name": identity_kubeconfig_secret(name), "namespace": namespace},
            "conditions": conditions,
        },
    });
    identities
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
    Ok(())
}

/// A client for the provider acting as an Identity (its kubeconfig Secret).
pub async fn identity_client(ctx: &Context, identity: &Identity) -> Result<Option<Client>, Error> {
    let namespace = identity.namespace().unwrap_or_default();
    let secret = identity_kubeconfig_secret(&identity.name_any());
    match kubeconfig::from_secret(&ctx.client, &namespace, &secret).await? {
        Some(yaml) => Ok(Some(kubeconfig::client(&yaml).await?)),
        None => Ok(None),
    }
}

/// Whether the provider still accepts the Identity.
async fn usable(ctx: &Context, identity: &Identity) -> Result<(), String> {
    let client = identity_client(ctx, identity)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("its kubeconfig Secret is missing")?;
    Api::<ResourceSlice>::namespaced(client, &identity.spec.namespace)
        .list(&ListParams::default().limit(1))
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Whether this cluster holds a ready control-plane Identity for `provider`.
pub async fn identity_ready(ctx: &Context, provider: &str) -> Result<Option<Identity>, Error> {
    let identity = Api::<Identity>::namespaced(ctx.client.clone(), &tenant_namespace(provider))
        .get_opt(&control_plane_identity(provider))
        .await?;
    Ok(identity.filter(|i| {
        i.status
            .as_ref()
            .is_some_and(|s| is_condition_true(&s.conditions, "Ready"))
    }))
}

/// Tears the consumer's side down: our slices on the provider (through the
/// Identity), our Tenant there (with the bootstrap credentials), and the
/// local tenant namespace with the Identity and its Secrets. Calls to the
/// provider are best effort: an unreachable provider does not block the
/// teardown here (its own ForeignCluster deletion cleans its side).
pub async fn unpeer(fc: &ForeignCluster, ctx: &Context) -> Result<(), Error> {
    let provider = fc.spec.cluster_id.as_str();
    let local = ctx.identity.cluster_id.as_str();
    let namespace = tenant_namespace(provider);
    if let Some(identity) = Api::<Identity>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&control_plane_identity(provider))
        .await?
    {
        if let Ok(Some(remote)) = identity_client(ctx, &identity).await {
            let slices: Api<ResourceSlice> = Api::namespaced(remote, &identity.spec.namespace);
            match slices.list(&ListParams::default()).await {
                Ok(list) => {
                    for slice in list
                        .items
                        .iter()
                        .filter(|s| s.spec.consumer_cluster_id == local)
                    {
                        if let Err(error) = ignore_missing(
                            slices
                                .delete(&slice.name_any(), &DeleteParams::default())
                                .await,
                        ) {
                            tracing::warn!(%provider, %error, "could not delete a slice on the provider");
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(%provider, %error, "could not list our slices on the provider")
                }
            }
        }
    }
    if let Some(secret_ref) = &fc.spec.kubeconfig_secret_ref {
        let secret_namespace = secret_ref.namespace.as_deref().unwrap_or(SYSTEM_NAMESPACE);
        if let Ok(Some(yaml)) =
            kubeconfig::from_secret(&ctx.client, secret_namespace, &secret_ref.name).await
        {
            match kubeconfig::client(&yaml).await {
                Ok(remote) => {
                    if let Err(error) = ignore_missing(
                        Api::<Tenant>::all(remote)
                            .delete(local, &DeleteParams::default())
                            .await,
                    ) {
                        tracing::warn!(%provider, %error, "could not delete our Tenant on the provider");
                    }
                }
                Err(error) => tracing::warn!(%provider, %error, "bootstrap kubeconfig unusable"),
            }
        }
    }
    ignore_missing(
        Api::<Namespace>::all(ctx.client.clone())
            .delete(&namespace, &DeleteParams::default())
            .await,
    )
}
