//! Test clusters running the authentication module, and `kubectl apply` of
//! the documented YAML.
#![allow(dead_code)]

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::api::core::v1::{ConfigMap, Node};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::Client;
use serde_json::{json, Value};
use strait_api::authentication::{Identity, ResourceSlice};
use strait_api::condition::{find_condition, ConditionStatus};
use strait_api::core::ForeignCluster;
use strait_api::names::{identity, tenant_namespace, SYSTEM_NAMESPACE};
use strait_authentication::{ApiServerEndpoint, Config};
use strait_testkit::{eventually, Options, TestCluster};

pub const STEP: Duration = Duration::from_secs(30);

/// A TLS test cluster with the authentication module running against it.
pub struct Peer {
    pub id: String,
    pub cluster: TestCluster,
    controller: tokio::task::JoinHandle<()>,
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.controller.abort();
    }
}

impl Peer {
    pub async fn start(id: &str) -> Self {
        Self::start_with(id, Config::DEFAULT_IDENTITY_LIFETIME).await
    }

    /// A cluster whose issued identities live `lifetime`, with one Node of
    /// 8 CPUs, 32Gi and 110 pods.
    pub async fn start_with(id: &str, lifetime: Duration) -> Self {
        // RUST_LOG=strait_authentication=debug shows what the controllers do.
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let options = Options {
            tls: true,
            ..Options::default()
        };
        let cluster = TestCluster::start_with(id, options)
            .await
            .expect("test cluster");
        let controller = spawn_controller(&cluster, id, lifetime);
        let peer = Self {
            id: id.to_owned(),
            cluster,
            controller,
        };
        let config_maps: Api<ConfigMap> = Api::namespaced(peer.client(), SYSTEM_NAMESPACE);
        eventually("the cluster identity is created", STEP, || async {
            config_maps
                .get_opt(identity::CLUSTER_IDENTITY_CONFIGMAP)
                .await
                .ok()
                .flatten()
                .is_some()
        })
        .await;
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": format!("{id}-node")},
            "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"}},
        }))
        .expect("node");
        let nodes: Api<Node> = Api::all(peer.client());
        nodes
            .create(&PostParams::default(), &node)
            .await
            .expect("node");
        // As a kubelet does: the status is written through its subresource.
        let status = json!({"status": node.status});
        nodes
            .patch_status(
                &format!("{id}-node"),
                &PatchParams::default(),
                &Patch::Merge(status),
            )
            .await
            .expect("node status");
        peer
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    /// Stops the module's controllers (the API server keeps serving).
    pub fn stop_controller(&self) {
        self.controller.abort();
    }

    /// A kubeconfig for `user`, as the cluster's admin would hand it out.
    pub fn kubeconfig_for(&self, user: &str) -> String {
        self.cluster
            .kubeconfig_yaml_as(user, &[])
            .expect("kubeconfig")
    }
}

fn spawn_controller(
    cluster: &TestCluster,
    id: &str,
    lifetime: Duration,
) -> tokio::task::JoinHandle<()> {
    let config = Config {
        cluster_id: Some(id.to_owned()),
        api_server: ApiServerEndpoint {
            address: cluster.url().to_owned(),
            ca_pem: ca_pem(cluster),
        },
        identity_lifetime: lifetime,
        share_fraction: 0.5,
        identity_check_interval: Duration::from_secs(1),
    };
    let client = cluster.client();
    tokio::spawn(async move {
        if let Err(error) = strait_authentication::run(client, config).await {
            panic!("authentication module stopped: {error}");
        }
    })
}

/// The cluster's CA, from its kubeconfig.
pub fn ca_pem(cluster: &TestCluster) -> String {
    let kubeconfig: Value =
        serde_norway::from_str(&cluster.kubeconfig_yaml().expect("kubeconfig")).expect("yaml");
    let data = kubeconfig
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(Value::as_str)
        .expect("a TLS cluster has a CA");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(data)
            .expect("base64"),
    )
    .expect("PEM")
}

