//! The provider's Tenant controller: verifies a consumer's request (expected
//! consumer, nonce signature, CSR), then issues its control-plane identity
//! through the Kubernetes CSR API and binds it by RBAC to the tenant
//! namespace only. A finalizer removes what it created.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::ByteString;
use kube::api::{DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::{watcher, Controller};
use kube::{Api, Resource as _, ResourceExt as _};
use serde_json::json;
use strait_api::authentication::{ApiServer, AuthParams, ResourceSlice, Tenant};
use strait_api::condition::ConditionStatus::{False, True};
use strait_api::core::ForeignCluster;
use strait_api::names::{finalizer::TENANT, label, tenant_namespace};
use strait_api::rbac;
use strait_api::ConditionUpdate;

use crate::handshake::{self, Validity};
use crate::object_names::{control_plane_csr, CONSUMER_ROLE, NONCE_KEY, NONCE_SECRET};
use crate::{is_status, live, merged_conditions, Context, Error, FIELD_MANAGER, STALE_RETRY};

pub const VERIFIED: &str = "Verified";
pub const READY: &str = "Ready";

pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    Controller::new(
        Api::<Tenant>::all(client.clone()),
        watcher::Config::default(),
    )
    .owns(
        Api::<CertificateSigningRequest>::all(client),
        watcher::Config::default(),
    )
    .run(reconcile, error_policy, ctx)
    .for_each(|result| async move {
        if let Err(error) = result {
            tracing::warn!(%error, "Tenant reconcile failed");
        }
    })
    .await;
}

fn error_policy(_: Arc<Tenant>, error: &Error, _: Arc<Context>) -> Action {
    tracing::debug!(
        error = error.metric_label(),
        "Tenant requeued after an error"
    );
    Action::requeue(Duration::from_secs(1))
}

