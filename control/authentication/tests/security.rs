//! The provider refuses what it must, each time with a condition that says
//! why; expired certificates stop working and are renewed before they expire.

mod common;

use std::time::Duration;

use common::*;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use strait_api::authentication::{Identity, ResourceSlice, Tenant};
use strait_api::condition::{find_condition, ConditionStatus};
use strait_api::core::{ForeignCluster, ModuleState};
use strait_api::names::tenant_namespace;
use strait_authentication::handshake::{self, control_plane_user, new_client_request, Validity};
use strait_authentication::ClusterIdentity;
use strait_testkit::eventually;

/// B expects `consumer` (its provider.yaml applied), and returns the nonce it published.
async fn expect_consumer(b: &Peer, consumer: &str) -> String {
    apply_yaml(&b.client(), &documented("provider.yaml", consumer, &b.id)).await;
    let secrets: Api<Secret> = Api::namespaced(b.client(), &tenant_namespace(consumer));
    let nonce = || async {
        let secret = secrets.get_opt("strait-nonce").await.ok().flatten()?;
        let bytes = secret.data?.get("nonce")?.clone();
        String::from_utf8(bytes.0).ok()
    };
    eventually(&format!("a nonce for {consumer}"), STEP, || async {
        nonce().await.is_some()
    })
    .await;
    nonce().await.expect("nonce")
}

async fn create_tenant(client: &Client, name: &str, spec: serde_json::Value) {
    let tenant: Tenant =
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("tenant");
    Api::<Tenant>::all(client.clone())
        .create(&PostParams::default(), &tenant)
        .await
        .expect("create tenant");
}

/// Waits until the Tenant is refused with `reason`, then checks that the
/// ForeignCluster says so too and that nothing was issued.
async fn assert_refused(b: &Peer, consumer: &str, reason: &str) {
    let tenants: Api<Tenant> = Api::all(b.client());
    eventually(
        &format!("Tenant {consumer} refused with {reason}"),
        STEP,
        || async {
            tenants
                .get(consumer)
                .await
                .ok()
                .and_then(|t| t.status)
                .is_some_and(|s| {
                    find_condition(&s.conditions, "Verified").is_some_and(|c| {
                        c.status == ConditionStatus::False
                            && c.reason == reason
                            && !c.message.is_empty()
                    })
                })
        },
    )
    .await;
    wait_condition_reason(b, consumer, reason).await;
    let fc = Api::<ForeignCluster>::all(b.client())
        .get(consumer)
        .await
        .expect("fc");
    let module = fc
        .status
        .and_then(|s| s.modules.authentication)
        .expect("module status");
    assert_eq!(module.state, ModuleState::Error);
    let tenant = tenants.get(consumer).await.expect("tenant");
    assert!(
        tenant.status.and_then(|s| s.auth_params).is_none(),
        "nothing issued to a refused Tenant"
    );
    let csrs = Api::<CertificateSigningRequest>::all(b.client())
        .list(&ListParams::default())
        .await
        .expect("csrs");
    assert!(
        csrs.items
            .iter()
            .all(|c| !c.metadata.name.as_deref().unwrap_or("").contains(consumer)),
        "no CSR for {consumer}"
    );
    let bindings = Api::<RoleBinding>::namespaced(b.client(), &tenant_namespace(consumer))
        .list(&ListParams::default())
        .await
        .expect("bindings");
    assert!(bindings.items.is_empty(), "no RBAC for {consumer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_foreign_replayed_and_greedy_tenants_are_refused() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;

    // A forged nonce: signed properly, but not B's nonce.
    expect_consumer(&b, "cluster-x").await;
    let x = ClusterIdentity::generate("cluster-x").expect("key");
    let (_, x_csr) = new_client_request(&control_plane_user("cluster-x")).expect("csr");
    let forged = handshake::sign(
        x.key(),
        &handshake::statement("cluster-b", "cluster-x", "bm90LXRoZS1ub25jZQ=="),
    );
    create_tenant(&b.client(), "cluster-x", json!({"clusterID": "cluster-x", "publicKey": x.public_key, "signature": forged, "csr": x_csr})).await;
    assert_refused(&b, "cluster-x", "SignatureInvalid").await;

    // B's real nonce, signed by another cluster's key than the one in the Tenant.
    let nonce = expect_consumer(&b, "cluster-y").await;
    let y = ClusterIdentity::generate("cluster-y").expect("key");
    let other = ClusterIdentity::generate("cluster-other").expect("key");
    let (_, y_csr) = new_client_request(&control_plane_user("cluster-y")).expect("csr");
    let wrong_key = handshake::sign(
        other.key(),
        &handshake::statement("cluster-b", "cluster-y", &nonce),
    );
    create_tenant(&b.client(), "cluster-y", json!({"clusterID": "cluster-y", "publicKey": y.public_key, "signature": wrong_key, "csr": y_csr})).await;
    assert_refused(&b, "cluster-y", "SignatureInvalid").await;

    // A's genuine Tenant, replayed under another cluster ID B expects.
    peer_a_to_b(&a, &b).await;
    expect_consumer(&b, "cluster-c").await;
    let genuine = Api::<Tenant>::all(b.client())
        .get("cluster-a")
        .await
        .expect("A's tenant");
    let mut replay = serde_json::to_value(&genuine.spec).expect("spec");
    replay["clusterID"] = json!("cluster-c");
    create_tenant(&b.client(), "cluster-c", replay).await;
    assert_refused(&b, "cluster-c", "SignatureInvalid").await;

    // A correctly signed Tenant whose CSR also asks for system:masters.
    let nonce = expect_consumer(&b, "cluster-g").await;
    let g = ClusterIdentity::generate("cluster-g").expect("key");
    let signature = handshake::sign(
        g.key(),
        &handshake::statement("cluster-b", "cluster-g", &nonce),
    );
    let greedy_csr = {
        let key = rcgen_key();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, control_plane_user("cluster-g"));
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "system:masters");
        params
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem")
    };
    create_tenant(&b.client(), "cluster-g", json!({"clusterID": "cluster-g", "publicKey": g.public_key, "signature": signature, "csr": greedy_csr})).await;
    assert_refused(&b, "cluster-g", "CSRInvalid").await;

    // None of this disturbed the genuine peering.
    wait_authenticated(&a, "cluster-b").await;
    let slice = answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    assert_eq!(condition(&slice, "Accepted").0, ConditionStatus::True);
}

