//! Declarative peering against TLS + RBAC test control planes: the
//! documented YAML (control/authentication/peering/) applied as
//! `kubectl apply` would, to a ResourceSlice answered and an Identity that
//! works, is limited by RBAC, and is gone after unpeering.

mod common;

use std::collections::BTreeSet;

use common::*;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt as _};
use serde_json::json;
use strait_api::authentication::{Identity, ResourceSlice, Tenant};
use strait_api::condition::ConditionStatus;
use strait_api::core::ForeignCluster;
use strait_api::names::tenant_namespace;
use strait_testkit::eventually;

/// Everything peering-related still in a cluster, by kind and name.
async fn leftovers(client: &Client) -> BTreeSet<String> {
    let mut left = BTreeSet::new();
    let lp = ListParams::default();
    for ns in Api::<Namespace>::all(client.clone())
        .list(&lp)
        .await
        .expect("namespaces")
    {
        if ns.name_any().starts_with("strait-tenant-") {
            left.insert(format!("Namespace/{}", ns.name_any()));
        }
    }
    for fc in Api::<ForeignCluster>::all(client.clone())
        .list(&lp)
        .await
        .expect("fcs")
    {
        left.insert(format!("ForeignCluster/{}", fc.name_any()));
    }
    for t in Api::<Tenant>::all(client.clone())
        .list(&lp)
        .await
        .expect("tenants")
    {
        left.insert(format!("Tenant/{}", t.name_any()));
    }
    for i in Api::<Identity>::all(client.clone())
        .list(&lp)
        .await
        .expect("identities")
    {
        left.insert(format!("Identity/{}", i.name_any()));
    }
    for s in Api::<ResourceSlice>::all(client.clone())
        .list(&lp)
        .await
        .expect("slices")
    {
        left.insert(format!("ResourceSlice/{}", s.name_any()));
    }
    for c in Api::<CertificateSigningRequest>::all(client.clone())
        .list(&lp)
        .await
        .expect("csrs")
    {
        left.insert(format!("CertificateSigningRequest/{}", c.name_any()));
    }
    for r in Api::<Role>::all(client.clone())
        .list(&lp)
        .await
        .expect("roles")
    {
        left.insert(format!("Role/{}", r.name_any()));
    }
    for b in Api::<RoleBinding>::all(client.clone())
        .list(&lp)
        .await
        .expect("bindings")
    {
        left.insert(format!("RoleBinding/{}", b.name_any()));
    }
    for s in Api::<Secret>::all(client.clone())
        .list(&lp)
        .await
        .expect("secrets")
    {
        if s.name_any() != "strait-cluster-key" {
            left.insert(format!(
                "Secret/{}/{}",
                s.namespace().unwrap_or_default(),
                s.name_any()
            ));
        }
    }
    left
}