async fn reconcile(tenant: Arc<Tenant>, ctx: Arc<Context>) -> Result<Action, Error> {
    let api: Api<Tenant> = Api::all(ctx.client.clone());
    let Some(tenant) = live(&api, &tenant).await? else {
        return Ok(Action::requeue(STALE_RETRY));
    };
    finalizer(&api, TENANT, tenant, |event| async {
        match event {
            Event::Apply(tenant) => admit(&tenant, &ctx).await,
            Event::Cleanup(tenant) => cleanup(&tenant, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

/// The outcome of checking a Tenant before anything is issued.
struct Refused {
    reason: &'static str,
    message: String,
    retry: Duration,
}

async fn check(tenant: &Tenant, ctx: &Context) -> Result<Result<(), Refused>, Error> {
    let consumer = &tenant.spec.cluster_id;
    let local = &ctx.identity.cluster_id;
    let refuse = |reason, message: String, retry| {
        Ok(Err(Refused {
            reason,
            message,
            retry,
        }))
    };
    if tenant.name_any() != *consumer {
        return refuse(
            "ClusterIDMismatch",
            format!("a Tenant must be named after its spec.clusterID ({consumer})"),
            Duration::from_secs(60),
        );
    }
    let expected = Api::<ForeignCluster>::all(ctx.client.clone())
        .get_opt(consumer)
        .await?
        .is_some_and(|fc| fc.spec.modules.authentication && fc.meta().deletion_timestamp.is_none());
    if !expected {
        return refuse(
            "NotExpected",
            format!("cluster {local} expects no consumer {consumer}: apply a ForeignCluster named {consumer} with spec.modules.authentication: true on {local}"),
            Duration::from_secs(5),
        );
    }
    let namespace = tenant_namespace(consumer);
    let nonce = Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(NONCE_SECRET)
        .await?
        .and_then(|s| s.data)
        .and_then(|d| d.get(NONCE_KEY).cloned())
        .and_then(|b| String::from_utf8(b.0).ok());
    let Some(nonce) = nonce else {
        return refuse(
            "NonceMissing",
            format!("no nonce for {consumer} yet (Secret {namespace}/{NONCE_SECRET}); it is created from the ForeignCluster {consumer}"),
            Duration::from_secs(2),
        );
    };
    let statement = handshake::statement(local, consumer, &nonce);
    let user = handshake::control_plane_user(consumer);
    let verified = handshake::verify(&tenant.spec.public_key, &statement, &tenant.spec.signature)
        .and_then(|()| handshake::check_client_request(&tenant.spec.csr, &user));
    match verified {
        Ok(()) => Ok(Ok(())),
        Err(refusal) => refuse(
            refusal.reason(),
            refusal.message().to_owned(),
            Duration::from_secs(30),
        ),
    }
}

async fn admit(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let consumer = tenant.spec.cluster_id.clone();
    if let Err(refused) = check(tenant, ctx).await? {
        tracing::info!(tenant = %tenant.name_any(), reason = refused.reason, "Tenant refused");
        write_status(
            tenant,
            ctx,
            None,
            &[
                ConditionUpdate {
                    type_: VERIFIED,
                    status: False,
                    reason: refused.reason,
                    message: refused.message.clone(),
                },
                ConditionUpdate {
                    type_: READY,
                    status: False,
                    reason: refused.reason,
                    message: refused.message,
                },
            ],
        )
        .await?;
        return Ok(Action::requeue(refused.retry));
    }
    let namespace = tenant_namespace(&consumer);
    let user = handshake::control_plane_user(&consumer);
    bind_consumer(ctx, &namespace, &user).await?;
    let owner = tenant.controller_owner_ref(&()).into_iter().collect();
    let labels = BTreeMap::from([(label::REMOTE_CLUSTER_ID.to_owned(), consumer.clone())]);
    let issued = issue_certificate(
        ctx,
        &control_plane_csr(&consumer),
        &tenant.spec.csr,
        labels,
        owner,
    )
    .await?;
    let verified = ConditionUpdate {
        type_: VERIFIED,
        status: True,
        reason: "SignatureVerified",
        message: format!(
            "the nonce is signed by {consumer}'s key and the CSR asks for {user} only"
        ),
    };
    let Some((certificate, validity)) = issued else {
        write_status(
            tenant,
            ctx,
            None,
            &[
                verified,
                ConditionUpdate {
                    type_: READY,
                    status: False,
                    reason: "CertificatePending",
                    message: "waiting for the cluster's signer to issue the client certificate"
                        .into(),
                },
            ],
        )
        .await?;
        return Ok(Action::requeue(Duration::from_millis(200)));
    };
    let auth = AuthParams {
        ca: ctx.config.api_server.ca_pem.clone(),
        signed_crt: certificate,
        api_server: Some(ApiServer {
            address: ctx.config.api_server.address.clone(),
            ..Default::default()
        }),
        proxy_url: None,
    };
    write_status(tenant, ctx, Some(auth), &[verified, ConditionUpdate {
        type_: READY,
        status: True,
        reason: "IdentityIssued",
        message: format!("control-plane identity {user} issued, valid until {}, limited to namespace {namespace}", validity.not_after),
    }])
    .await?;
    let renew_in = (validity.at_fraction(0.5) - handshake::now()).max(1) as u64;
    // Looked at again at least every minute, so RBAC removed by hand comes back.
    Ok(Action::requeue(Duration::from_secs(renew_in.min(60))))
}

async fn write_status(
    tenant: &Tenant,
    ctx: &Context,
    auth: Option<AuthParams>,
    updates: &[ConditionUpdate<'_>],
) -> Result<(), Error> {
    let existing = tenant.status.clone().unwrap_or_default();
    let conditions = merged_conditions(&existing.conditions, updates, tenant.metadata.generation);
    let auth = auth.or_else(|| {
        // A refusal withdraws nothing already issued only while verified.
        updates
            .iter()
            .all(|u| u.status == True || u.reason == "CertificatePending")
            .then_some(existing.auth_params)
            .flatten()
    });
    let status = json!({
        "apiVersion": "authentication.strait.dev/v1beta1",
        "kind": "Tenant",
        "status": {
            "authParams": auth,
            "tenantNamespace": tenant_namespace(&tenant.spec.cluster_id),
            "conditions": conditions,
        }
    });
    Api::<Tenant>::all(ctx.client.clone())
        .patch_status(
            &tenant.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(status),
        )
        .await?;
    Ok(())
}

/// RBAC of a consumer's control-plane identity: ResourceSlices in its tenant
/// namespace (reading their status) and what the other modules ask there
/// (offloading's NamespaceMap, the network module's gateway keys), nothing
/// else anywhere.
async fn bind_consumer(ctx: &Context, namespace: &str, user: &str) -> Result<(), Error> {
    let apply = PatchParams::apply(FIELD_MANAGER).force();
    let mut rules = vec![
        json!({"apiGroups": ["authentication.strait.dev"], "resources": ["resourceslices"],
               "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}),
        json!({"apiGroups": ["authentication.strait.dev"], "resources": ["resourceslices/status"], "verbs": ["get"]}),
    ];
    rules.extend(rbac::policy_rules(rbac::OFFLOADING_IN_TENANT_NAMESPACE));
    rules.extend(rbac::policy_rules(rbac::NETWORK_IN_TENANT_NAMESPACE));
    let role = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": CONSUMER_ROLE, "namespace": namespace, "labels": {label::MANAGED_BY: label::MANAGED_BY_VALUE}},
        "rules": rules,
    });
    Api::<Role>::namespaced(ctx.client.clone(), namespace)
        .patch(CONSUMER_ROLE, &apply, &Patch::Apply(role))
        .await?;
    let binding = json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": CONSUMER_ROLE, "namespace": namespace, "labels": {label::MANAGED_BY: label::MANAGED_BY_VALUE}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": CONSUMER_ROLE},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    });
    Api::<RoleBinding>::namespaced(ctx.client.clone(), namespace)
        .patch(CONSUMER_ROLE, &apply, &Patch::Apply(binding))
        .await?;
    Ok(())
}

/// Issues a client certificate for `request_pem` through the CSR API
/// (create, approve, wait for the signer), renewing it at half its life.
/// Returns the PEM certificate once issued.
pub(crate) async fn issue_certificate(
    ctx: &Context,
    name: &str,
    request_pem: &str,
    labels: BTreeMap<String, String>,
    owners: Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
) -> Result<Option<(String, Validity)>, Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    if let Some(csr) = csrs.get_opt(name).await? {
        let same_request = csr.spec.request.0 == request_pem.as_bytes();
        let certificate = csr
            .status
            .as_ref()
            .and_then(|s| s.certificate.as_ref())
            .and_then(|c| String::from_utf8(c.0.clone()).ok());
        let refused = csr
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| {
                cs.iter()
                    .any(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
            });
        if csr.metadata.deletion_timestamp.is_some() {
            return Ok(None);
        }
        if !same_request || refused {
            csrs.delete(name, &DeleteParams::default()).await?;
            return Ok(None);
        }
        if let Some(certificate) = certificate {
            let validity = Validity::of_pem(&certificate)?;
            if handshake::now() >= validity.at_fraction(0.5) {
                // Reissue: the old certificate stays in use until the new one is out.
                csrs.delete(name, &DeleteParams::default()).await?;
            }
            return Ok(Some((certificate, validity)));
        }
        approve(&csrs, name).await?;
        return Ok(None);
    }
    let lifetime = i32::try_from(ctx.config.identity_lifetime.as_secs()).unwrap_or(i32::MAX);
    let mut all_labels = crate::cluster_identity::managed_labels();
    all_labels.extend(labels);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(all_labels),
            owner_references: Some(owners),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request_pem.as_bytes().to_vec()),
            signer_name: CLIENT_SIGNER.to_owned(),
            expiration_seconds: Some(lifetime),
            usages: Some(vec!["client auth".to_owned()]),
            ..Default::default()
        },
        status: None,
    };
    match csrs.create(&PostParams::default(), &csr).await {
        Ok(_) => approve(&csrs, name).await?,
        Err(e) if is_status(&e, 409) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(None)
}

