//! A consumer and providers on the test control plane, the offloading
//! module running on each, and the test playing the provider's kubelet
//! and the consumer's scheduler.
#![allow(dead_code)]

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures::StreamExt as _;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Secret};
use kube::{
    api::{ListParams, Patch, PatchParams, PostParams},
    runtime::{watcher, WatchStreamExt as _},
    Api, Client, ResourceExt as _,
};
use serde_json::{json, Value};
use strait_api::{names, offloading::VirtualNode};
use strait_offloading::{
    kubelet::{KubeletSettings, Launcher, ProcessLauncher},
    module::{self, ModuleConfig},
    shadow_pod_controller::Enforcement,
};
use strait_testkit::{Options, TestCluster};

pub const WAIT: Duration = Duration::from_secs(30);

/// `.within("what").await`: [`bounded`] as a method of any future.
pub trait Within: std::future::Future + Sized {
    fn within(self, what: &str) -> impl std::future::Future<Output = Self::Output> {
        bounded(what.to_owned(), self)
    }
}

impl<F: std::future::Future> Within for F {}

/// Awaits `future` for at most [`WAIT`]: a hang becomes a failure that
/// says what the test was waiting for.
pub async fn bounded<T>(
    what: impl std::fmt::Display,
    future: impl std::future::Future<Output = T>,
) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("no answer within {WAIT:?}: {what}"),
    }
}

pub fn object<T: serde::de::DeserializeOwned>(value: Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

pub async fn create<T>(client: &Client, namespace: Option<&str>, value: Value) -> T
where
    T: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let namespace = namespace.unwrap_or("default");
    let api: Api<T> = Api::namespaced(client.clone(), namespace);
    let what = format!(
        "creating {} {namespace}/{}",
        T::kind(&()),
        value["metadata"]["name"].as_str().unwrap_or_default()
    );
    bounded(&what, api.create(&PostParams::default(), &object(value)))
        .await
        .unwrap_or_else(|error| panic!("{what}: {error}"))
}

pub async fn namespace(client: &Client, name: &str) {
    let namespaces = Api::<Namespace>::all(client.clone());
    let what = format!("creating namespace {name}");
    bounded(
        &what,
        namespaces.create(
            &PostParams::default(),
            &object(json!({"metadata": {"name": name}})),
        ),
    )
    .await
    .unwrap_or_else(|error| panic!("{what}: {error}"));
}

/// A task of the test (a cluster's offloading module, a stand-in kubelet),
/// stopped when dropped. Dropping a bare JoinHandle would leave it running
/// after its cluster is gone, until the runtime shuts down.
pub struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The offloading module of one cluster, stopped when dropped.
pub type Module = Task;

/// The strait-virtual-kubelet binary: cargo's for tests, else next to this executable.
pub fn virtual_kubelet_binary() -> std::path::PathBuf {
    match option_env!("CARGO_BIN_EXE_strait-virtual-kubelet") {
        Some(path) => path.into(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| {
                exe.parent()?
                    .parent()
                    .map(|dir| dir.join("strait-virtual-kubelet"))
            })
            .unwrap_or_else(|| "strait-virtual-kubelet".into()),
    }
}

/// Runs the offloading module of `cluster` in this process; its virtual
/// kubelets are processes registering in `cluster` through `kubeconfig`.
pub fn start_module(
    cluster_id: &str,
    client: Client,
    kubeconfig: &std::path::Path,
    settings: KubeletSettings,
    enforcement: Enforcement,
) -> Module {
    let launcher = ProcessLauncher::new(virtual_kubelet_binary())
        .env("KUBECONFIG", &kubeconfig.display().to_string())
        .env("RUST_LOG", "warn");
    let config = ModuleConfig {
        cluster_id: Some(cluster_id.to_owned()),
        launcher: Launcher::Process(launcher),
        kubelet: KubeletSettings {
            listen_address: "127.0.0.1:0".into(),
            node_ip: "127.0.0.1".into(),
            status_interval: Duration::from_millis(200),
            ..settings
        },
        quota_enforcement: enforcement,
    };
    Task(tokio::spawn(async move {
        if let Err(error) = module::run(client, config).await {
            panic!("offloading module stopped: {error}");
        }
    }))
}

/// A provider: a TLS cluster where the consumer's identity may only touch
/// its tenant namespace (and, once granted, the namespaces it offloads).
///
/// Fields drop in order: the module and the kubelet stop before the cluster
/// they talk to goes away.
pub struct Provider {
    _module: Module,
    _kubelet: Task,
    pub id: String,
    pub cluster: TestCluster,
    pub consumer_kubeconfig: String,
}