async fn wait_nothing_left(peer: &Peer) {
    let client = peer.client();
    let mut last = BTreeSet::new();
    let cleared = tokio::time::timeout(STEP, async {
        loop {
            last = leftovers(&client).await;
            if last.is_empty() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        cleared.is_ok(),
        "{} still holds after unpeering: {last:?}",
        peer.id
    );
}

fn forbidden<T: std::fmt::Debug>(result: Result<T, kube::Error>, what: &str) {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => {}
        other => panic!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yaml_peering_to_an_accepted_slice_a_confined_identity_and_a_clean_unpeer() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    peer(&a, &b).await;

    wait_authenticated(&a, "cluster-b").await;
    wait_authenticated(&b, "cluster-a").await;
    let slice = answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    assert_eq!(
        condition(&slice, "Accepted"),
        (ConditionStatus::True, "Granted".to_owned())
    );
    let granted = slice.status.as_ref().expect("status").resources.clone();
    assert_eq!(
        granted.get("cpu").map(|q| q.0.as_str()),
        Some("2"),
        "{granted:?}"
    );
    assert_eq!(
        granted.get("memory").map(|q| q.0.as_str()),
        Some("4294967296"),
        "{granted:?}"
    );
    let roles = |fc: ForeignCluster| fc.status.map(|s| s.role);
    let fc_a = Api::<ForeignCluster>::all(a.client())
        .get("cluster-b")
        .await
        .expect("fc");
    assert_eq!(roles(fc_a), Some(strait_api::core::PeeringRole::Provider));
    let fc_b = Api::<ForeignCluster>::all(b.client())
        .get("cluster-a")
        .await
        .expect("fc");
    assert_eq!(roles(fc_b), Some(strait_api::core::PeeringRole::Consumer));

    // The Identity works against B, for its tenant namespace only.
    let identity = identity_client(&a, "cluster-b").await;
    let own: Api<ResourceSlice> = Api::namespaced(identity.clone(), &tenant_namespace("cluster-a"));
    let mirrored = own
        .get("cluster-b-compute")
        .await
        .expect("the identity reads its tenant's slices");
    assert_eq!(mirrored.spec.consumer_cluster_id, "cluster-a");
    let other_ns = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("strait-tenant-cluster-z".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(b.client())
        .create(&PostParams::default(), &other_ns)
        .await
        .expect("namespace");
    forbidden(
        Api::<ResourceSlice>::namespaced(identity.clone(), "strait-tenant-cluster-z")
            .list(&ListParams::default())
            .await,
        "another tenant's slices",
    );
    forbidden(
        Api::<Secret>::namespaced(identity.clone(), "strait-tenant-cluster-z")
            .list(&ListParams::default())
            .await,
        "another tenant's secrets",
    );
    forbidden(
        Api::<Secret>::namespaced(identity.clone(), &tenant_namespace("cluster-a"))
            .get("strait-nonce")
            .await,
        "its own nonce",
    );
    forbidden(
        Api::<Node>::all(identity.clone())
            .list(&ListParams::default())
            .await,
        "nodes",
    );
    forbidden(
        Api::<Tenant>::all(identity.clone())
            .list(&ListParams::default())
            .await,
        "tenants",
    );
    forbidden(
        Api::<Namespace>::all(identity.clone())
            .list(&ListParams::default())
            .await,
        "namespaces",
    );
    forbidden(
        Api::<ResourceSlice>::all(identity.clone())
            .list(&ListParams::default())
            .await,
        "slices cluster-wide",
    );
    Api::<Namespace>::all(b.client())
        .delete("strait-tenant-cluster-z", &Default::default())
        .await
        .expect("delete");

    // Unpeer: nothing left on either side; then peer again.
    unpeer(&a, &b).await;
    wait_nothing_left(&a).await;
    wait_nothing_left(&b).await;
    peer(&a, &b).await;
    wait_authenticated(&a, "cluster-b").await;
    let again = answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    assert_eq!(condition(&again, "Accepted").0, ConditionStatus::True);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_peer_both_ways_at_once() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    // Each is the other's consumer: a consumer's ForeignCluster also
    // expects the remote cluster, so only the bootstrap RBAC is added.
    apply_yaml(
        &b.client(),
        &documented("provider-bootstrap-rbac.yaml", "cluster-a", "cluster-b"),
    )
    .await;
    apply_yaml(
        &a.client(),
        &documented("provider-bootstrap-rbac.yaml", "cluster-b", "cluster-a"),
    )
    .await;
    let (ab, ba) = (consumer_yaml(&a, &b), consumer_yaml(&b, &a));
    let (client_a, client_b) = (a.client(), b.client());
    tokio::join!(apply_yaml(&client_a, &ab), apply_yaml(&client_b, &ba));
    wait_authenticated(&a, "cluster-b").await;
    wait_authenticated(&b, "cluster-a").await;
    let (from_b, from_a) = tokio::join!(
        answered_slice(&a, "cluster-b", "cluster-b-compute"),
        answered_slice(&b, "cluster-a", "cluster-a-compute"),
    );
    assert_eq!(condition(&from_b, "Accepted").0, ConditionStatus::True);
    assert_eq!(condition(&from_a, "Accepted").0, ConditionStatus::True);
    for peer in [&a, &b] {
        let remote = if peer.id == "cluster-a" {
            "cluster-b"
        } else {
            "cluster-a"
        };
        eventually(
            &format!("{} sees {remote} as consumer and provider", peer.id),
            STEP,
            || async {
                Api::<ForeignCluster>::all(peer.client())
                    .get(remote)
                    .await
                    .ok()
                    .and_then(|fc| fc.status)
                    .is_some_and(|s| s.role == strait_api::core::PeeringRole::ConsumerAndProvider)
            },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_consumer_two_providers() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    let c = Peer::start("cluster-c").await;
    tokio::join!(peer(&a, &b), peer(&a, &c));
    let (from_b, from_c) = tokio::join!(
        answered_slice(&a, "cluster-b", "cluster-b-compute"),
        answered_slice(&a, "cluster-c", "cluster-c-compute"),
    );
    assert_eq!(condition(&from_b, "Accepted").0, ConditionStatus::True);
    assert_eq!(condition(&from_c, "Accepted").0, ConditionStatus::True);
    // Each Identity reaches its own provider only: B's certificate means nothing to C.
    let to_b = identity_client(&a, "cluster-b").await;
    Api::<ResourceSlice>::namespaced(to_b, &tenant_namespace("cluster-a"))
        .get("cluster-b-compute")
        .await
        .expect("B answers");
    let to_c = identity_client(&a, "cluster-c").await;
    assert!(
        Api::<ResourceSlice>::namespaced(to_c, &tenant_namespace("cluster-a"))
            .get("cluster-b-compute")
            .await
            .is_err(),
        "C has no slice of B"
    );
    // Unpeering from B leaves the peering with C working.
    unpeer(&a, &b).await;
    wait_nothing_left(&b).await;
    let still = answered_slice(&a, "cluster-c", "cluster-c-compute").await;
    assert_eq!(condition(&still, "Accepted").0, ConditionStatus::True);
    wait_authenticated(&a, "cluster-c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slices_get_a_share_of_free_capacity_and_resizes_are_regranted() {
    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    // B: 8 CPUs on its Node, 2 requested by a running Pod → 6 free, half of it shareable.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "busy", "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "2", "memory": "2Gi"}}}]},
        "status": {"phase": "Running"},
    }))
    .expect("pod");
    Api::<Pod>::namespaced(b.client(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    peer(&a, &b).await;
    let slices: Api<ResourceSlice> = Api::namespaced(a.client(), &tenant_namespace("cluster-b"));
    let resize = |resources: serde_json::Value| {
        let slices = slices.clone();
        async move {
            let patch = json!({"spec": {"resources": resources}});
            slices
                .patch(
                    "cluster-b-compute",
                    &PatchParams::default(),
                    &Patch::Merge(patch),
                )
                .await
                .expect("resize");
        }
    };
    resize(json!({"cpu": "5", "memory": null, "pods": null})).await;
    let big = answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    let status = big.status.clone().expect("status");
    assert_eq!(
        condition(&big, "Accepted"),
        (ConditionStatus::True, "PartiallyGranted".to_owned())
    );
    assert_eq!(
        status.resources.get("cpu").map(|q| q.0.as_str()),
        Some("3"),
        "{:?}",
        status.resources
    );
    resize(json!({"cpu": "1500m"})).await;
    let small = answered_slice(&a, "cluster-b", "cluster-b-compute").await;
    let small_granted = small.status.clone().expect("status").resources;
    assert_eq!(
        condition(&small, "Accepted"),
        (ConditionStatus::True, "Granted".to_owned())
    );
    assert_eq!(
        small_granted.get("cpu").map(|q| q.0.as_str()),
        Some("1500m")
    );
    // Something B does not have at all is refused, with a reason.
    let gpu: ResourceSlice = serde_json::from_value(json!({
        "metadata": {"name": "cluster-b-gpu", "namespace": tenant_namespace("cluster-b")},
        "spec": {"consumerClusterID": "cluster-a", "providerClusterID": "cluster-b", "class": "gpu", "resources": {"nvidia.com/gpu": "1"}},
    }))
    .expect("slice");
    slices
        .create(&PostParams::default(), &gpu)
        .await
        .expect("gpu slice");
    let refused = answered_slice(&a, "cluster-b", "cluster-b-gpu").await;
    assert_eq!(
        condition(&refused, "Accepted"),
        (ConditionStatus::False, "NoCapacity".to_owned())
    );
    assert_eq!(
        condition(&refused, "Resources"),
        (ConditionStatus::False, "Denied".to_owned())
    );
    assert_eq!(
        condition(&refused, "Authentication").0,
        ConditionStatus::False
    );

    // The accepted slice has an identity of its own, for itself only.
    eventually("the slice's identity is issued", STEP, || async {
        slices
            .get("cluster-b-compute")
            .await
            .ok()
            .and_then(|s| s.status)
            .is_some_and(|s| {
                strait_api::condition::is_condition_true(&s.conditions, "Authentication")
            })
    })
    .await;
    let slice_identities: Api<Identity> =
        Api::namespaced(a.client(), &tenant_namespace("cluster-b"));
    eventually("the slice Identity is stored", STEP, || async {
        slice_identities
            .get_opt("cluster-b-compute-slice")
            .await
            .ok()
            .flatten()
            .and_then(|i| i.status)
            .is_some()
    })
    .await;
    let identity = slice_identities
        .get("cluster-b-compute-slice")
        .await
        .expect("slice identity");
    assert_eq!(
        identity.spec.type_,
        strait_api::authentication::IdentityType::ResourceSlice
    );
    let secret = identity
        .status
        .and_then(|s| s.kubeconfig_secret_ref)
        .expect("kubeconfig ref");
    let kubelet = client_from_kubeconfig(
        &secret_kubeconfig(&a, &tenant_namespace("cluster-b"), &secret.name).await,
    )
    .await;
    let on_b: Api<ResourceSlice> = Api::namespaced(kubelet.clone(), &tenant_namespace("cluster-a"));
    on_b.get("cluster-b-compute")
        .await
        .expect("the slice identity reads its slice");
    forbidden(on_b.get("cluster-b-gpu").await, "another slice");
    forbidden(on_b.list(&ListParams::default()).await, "listing slices");
    forbidden(
        Api::<Secret>::namespaced(kubelet, &tenant_namespace("cluster-a"))
            .list(&ListParams::default())
            .await,
        "secrets",
    );
    // Deleting the slice revokes its identity on both sides.
    slices
        .delete("cluster-b-compute", &Default::default())
        .await
        .expect("delete slice");
    eventually("the slice identity is gone on both sides", STEP, || async {
        let local = slice_identities
            .get_opt("cluster-b-compute-slice")
            .await
            .ok()
            .flatten()
            .is_none();
        let csr = Api::<CertificateSigningRequest>::all(b.client())
            .get_opt("strait-cluster-a-slice-cluster-b-compute")
            .await
            .ok()
            .flatten()
            .is_none();
        let role = Api::<Role>::namespaced(b.client(), &tenant_namespace("cluster-a"))
            .get_opt("strait-slice-cluster-b-compute")
            .await
            .ok()
            .flatten()
            .is_none();
        local && csr && role
    })
    .await;
}

#[test]
fn the_readme_shows_the_yaml_the_tests_apply() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{dir}/README.md")).expect("README.md");
    for file in [
        "provider.yaml",
        "provider-bootstrap-rbac.yaml",
        "consumer.yaml",
    ] {
        let yaml = std::fs::read_to_string(format!("{dir}/peering/{file}")).expect("yaml");
        assert!(
            readme.contains(yaml.trim_end()),
            "README.md does not show peering/{file} as it is"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_made_identity_shows_up_as_a_foreign_cluster() {
    let a = Peer::start("cluster-a").await;
    let namespace = Namespace {
        metadata: kube::api::ObjectMeta {
            name: Some("offload-q".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(a.client())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("namespace");
    let identity: Identity = serde_json::from_value(json!({
        "metadata": {"name": "q", "namespace": "offload-q", "labels": {"strait.dev/remote-cluster-id": "cluster-q"}},
        "spec": {"clusterID": "cluster-q", "type": "ControlPlane", "namespace": "strait-tenant-cluster-a",
                 "authParams": {"signedCRT": "written by hand"}},
    }))
    .expect("identity");
    Api::<Identity>::namespaced(a.client(), "offload-q")
        .create(&PostParams::default(), &identity)
        .await
        .expect("identity");
    let fcs: Api<ForeignCluster> = Api::all(a.client());
    eventually("ForeignCluster cluster-q", STEP, || async {
        fcs.get_opt("cluster-q").await.ok().flatten().is_some()
    })
    .await;
    let fc = fcs.get("cluster-q").await.expect("fc");
    assert_eq!(fc.spec.cluster_id, "cluster-q");
    assert!(
        !fc.spec.modules.authentication,
        "discovery selects no module"
    );
}

/// Offloading through the Identity this module issues, with no Role made by
/// hand: cluster-a's NamespaceOffloading gets its namespace on cluster-b
/// (the NamespaceMap in the tenant namespace is applied and read through
/// the Identity), and the Identity may then run ShadowPods there. Only the
/// namespace part of offloading runs here (no virtual kubelet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_issued_identity_is_all_offloading_needs_on_the_provider() {
    use std::sync::Arc;
    use strait_api::offloading::{NamespaceOffloading, OffloadingPhase, ShadowPod, VirtualNode};
    use strait_offloading::{namespace_map_controller, namespace_offloading_controller};

    let a = Peer::start("cluster-a").await;
    let b = Peer::start("cluster-b").await;
    peer(&a, &b).await;
    wait_authenticated(&a, "cluster-b").await;
    let tenant_on_a = tenant_namespace("cluster-b");
    let identity = Api::<Identity>::namespaced(a.client(), &tenant_on_a)
        .get("cluster-b-control-plane")
        .await
        .expect("the control-plane Identity");
    let secret = identity
        .status
        .and_then(|s| s.kubeconfig_secret_ref)
        .expect("its kubeconfig Secret");

    let consumer_side = tokio::spawn(namespace_offloading_controller::run(Arc::new(
        namespace_offloading_controller::Context {
            client: a.client(),
            local_cluster_id: "cluster-a".into(),
        },
    )));
    let provider_side = tokio::spawn(namespace_map_controller::run(b.client()));
    let _stop = StopOnDrop(vec![consumer_side, provider_side]);

    let virtual_node: VirtualNode = serde_json::from_value(json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "VirtualNode",
        "metadata": {"name": "cluster-b"},
        "spec": {"clusterID": "cluster-b", "kubeconfigSecretRef": {"name": secret.name}},
    }))
    .expect("virtual node");
    Api::<VirtualNode>::namespaced(a.client(), &tenant_on_a)
        .create(&PostParams::default(), &virtual_node)
        .await
        .expect("VirtualNode");
    let apps: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "apps"}})).expect("namespace");
    Api::<Namespace>::all(a.client())
        .create(&PostParams::default(), &apps)
        .await
        .expect("namespace");
    let offloading: NamespaceOffloading = serde_json::from_value(json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "NamespaceOffloading",
        "metadata": {"name": "offloading"},
        "spec": {"podOffloadingStrategy": "Remote"},
    }))
    .expect("namespace offloading");
    Api::<NamespaceOffloading>::namespaced(a.client(), "apps")
        .create(&PostParams::default(), &offloading)
        .await
        .expect("NamespaceOffloading");
    let offloadings: Api<NamespaceOffloading> = Api::namespaced(a.client(), "apps");
    eventually(
        "apps offloaded to cluster-b through the issued Identity",
        STEP,
        || async {
            offloadings
                .get("offloading")
                .await
                .is_ok_and(|o| o.status.is_some_and(|s| s.phase == OffloadingPhase::Ready))
        },
    )
    .await;
    Api::<Namespace>::all(b.client())
        .get("apps-cluster-a")
        .await
        .expect("the remote namespace on cluster-b");

    let through_identity = identity_client(&a, "cluster-b").await;
    let shadow: ShadowPod = serde_json::from_value(json!({
        "apiVersion": "offloading.strait.dev/v1beta1", "kind": "ShadowPod",
        "metadata": {"name": "web"},
        "spec": {"pod": {"containers": [{"name": "app", "image": "app:1"}]}},
    }))
    .expect("shadow pod");
    Api::<ShadowPod>::namespaced(through_identity.clone(), "apps-cluster-a")
        .create(&PostParams::default(), &shadow)
        .await
        .expect("the Identity runs ShadowPods in the offloaded namespace");
    forbidden(
        Api::<ShadowPod>::namespaced(through_identity, "default")
            .create(&PostParams::default(), &shadow)
            .await,
        "ShadowPods outside its offloaded namespaces",
    );
}

/// Aborts the tasks when the test ends, before the clusters go.
struct StopOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