/// A documented YAML file of control/authentication/peering, with the
/// consumer `cluster-a` and provider `cluster-b` renamed.
pub fn documented(file: &str, consumer: &str, provider: &str) -> String {
    let path = format!("{}/peering/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.replace("cluster-a", "@CONSUMER@")
        .replace("cluster-b", "@PROVIDER@")
        .replace("@CONSUMER@", consumer)
        .replace("@PROVIDER@", provider)
}

/// consumer.yaml with the provider's bootstrap kubeconfig pasted in.
pub fn consumer_yaml(consumer: &Peer, provider: &Peer) -> String {
    let kubeconfig = provider.kubeconfig_for(&format!("strait-bootstrap:{}", consumer.id));
    let indented: String = kubeconfig.lines().map(|l| format!("    {l}\n")).collect();
    documented("consumer.yaml", &consumer.id, &provider.id)
        .replace("    PROVIDER-KUBECONFIG\n", &indented)
}

/// Applies the documented YAML for `consumer` → `provider`.
pub async fn peer(consumer: &Peer, provider: &Peer) {
    apply_yaml(
        &provider.client(),
        &documented("provider-bootstrap-rbac.yaml", &consumer.id, &provider.id),
    )
    .await;
    apply_yaml(
        &provider.client(),
        &documented("provider.yaml", &consumer.id, &provider.id),
    )
    .await;
    apply_yaml(&consumer.client(), &consumer_yaml(consumer, provider)).await;
}

/// `kubectl delete -f` of the same files.
pub async fn unpeer(consumer: &Peer, provider: &Peer) {
    delete_yaml(&consumer.client(), &consumer_yaml(consumer, provider)).await;
    delete_yaml(
        &provider.client(),
        &documented("provider.yaml", &consumer.id, &provider.id),
    )
    .await;
    delete_yaml(
        &provider.client(),
        &documented("provider-bootstrap-rbac.yaml", &consumer.id, &provider.id),
    )
    .await;
}

/// What `kubectl apply -f` does with each document: server-side apply.
pub async fn apply_yaml(client: &Client, yaml: &str) {
    for document in serde_norway::Deserializer::from_str(yaml) {
        let object: Value = serde::Deserialize::deserialize(document).expect("YAML document");
        if object.is_null() {
            continue;
        }
        let (api, name) = dynamic_api(client, &object);
        api.patch(
            &name,
            &PatchParams::apply("kubectl").force(),
            &Patch::Apply(&object),
        )
        .await
        .unwrap_or_else(|e| panic!("apply {name}: {e}"));
    }
}

/// `kubectl delete -f`.
pub async fn delete_yaml(client: &Client, yaml: &str) {
    for document in serde_norway::Deserializer::from_str(yaml) {
        let object: Value = serde::Deserialize::deserialize(document).expect("YAML document");
        if object.is_null() {
            continue;
        }
        let (api, name) = dynamic_api(client, &object);
        match api.delete(&name, &Default::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
    }
}

fn dynamic_api(client: &Client, object: &Value) -> (Api<DynamicObject>, String) {
    let text = |pointer| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let api_version = text("/apiVersion");
    let kind = text("/kind");
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = GroupVersionKind::gvk(group, version, &kind);
    let plural = match kind.as_str() {
        "ClusterRoleBinding" | "RoleBinding" | "ClusterRole" | "Role" | "Namespace" | "Secret"
        | "ForeignCluster" | "ResourceSlice" | "Tenant" => {
            format!("{}s", kind.to_ascii_lowercase())
        }
        other => panic!("the documented YAML has an unexpected kind {other}"),
    };
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let namespace = text("/metadata/namespace");
    let api = if namespace.is_empty() {
        Api::all_with(client.clone(), &resource)
    } else {
        Api::namespaced_with(client.clone(), &namespace, &resource)
    };
    (api, text("/metadata/name"))
}

/// The condition of `type_` on a ForeignCluster, as (status, reason).
pub async fn foreign_cluster_condition(
    client: &Client,
    name: &str,
    type_: &str,
) -> Option<(ConditionStatus, String)> {
    let fc = Api::<ForeignCluster>::all(client.clone())
        .get_opt(name)
        .await
        .ok()??;
    let condition = find_condition(&fc.status?.conditions, type_)?.clone();
    Some((condition.status, condition.reason))
}

pub async fn wait_authenticated(peer: &Peer, remote: &str) {
    eventually(
        &format!("{}: ForeignCluster {remote} AuthenticationReady", peer.id),
        STEP,
        || async {
            foreign_cluster_condition(&peer.client(), remote, "AuthenticationReady")
                .await
                .is_some_and(|(status, _)| status == ConditionStatus::True)
        },
    )
    .await;
}

pub async fn wait_condition_reason(peer: &Peer, remote: &str, reason: &str) {
    eventually(
        &format!(
            "{}: ForeignCluster {remote} AuthenticationReady reason {reason}",
            peer.id
        ),
        STEP,
        || async {
            foreign_cluster_condition(&peer.client(), remote, "AuthenticationReady")
                .await
                .is_some_and(|(status, r)| status == ConditionStatus::False && r == reason)
        },
    )
    .await;
}

/// The consumer's slice once the provider's answer to its current
/// generation is in (Accepted True or False).
pub async fn answered_slice(consumer: &Peer, provider: &str, name: &str) -> ResourceSlice {
    let slices: Api<ResourceSlice> =
        Api::namespaced(consumer.client(), &tenant_namespace(provider));
    let deadline = tokio::time::Instant::now() + STEP;
    loop {
        if let Ok(slice) = slices.get(name).await {
            let answered = slice
                .status
                .as_ref()
                .and_then(|s| find_condition(&s.conditions, "Accepted"))
                .is_some_and(|c| {
                    c.observed_generation == slice.metadata.generation
                        && !matches!(c.reason.as_str(), "AnswerPending" | "IdentityPending")
                });
            if answered {
                return slice;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {}: slice {name} answered",
            consumer.id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn condition(slice: &ResourceSlice, type_: &str) -> (ConditionStatus, String) {
    let c = slice
        .status
        .as_ref()
        .and_then(|s| find_condition(&s.conditions, type_))
        .unwrap_or_else(|| panic!("slice has no {type_} condition"));
    (c.status, c.reason.clone())
}

/// A client acting as the consumer's control-plane Identity for `provider`.
pub async fn identity_client(consumer: &Peer, provider: &str) -> Client {
    let namespace = tenant_namespace(provider);
    let name = format!("{provider}-control-plane");
    let identity = Api::<Identity>::namespaced(consumer.client(), &namespace)
        .get(&name)
        .await
        .expect("identity");
    let secret = identity
        .status
        .and_then(|s| s.kubeconfig_secret_ref)
        .expect("kubeconfig secret ref");
    let yaml = secret_kubeconfig(consumer, &namespace, &secret.name).await;
    client_from_kubeconfig(&yaml).await
}

pub async fn secret_kubeconfig(peer: &Peer, namespace: &str, name: &str) -> String {
    let secret = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(peer.client(), namespace)
        .get(name)
        .await
        .expect("secret");
    let bytes = secret
        .data
        .and_then(|d| d.get("kubeconfig").cloned())
        .expect("kubeconfig key");
    String::from_utf8(bytes.0).expect("utf-8")
}

pub async fn client_from_kubeconfig(yaml: &str) -> Client {
    let kubeconfig = kube::config::Kubeconfig::from_yaml(yaml).expect("kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}