impl Provider {
    /// `grant` is the hand-made ResourceSlice grant of the consumer.
    pub async fn start(id: &str, consumer_id: &str, grant: Value, dir: &std::path::Path) -> Self {
        let cluster = bounded(
            format!("provider {id} starting"),
            TestCluster::start_with(
                id,
                Options {
                    tls: true,
                    ..Options::default()
                },
            ),
        )
        .await
        .expect("provider starts");
        let admin = cluster.client();
        let tenant = names::tenant_namespace(consumer_id);
        namespace(&admin, &tenant).await;
        let user = format!("strait-consumer-{consumer_id}");
        let _: k8s_openapi::api::rbac::v1::Role = create(&admin, Some(&tenant), json!({
            "metadata": {"name": "strait-tenant"},
            "rules": [
                {"apiGroups": [names::group::OFFLOADING], "resources": ["namespacemaps"], "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]},
                {"apiGroups": [names::group::AUTHENTICATION], "resources": ["resourceslices"], "verbs": ["get", "list", "watch"]},
            ],
        })).await;
        let _: k8s_openapi::api::rbac::v1::RoleBinding = create(&admin, Some(&tenant), json!({
            "metadata": {"name": "strait-tenant"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "strait-tenant"},
            "subjects": [{"kind": "User", "name": user}],
        })).await;
        let slices: Api<strait_api::authentication::ResourceSlice> =
            Api::namespaced(admin.clone(), &tenant);
        let slice: strait_api::authentication::ResourceSlice = create(&admin, Some(&tenant), json!({
            "apiVersion": "authentication.strait.dev/v1beta1", "kind": "ResourceSlice",
            "metadata": {"name": "default"},
            "spec": {"consumerClusterID": consumer_id, "providerClusterID": id, "resources": grant.clone()},
        })).await;
        bounded(
            "granting the ResourceSlice",
            slices.patch_status(
                &slice.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"resources": grant}})),
            ),
        )
        .await
        .expect("grant");
        let consumer_kubeconfig = cluster
            .kubeconfig_yaml_as(&user, &[])
            .expect("consumer kubeconfig");
        let path = dir.join(format!("{id}-admin.kubeconfig"));
        cluster.write_kubeconfig(&path).expect("kubeconfig");
        let module = start_module(
            id,
            admin.clone(),
            &path,
            KubeletSettings::default(),
            Enforcement::Hard,
        );
        let kubelet = Task(tokio::spawn(play_kubelet(admin)));
        Self {
            id: id.to_owned(),
            cluster,
            consumer_kubeconfig,
            _module: module,
            _kubelet: kubelet,
        }
    }
}

/// Address the fake kubelet gives the n-th pod it starts.
pub fn pod_ip(n: u32) -> String {
    format!("198.18.{}.{}", n / 250, n % 250 + 1)
}

/// The provider's kubelet, played by the test: every pod that appears is
/// Running with an address.
pub async fn play_kubelet(client: Client) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut started = 0u32;
    // With backoff: a watch error retried at once never yields, and a task
    // that never yields keeps the runtime from shutting down (the test then
    // hangs after its last assertion, once the provider's server is gone).
    let mut events = watcher(pods, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        let Ok(pod) = event else { continue };
        if pod.status.as_ref().and_then(|s| s.phase.as_ref()).is_some()
            || pod.metadata.deletion_timestamp.is_some()
        {
            continue;
        }
        let ip = pod_ip(started);
        started += 1;
        let status = json!({"status": {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "198.18.255.1",
            "conditions": [{"type": "Ready", "status": "True"}],
        }});
        let api: Api<Pod> = Api::namespaced(client.clone(), &pod.namespace().unwrap_or_default());
        let _ = api
            .patch_status(
                &pod.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&status),
            )
            .await;
    }
}

/// The consumer: a plain cluster with the offloading module.
///
/// The module drops first: it stops before the cluster it talks to.
pub struct Consumer {
    module: Option<Module>,
    pub id: String,
    pub cluster: TestCluster,
    pub dir: tempfile::TempDir,
}