fn rcgen_key() -> rcgen::KeyPair {
    rcgen::KeyPair::generate().expect("key")
}

async fn peer_a_to_b(a: &Peer, b: &Peer) {
    apply_yaml(
        &b.client(),
        &documented("provider-bootstrap-rbac.yaml", &a.id, &b.id),
    )
    .await;
    apply_yaml(&b.client(), &documented("provider.yaml", &a.id, &b.id)).await;
    apply_yaml(&a.client(), &consumer_yaml(a, b)).await;
    wait_authenticated(a, &b.id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unexpected_consumer_is_told_why_and_converges_once_expected() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    apply_yaml(
        &b.client(),
        &documented("provider-bootstrap-rbac.yaml", "cluster-a", "cluster-b"),
    )
    .await;
    apply_yaml(&a.client(), &consumer_yaml(&a, &b)).await;
    wait_condition_reason(&a, "cluster-b", "NonceMissing").await;
    let slice = answered_slice_pending(&a).await;
    assert_eq!(slice, "IdentityPending");
    // The provider's admin applies its side: the same objects converge.
    apply_yaml(
        &b.client(),
        &documented("provider.yaml", "cluster-a", "cluster-b"),
    )
    .await;
    wait_authenticated(&a, "cluster-b").await;
    let slice = answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    assert_eq!(condition(&slice, "Accepted").0, ConditionStatus::True);
}

/// The reason of the consumer slice's Accepted condition while the peering is not up.
async fn answered_slice_pending(a: &Peer) -> String {
    let slices: Api<ResourceSlice> = Api::namespaced(a.client(), &tenant_namespace("cluster-b"));
    let mut reason = String::new();
    for _ in 0..100 {
        if let Ok(slice) = slices.get("cluster-b-compute").await {
            if let Some(c) = slice
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Accepted"))
            {
                reason = c.reason.clone();
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    reason
}

async fn current_certificate(a: &Peer) -> String {
    let identity = Api::<Identity>::namespaced(a.client(), &tenant_namespace("cluster-b"))
        .get("cluster-b-control-plane")
        .await
        .expect("identity");
    identity.spec.auth_params.signed_crt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_renewed_before_expiry_and_refused_after_it() {
    let lifetime = Duration::from_secs(10);
    let a = Peer::start("cluster-a").await;
    let b = Peer::start_with("cluster-b", lifetime).await;
    peer_a_to_b(&a, &b).await;
    let first = current_certificate(&a).await;
    let first_validity = Validity::of_pem(&first).expect("validity");
    let first_kubeconfig = secret_kubeconfig(
        &a,
        &tenant_namespace("cluster-b"),
        "cluster-b-control-plane-kubeconfig",
    )
    .await;
    let old = client_from_kubeconfig(&first_kubeconfig).await;
    let own_slices =
        |client: Client| Api::<ResourceSlice>::namespaced(client, &tenant_namespace("cluster-a"));
    own_slices(old.clone())
        .list(&ListParams::default())
        .await
        .expect("the first certificate works");

    // Renewed before it expires.
    eventually("the Identity's certificate is renewed", STEP, || async {
        current_certificate(&a).await != first
    })
    .await;
    let renewed = Validity::of_pem(&current_certificate(&a).await).expect("validity");
    assert!(
        handshake::now() <= first_validity.not_after,
        "renewed only after expiry: {first_validity:?} {renewed:?}"
    );
    assert!(renewed.not_after > first_validity.not_after);

    // Once expired, the old certificate is refused; the current one works.
    let wait = (first_validity.not_after + 2 - handshake::now()).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    let fresh = client_from_kubeconfig(&first_kubeconfig).await;
    assert!(
        own_slices(fresh)
            .list(&ListParams::default())
            .await
            .is_err(),
        "an expired certificate must be refused"
    );
    own_slices(identity_client(&a, "cluster-b").await)
        .list(&ListParams::default())
        .await
        .expect("the renewed identity works");
    wait_authenticated(&a, "cluster-b").await;

    // With the provider's controller gone nothing is reissued: the consumer
    // says the certificate expired.
    b.stop_controller();
    wait_condition_reason(&a, "cluster-b", "CertificateExpired").await;
    let identity = Api::<Identity>::namespaced(a.client(), &tenant_namespace("cluster-b"))
        .get("cluster-b-control-plane")
        .await
        .expect("identity");
    let ready = identity
        .status
        .and_then(|s| find_condition(&s.conditions, "Ready").cloned())
        .expect("Ready");
    assert_eq!(
        (ready.status, ready.reason.as_str()),
        (ConditionStatus::False, "CertificateExpired")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_tenant_is_detected_and_the_peering_converges_again() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    peer_a_to_b(&a, &b).await;
    answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    let old = identity_client(&a, "cluster-b").await;
    let tenants: Api<Tenant> = Api::all(b.client());
    let own =
        |client: Client| Api::<ResourceSlice>::namespaced(client, &tenant_namespace("cluster-a"));
    let old_tenant = tenants.get("cluster-a").await.expect("tenant").metadata.uid;
    let old_slice = own(b.client())
        .get("cluster-b-compute")
        .await
        .expect("slice")
        .metadata
        .uid;

    // The provider's admin revokes the consumer: Tenant deleted, so its CSR,
    // RBAC and slices go.
    tenants
        .delete("cluster-a", &Default::default())
        .await
        .expect("delete tenant");
    // Asked without pause: the consumer handshakes again as soon as it sees
    // the refusal, and the new Tenant's RBAC names the same user, so the
    // refusal lasts only as long as that handshake (a 50 ms poll could miss it).
    let refused = tokio::time::timeout(STEP, async {
        while own(old.clone()).list(&ListParams::default()).await.is_ok() {}
    })
    .await;
    assert!(
        refused.is_ok(),
        "timed out waiting for: the old identity is refused"
    );
    // The consumer notices, handshakes again (B still expects it), and the
    // same objects converge: a new Tenant, RBAC, and the slice again.
    eventually("a new Tenant, ready", STEP, || async {
        tenants
            .get_opt("cluster-a")
            .await
            .ok()
            .flatten()
            .is_some_and(|t| {
                t.metadata.uid != old_tenant
                    && t.status.is_some_and(|s| {
                        strait_api::condition::is_condition_true(&s.conditions, "Ready")
                    })
            })
    })
    .await;
    eventually("the identity works again", STEP, || async {
        own(identity_client(&a, "cluster-b").await)
            .list(&ListParams::default())
            .await
            .is_ok()
    })
    .await;
    eventually(
        "the slice is back on the provider and accepted",
        STEP,
        || async {
            own(b.client())
                .get("cluster-b-compute")
                .await
                .ok()
                .is_some_and(|s| {
                    s.metadata.uid != old_slice
                        && s.status.is_some_and(|s| {
                            find_condition(&s.conditions, "Accepted")
                                .is_some_and(|c| c.status == ConditionStatus::True)
                        })
                })
        },
    )
    .await;
    wait_authenticated(&a, "cluster-b").await;
}