/// The API server's client-certificate signer.
const CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client";

async fn approve(csrs: &Api<CertificateSigningRequest>, name: &str) -> Result<(), Error> {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let approval = json!({"status": {"conditions": [{
        "type": "Approved",
        "status": "True",
        "reason": "StraitPeeringVerified",
        "message": "approved by strait-authentication after verifying the consumer's signed nonce",
        "lastUpdateTime": now,
    }]}});
    csrs.patch_approval(name, &PatchParams::default(), &Patch::Merge(approval))
        .await?;
    Ok(())
}

/// Everything a Tenant led to: its CSR, RBAC, and the slices its consumer
/// asked for. The tenant namespace itself belongs to the ForeignCluster.
async fn cleanup(tenant: &Tenant, ctx: &Context) -> Result<Action, Error> {
    let consumer = &tenant.spec.cluster_id;
    let namespace = tenant_namespace(consumer);
    tracing::info!(%consumer, "Tenant deleted: revoking its identity and slices");
    // The control plane's and every slice's certificate requests.
    let csrs: Api<CertificateSigningRequest> = Api::all(ctx.client.clone());
    let selector = format!("{}={consumer}", label::REMOTE_CLUSTER_ID);
    for csr in csrs.list(&ListParams::default().labels(&selector)).await? {
        ignore_missing(csrs.delete(&csr.name_any(), &DeleteParams::default()).await)?;
    }
    ignore_missing(
        Api::<RoleBinding>::namespaced(ctx.client.clone(), &namespace)
            .delete(CONSUMER_ROLE, &DeleteParams::default())
            .await,
    )?;
    ignore_missing(
        Api::<Role>::namespaced(ctx.client.clone(), &namespace)
            .delete(CONSUMER_ROLE, &DeleteParams::default())
            .await,
    )?;
    let slices: Api<ResourceSlice> = Api::namespaced(ctx.client.clone(), &namespace);
    for slice in slices.list(&ListParams::default()).await? {
        if slice.spec.consumer_cluster_id == *consumer {
            ignore_missing(
                slices
                    .delete(&slice.name_any(), &DeleteParams::default())
                    .await,
            )?;
        }
    }
    Ok(Action::await_change())
}

pub(crate) fn ignore_missing<T>(result: Result<T, kube::Error>) -> Result<(), Error> {
    match result {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 404) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