impl Consumer {
    pub async fn start(id: &str) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        let cluster = bounded(format!("consumer {id} starting"), TestCluster::start(id))
            .await
            .expect("consumer starts");
        let dir = tempfile::tempdir().expect("temp dir");
        namespace(&cluster.client(), names::SYSTEM_NAMESPACE).await;
        Self {
            id: id.to_owned(),
            cluster,
            dir,
            module: None,
        }
    }

    pub fn client(&self) -> Client {
        self.cluster.client()
    }

    /// The virtual kubelets trust the certificate this cluster's API
    /// server shows kubelets, and keep no denials (tests grant a right and
    /// ask again at once).
    pub fn start_module(&mut self, settings: KubeletSettings) {
        let path = self.dir.path().join("consumer.kubeconfig");
        self.cluster.write_kubeconfig(&path).expect("kubeconfig");
        let client_ca = self.dir.path().join("kubelet-client-ca.crt");
        std::fs::write(&client_ca, self.cluster.kubelet_client_ca_pem()).expect("client CA");
        let settings = KubeletSettings {
            client_ca_file: Some(client_ca.display().to_string()),
            authorization_denied_ttl: Some(Duration::ZERO),
            ..settings
        };
        self.module = Some(start_module(
            &self.id,
            self.client(),
            &path,
            settings,
            Enforcement::Hard,
        ));
    }

    /// A hand-made identity: the kubeconfig Secret a VirtualNode points to.
    pub async fn add_provider_secret(&self, provider: &Provider) -> String {
        let name = names::peering_kubeconfig_secret(&provider.id);
        self.add_secret(&name, &provider.consumer_kubeconfig).await;
        name
    }

    pub async fn add_secret(&self, name: &str, kubeconfig: &str) {
        let _: Secret = create(
            &self.client(),
            Some(names::SYSTEM_NAMESPACE),
            json!({
                "metadata": {"name": name},
                "stringData": {"kubeconfig": kubeconfig},
            }),
        )
        .await;
    }

    pub async fn add_virtual_node(
        &self,
        name: &str,
        provider: &Provider,
        secret: &str,
        spec: Value,
    ) -> VirtualNode {
        let mut full = json!({
            "apiVersion": "offloading.strait.dev/v1beta1", "kind": "VirtualNode",
            "metadata": {"name": name},
            "spec": {"clusterID": provider.id, "kubeconfigSecretRef": {"name": secret}},
        });
        if let (Some(target), Value::Object(extra)) = (full["spec"].as_object_mut(), spec) {
            target.extend(extra);
        }
        create(&self.client(), Some(names::SYSTEM_NAMESPACE), full).await
    }

    pub async fn wait_node_ready(&self, node: &str, ready: bool) {
        let nodes: Api<Node> = Api::all(self.client());
        strait_testkit::eventually(&format!("node {node} Ready={ready}"), WAIT, || {
            let nodes = nodes.clone();
            async move {
                nodes
                    .get_opt(node)
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|n| node_ready(&n) == Some(ready))
            }
        })
        .await;
    }
}

pub fn node_ready(node: &Node) -> Option<bool> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.status == "True")
}

/// Binds a pod to a node, as the scheduler does.
pub async fn bind(client: &Client, namespace: &str, pod: &str, node: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let what = format!("binding pod {namespace}/{pod} to {node}");
    bounded(
        &what,
        pods.patch(
            pod,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"nodeName": node}})),
        ),
    )
    .await
    .unwrap_or_else(|error| panic!("{what}: {error}"));
}

pub async fn pod_phase(client: &Client, namespace: &str, pod: &str) -> Option<String> {
    Api::<Pod>::namespaced(client.clone(), namespace)
        .get_opt(pod)
        .await
        .ok()
        .flatten()
        .and_then(|p| p.status.and_then(|s| s.phase))
}

/// Waits for a pod's phase; a timeout names the pod and shows its last status.
pub async fn wait_phase(client: &Client, namespace: &str, pod: &str, phase: &str) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    let mut last = None;
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(Some(current)) = pods.get_opt(pod).await {
                let status = current.status.unwrap_or_default();
                if status.phase.as_deref() == Some(phase) {
                    return;
                }
                last = Some(status);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        reached.is_ok(),
        "pod {namespace}/{pod} not {phase} within {WAIT:?}; last status: {}",
        last.map(|s| serde_json::to_string(&s).unwrap_or_default())
            .unwrap_or_else(|| "never read".into())
    );
}

/// Everything Strait left in a cluster: names of objects of the kinds it
/// creates, in every namespace, skipping what the test made itself.
pub async fn leftovers(client: &Client, keep_namespaces: &[&str]) -> BTreeMap<String, Vec<String>> {
    bounded(
        "listing what Strait left behind",
        list_leftovers(client, keep_namespaces),
    )
    .await
}

async fn list_leftovers(
    client: &Client,
    keep_namespaces: &[&str],
) -> BTreeMap<String, Vec<String>> {
    let mut found = BTreeMap::new();
    let names_of = |items: Vec<String>| items;
    let pods = Api::<Pod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("pods");
    found.insert(
        "pods".into(),
        names_of(
            pods.into_iter()
                .map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any()))
                .collect(),
        ),
    );
    let shadows = Api::<strait_api::offloading::ShadowPod>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("shadowpods");
    found.insert(
        "shadowpods".into(),
        shadows.into_iter().map(|p| p.name_any()).collect(),
    );
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("nodes");
    found.insert(
        "nodes".into(),
        nodes.into_iter().map(|n| n.name_any()).collect(),
    );
    let namespaces = Api::<Namespace>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("namespaces");
    let builtin = ["default", "kube-system", "kube-public", "kube-node-lease"];
    found.insert(
        "namespaces".into(),
        namespaces
            .into_iter()
            .map(|n| n.name_any())
            .filter(|n| !builtin.contains(&n.as_str()) && !keep_namespaces.contains(&n.as_str()))
            .collect(),
    );
    let leases = Api::<k8s_openapi::api::coordination::v1::Lease>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect("leases");
    found.insert(
        "leases".into(),
        leases.into_iter().map(|l| l.name_any()).collect(),
    );
    found.retain(|_, v| !v.is_empty());
    found
}

/// What a kubelet endpoint of a virtual node answers, asked through the
/// API server's node proxy (`/api/v1/nodes/<node>/proxy/<path>`): the API
/// server finds the endpoint in the Node's status and authenticates to it
/// as its kubelet client, as `kubectl get --raw` would.
pub async fn kubelet_get(client: &Client, node: &str, path: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let request = http::Request::get(format!("/api/v1/nodes/{node}/proxy{path}"))
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let exchange = async {
        let response = client.send(request).await.expect("the API server answers");
        let code = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        (code, String::from_utf8_lossy(&body).into_owned())
    };
    tokio::time::timeout(WAIT, exchange)
        .await
        .expect("the kubelet answers in time")
}

pub type Shared<T> = Arc<T>;

/// A TCP relay in front of a provider's API server that the test can cut
/// (every connection dropped, new ones refused) and restore: the provider
/// "unreachable" without stopping it.
pub struct Relay {
    pub address: std::net::SocketAddr,
    open: Arc<std::sync::atomic::AtomicBool>,
    generation: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn start(target: std::net::SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("relay listens");
        let address = listener.local_addr().expect("relay address");
        let open = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (generation, _) = tokio::sync::watch::channel(0u64);
        let task = {
            let open = open.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                            return;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            address,
            open,
            generation,
            task,
        }
    }

    pub fn cut(&self) {
        self.open.store(false, std::sync::atomic::Ordering::SeqCst);
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `kubeconfig` with its server moved to `address` (same scheme and certificate).
pub fn through(kubeconfig: &str, address: std::net::SocketAddr) -> String {
    let mut config: Value = serde_norway::from_str(kubeconfig).expect("kubeconfig YAML");
    if let Some(clusters) = config["clusters"].as_array_mut() {
        for cluster in clusters {
            cluster["cluster"]["server"] = json!(format!("https://{address}"));
        }
    }
    serde_norway::to_string(&config).expect("kubeconfig YAML")
}

/// A minimal scheduler: the first node (by name) the pod's node selector,
/// required affinity and tolerations allow.
pub async fn schedule(client: &Client, namespace: &str, pod: &str) -> Option<String> {
    use strait_offloading::placement::selects;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let spec = bounded(format!("reading pod {namespace}/{pod}"), pods.get(pod))
        .await
        .expect("pod")
        .spec
        .unwrap_or_default();
    let mut nodes = bounded(
        "listing nodes",
        Api::<Node>::all(client.clone()).list(&ListParams::default()),
    )
    .await
    .expect("nodes")
    .items;
    nodes.sort_by_key(|n| n.name_any());
    let required = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .clone()
        });
    let tolerations = spec.tolerations.clone().unwrap_or_default();
    let chosen = nodes.into_iter().find(|node| {
        let labels = node.labels().clone();
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| labels.get(k) == Some(v));
        let taints_ok = node
            .spec
            .iter()
            .flat_map(|s| s.taints.iter().flatten())
            .all(|taint| {
                tolerations.iter().any(|t| {
                    t.key.as_deref() == Some(taint.key.as_str())
                        && (t.operator.as_deref() == Some("Exists") || t.value == taint.value)
                })
            });
        selector_ok && taints_ok && selects(required.as_ref(), &labels)
    })?;
    let name = chosen.name_any();
    bind(client, namespace, pod, &name).await;
    Some(name)
}
