//! Act 3: two test control planes (TLS), the real `strait-controller` on
//! each with all three modules, peering by `kubectl apply` of the
//! documented YAML, then a pod offloaded from cluster-a to a virtual node
//! backed by cluster-b (its virtual kubelet a child of cluster-a's
//! controller). The demo plays what the test control plane does not have:
//! each cluster's kubelet (Node registration, pod status) and cluster-a's
//! scheduler (binding the pod).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::{
    api::{Patch, PatchParams},
    Api, Client,
};
use serde_json::{json, Value};
use strait_api::{
    authentication::{Identity, ResourceSlice},
    core::ForeignCluster,
    names,
    networking::InternalNode,
    offloading::{NamespaceOffloading, ShadowPod, VirtualNode},
};
use strait_testkit::{Options, TestCluster};
use tokio::runtime::Runtime;

use super::{
    k8s::{get_json, kubectl, wait_condition, wait_for, STEP},
    network, process, Report, Stage,
};
use crate::{bins, gateway::Process};

pub const CONSUMER: &str = "cluster-a";
pub const PROVIDER: &str = "cluster-b";
/// Both clusters use the same ranges: the pods of each overlap the other's.
pub const POD_CIDRS: [&str; 2] = ["198.18.64.0/18", "fd00:6::/32"];
pub const NODE_POD_CIDRS: [&str; 2] = ["198.18.65.0/24", "fd00:6:1::/64"];
pub const NODE_UNDERLAY: [&str; 2] = ["198.18.0.11", "fd00:f::11"];
pub const UNDERLAY_CIDRS: [&str; 2] = ["198.18.0.0/24", "fd00:f::/64"];
/// Where each cluster's IPAM takes the ranges it sees the peer's pods as.
pub const REMAP_POOLS: [&str; 2] = ["198.19.64.0/18", "fd00:19::/32"];
pub const OFFLOADED_NAMESPACE: &str = "shop";
pub const POD: &str = "web";

/// One simulated cluster's control plane and its controller.
pub struct Cluster {
    pub id: &'static str,
    pub api: TestCluster,
    pub kubeconfig: PathBuf,
    pub controller: Process,
}

impl Cluster {
    pub fn client(&self) -> Client {
        self.api.client()
    }

    pub fn node_name(&self) -> String {
        format!("{}-node1", self.id)
    }
}

pub struct Clusters {
    pub a: Cluster,
    pub b: Cluster,
}

impl Clusters {
    pub fn print_access(&self) {
        println!("\nthe two clusters, for kubectl:");
        for cluster in [&self.a, &self.b] {
            println!(
                "  export KUBECONFIG={}   # {} at {} (controller log: {})",
                cluster.kubeconfig.display(),
                cluster.id,
                cluster.api.url(),
                cluster.controller.log.display()
            );
        }
        println!(
            "  e.g. kubectl --kubeconfig {} get foreignclusters,virtualnodes,nodes,connections -A",
            self.a.kubeconfig.display()
        );
    }
}

pub fn act(
    runtime: &Runtime,
    stage: &Stage,
    sites: &network::Sites,
    report: &mut Report,
) -> Result<Clusters> {
    // Cluster-a sees cluster-b's pods as the remap pool: the pools are the
    // size of the pod CIDRs, so that is the only range the network module
    // can allocate (act 4 checks it). The offloading module does not read
    // the network module's Configuration, so its virtual kubelet is told.
    let mut consumer = all_modules_args()?;
    consumer.extend(sites.controller_args(stage, 0)?);
    for (pods, seen) in POD_CIDRS.iter().zip(REMAP_POOLS) {
        consumer.extend([
            "--virtual-kubelet-pod-cidr-remap".into(),
            format!("{pods}={seen}"),
        ]);
    }
    let mut provider = all_modules_args()?;
    provider.extend(sites.controller_args(stage, 1)?);
    let a = runtime.block_on(start_cluster(stage, CONSUMER, consumer, report))?;
    let b = runtime.block_on(start_cluster(stage, PROVIDER, provider, report))?;
    let clusters = Clusters { a, b };
    runtime.block_on(peer(stage, &clusters, report))?;
    runtime.block_on(offload(stage, &clusters, report))?;
    Ok(clusters)
}

/// The network module's flags as both clusters use them: the same pod CIDRs
/// and underlay reserved, the same remap pools.
pub fn network_module_args() -> Vec<String> {
    let mut args = vec!["--network".to_owned()];
    for cidr in POD_CIDRS.iter().chain(&UNDERLAY_CIDRS) {
        args.extend(["--reserved-cidr".into(), (*cidr).into()]);
    }
    for pool in REMAP_POOLS {
        args.extend(["--remap-pool".into(), pool.into()]);
    }
    args
}

/// The demo's controllers run all three modules.
fn all_modules_args() -> Result<Vec<String>> {
    let mut args = network_module_args();
    let virtual_kubelet = bins::path("strait-virtual-kubelet").map_err(anyhow::Error::msg)?;
    args.extend([
        "--authentication".into(),
        "--offloading".into(),
        "--virtual-kubelet-binary".into(),
        virtual_kubelet.display().to_string(),
        "--node-status-interval-ms".into(),
        "500".into(),
    ]);
    Ok(args)
}

/// The cluster's API server, its one Node (registered as its kubelet
/// would), and its strait-controller with `module_args` (which modules, and
/// their flags).
pub async fn start_cluster(
    stage: &Stage,
    id: &'static str,
    module_args: Vec<String>,
    report: &mut Report,
) -> Result<Cluster> {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    let api = TestCluster::start_with(id, options).await?;
    let kubeconfig = stage.path(&format!("{id}.kubeconfig"));
    api.write_kubeconfig(&kubeconfig)?;
    report.say(format!(
        "{id}: API server {} (TLS, RBAC), admin kubeconfig {}",
        api.url(),
        kubeconfig.display()
    ));
    let client = api.client();
    register_node(&client, &format!("{id}-node1")).await?;

    let install = stage.path(&format!("{id}-install.yaml"));
    std::fs::write(
        &install,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: strait\n",
    )?;
    kubectl(
        &kubeconfig,
        &[
            "apply",
            "--server-side",
            "-f",
            &install.display().to_string(),
        ],
    )?;
    let mut args: Vec<String> = ["--cluster-id", id].map(String::from).to_vec();
    args.extend(module_args);
    let binary = bins::path("strait-controller").map_err(anyhow::Error::msg)?;
    let mut command = std::process::Command::new(&binary);
    command
        .args(&args)
        .env("KUBECONFIG", &kubeconfig)
        .env("RUST_LOG", "info")
        .env("RUST_BACKTRACE", "0")
        .env("RUST_LIB_BACKTRACE", "0");
    let mut controller = process::spawn(command, stage.path(&format!("{id}-controller.log")))?;
    report.say(format!("{id} $ strait-controller {}", args.join(" ")));
    // The authentication module publishes the cluster identity; the
    // network module alone shows it runs by the InternalNode of the Node.
    let authentication = args.iter().any(|a| a == "--authentication");
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), names::SYSTEM_NAMESPACE);
    let internal_nodes: Api<InternalNode> = Api::all(client);
    let node = format!("{id}-node1");
    let started = std::time::Instant::now();
    // Polled by hand: a controller that exits at start is reported at once.
    let running = loop {
        let seen = if authentication {
            get_json(&config_maps, names::identity::CLUSTER_IDENTITY_CONFIGMAP)
                .await
                .map(|cm| {
                    format!(
                        "clusterID {}",
                        cm.pointer("/data/clusterID")
                            .and_then(Value::as_str)
                            .unwrap_or("?")
                    )
                })
        } else {
            get_json(&internal_nodes, &node)
                .await
                .map(|_| format!("InternalNode {node} written"))
        };
        match seen {
            Ok(found) => break Ok(found),
            Err(_) if !controller.alive() => break Err("strait-controller exited".to_owned()),
            Err(e) if started.elapsed() >= STEP => break Err(e),
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    };
    let log = controller.log_text();
    let running =
        running.map_err(|e| format!("{e}\ncontroller log (last lines):\n{}", tail(&log, 20)));
    let what = if authentication {
        "runs and publishes the cluster identity"
    } else {
        "runs its network module"
    };
    if !report.check(&format!("{id}: strait-controller {what}"), running) {
        anyhow::bail!("{id}'s controller is not running");
    }
    Ok(Cluster {
        id,
        api,
        kubeconfig,
        controller,
    })
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// As a kubelet does: the Node, then its status (addresses, capacity).
async fn register_node(client: &Client, name: &str) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let node = json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name},
        "spec": {"podCIDR": NODE_POD_CIDRS[0], "podCIDRs": NODE_POD_CIDRS},
    });
    nodes
        .patch(
            name,
            &PatchParams::apply("kubelet").force(),
            &Patch::Apply(&node),
        )
        .await
        .with_context(|| format!("registering Node {name}"))?;
    let ready = json!({"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "played by the demo"});
    let status = json!({"status": {
        "addresses": [
            {"type": "InternalIP", "address": NODE_UNDERLAY[0]},
            {"type": "InternalIP", "address": NODE_UNDERLAY[1]},
        ],
        "capacity": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110"},
        "conditions": [ready],
    }});
    nodes
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("writing the status of Node {name}"))?;
    Ok(())
}

/// A documented peering file, with its cluster names as in the demo.
fn peering_file(name: &str) -> Result<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../control/authentication/peering")
        .join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Writes `yaml` to the stage and `kubectl apply`s it on `cluster`.
fn apply(stage: &Stage, cluster: &Cluster, file: &str, yaml: &str, report: &Report) -> Result<()> {
    let path = stage.path(file);
    std::fs::write(&path, yaml)?;
    let path = path.display().to_string();
    report.say(format!(
        "{} $ kubectl apply --server-side -f {file}",
        cluster.id
    ));
    let out = kubectl(
        &cluster.kubeconfig,
        &["apply", "--server-side", "-f", &path],
    )?;
    report.say(out.lines().map(|l| format!("  {l}\n")).collect::<String>());
    Ok(())
}

async fn peer(stage: &Stage, clusters: &Clusters, report: &mut Report) -> Result<()> {
    let (a, b) = (&clusters.a, &clusters.b);
    report.say(format!(
        "peering: {} (consumer) asks {} (provider) for resources, with the YAML of control/authentication/peering",
        a.id, b.id
    ));
    let provider = [
        peering_file("provider-bootstrap-rbac.yaml")?,
        peering_file("provider.yaml")?,
    ]
    .join("---\n");
    apply(stage, b, "provider.yaml", &provider, report)?;
    let bootstrap = b
        .api
        .kubeconfig_yaml_as(&format!("strait-bootstrap:{}", a.id), &[])?;
    let indented: String = bootstrap.lines().map(|l| format!("    {l}\n")).collect();
    let consumer = peering_file("consumer.yaml")?.replace("    PROVIDER-KUBECONFIG\n", &indented);
    apply(stage, a, "consumer.yaml", &consumer, report)?;

    let foreign: Api<ForeignCluster> = Api::all(a.client());
    report.check(
        &format!("{}: ForeignCluster {} AuthenticationReady", a.id, b.id),
        wait_condition(&foreign, b.id, "AuthenticationReady").await,
    );
    let tenant = names::tenant_namespace(b.id);
    let slices: Api<ResourceSlice> = Api::namespaced(a.client(), &tenant);
    let slice = "cluster-b-compute";
    let accepted = wait_condition(&slices, slice, "Accepted").await;
    let grant = get_json(&slices, slice).await.map(|s| granted(&s));
    report.check(
        &format!("{}: ResourceSlice {slice} Accepted by {}", a.id, b.id),
        accepted.map(|message| format!("{message}; granted {}", grant.unwrap_or_default())),
    );
    let provider_view: Api<ResourceSlice> =
        Api::namespaced(b.client(), &names::tenant_namespace(a.id));
    report.check(
        &format!(
            "{}: the slice's copy in the tenant namespace of {}",
            b.id, a.id
        ),
        get_json(&provider_view, slice)
            .await
            .map(|s| format!("granted {}", granted(&s))),
    );
    report.say(kubectl(&a.kubeconfig, &["get", "foreignclusters"])?);
    Ok(())
}

fn granted(slice: &Value) -> String {
    slice
        .pointer("/status/resources")
        .map(Value::to_string)
        .unwrap_or_else(|| "nothing".into())
}

async fn offload(stage: &Stage, clusters: &Clusters, report: &mut Report) -> Result<()> {
    let (a, b) = (&clusters.a, &clusters.b);
    let tenant = names::tenant_namespace(b.id);
    let identities: Api<Identity> = Api::namespaced(a.client(), &tenant);
    let control_plane = format!("{}-control-plane", b.id);
    let identity = get_json(&identities, &control_plane)
        .await
        .map_err(anyhow::Error::msg)?;
    let secret = identity
        .pointer("/status/kubeconfigSecretRef/name")
        .and_then(Value::as_str)
        .context("the control-plane Identity has no kubeconfig Secret")?
        .to_owned();

    let virtual_node = format!(
        r#"apiVersion: offloading.strait.dev/v1beta1
kind: VirtualNode
metadata:
  name: {b}
  namespace: {tenant}
spec:
  clusterID: {b}
  resourceSliceName: cluster-b-compute
  kubeconfigSecretRef:
    name: {secret}
---
apiVersion: v1
kind: Namespace
metadata:
  name: {OFFLOADED_NAMESPACE}
---
apiVersion: offloading.strait.dev/v1beta1
kind: NamespaceOffloading
metadata:
  name: offloading
  namespace: {OFFLOADED_NAMESPACE}
spec:
  podOffloadingStrategy: Remote
"#,
        b = b.id
    );
    apply(stage, a, "offloading.yaml", &virtual_node, report)?;
    // Next to the slice it draws on and the Identity's kubeconfig.
    let virtual_nodes: Api<VirtualNode> = Api::namespaced(a.client(), &tenant);
    report.check(
        &format!(
            "{}: VirtualNode {} Ready (its virtual kubelet runs)",
            a.id, b.id
        ),
        wait_condition(&virtual_nodes, b.id, "Ready").await,
    );
    let nodes: Api<Node> = Api::all(a.client());
    let node_ready = wait_condition(&nodes, b.id, "Ready").await;
    let allocatable = get_json(&nodes, b.id)
        .await
        .ok()
        .and_then(|n| n.pointer("/status/allocatable").cloned())
        .unwrap_or(Value::Null);
    let cpu = allocatable
        .get("cpu")
        .and_then(Value::as_str)
        .unwrap_or("none");
    report.check(
        &format!(
            "{}: Node {} is Ready with the slice's grant as capacity",
            a.id, b.id
        ),
        node_ready.and_then(|m| {
            if cpu == "2" {
                Ok(format!("{m}; allocatable {allocatable}"))
            } else {
                Err(format!("{m}; allocatable cpu {cpu}, the slice grants 2"))
            }
        }),
    );
    let offloadings: Api<NamespaceOffloading> = Api::namespaced(a.client(), OFFLOADED_NAMESPACE);
    let remote_namespace = wait_for(STEP, || async {
        let o = get_json(&offloadings, "offloading").await?;
        match (
            o.pointer("/status/phase").and_then(Value::as_str),
            o.pointer("/status/remoteNamespaceName")
                .and_then(Value::as_str),
        ) {
            (Some("Ready"), Some(remote)) => Ok(remote.to_owned()),
            (phase, _) => Err(format!("phase {phase:?}")),
        }
    })
    .await;
    let remote_exists = match &remote_namespace {
        Ok(remote) => get_json(&Api::<Namespace>::all(b.client()), remote)
            .await
            .map(|_| format!("{OFFLOADED_NAMESPACE} on {} is {remote} on {}", a.id, b.id)),
        Err(e) => Err(e.clone()),
    };
    report.check(
        &format!(
            "namespace {OFFLOADED_NAMESPACE} offloaded: its twin exists on {}",
            b.id
        ),
        remote_exists,
    );
    let remote_namespace = remote_namespace.map_err(anyhow::Error::msg)?;

    let pod = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {POD}
  namespace: {OFFLOADED_NAMESPACE}
  labels:
    app: {POD}
spec:
  containers:
    - name: app
      image: registry.example/web:1
      resources:
        requests: {{cpu: 100m, memory: 64Mi}}
"#
    );
    apply(stage, a, "pod.yaml", &pod, report)?;
    report.say(format!(
        "the demo, as {}'s scheduler, binds {OFFLOADED_NAMESPACE}/{POD} to node {}",
        a.id, b.id
    ));
    let pods: Api<Pod> = Api::namespaced(a.client(), OFFLOADED_NAMESPACE);
    pods.patch(
        POD,
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"nodeName": b.id}})),
    )
    .await
    .context("binding the pod")?;
    let shadows: Api<ShadowPod> = Api::namespaced(b.client(), &remote_namespace);
    report.check(
        &format!(
            "{}: the pod is reflected as ShadowPod {remote_namespace}/{POD}",
            b.id
        ),
        wait_for(STEP, || get_json(&shadows, POD))
            .await
            .map(|_| "created by the virtual kubelet through the peering identity".into()),
    );
    let remote_pods: Api<Pod> = Api::namespaced(b.client(), &remote_namespace);
    let provider_pod = wait_for(STEP, || get_json(&remote_pods, POD)).await;
    let created = provider_pod.is_ok();
    report.check(
        &format!(
            "{}: the ShadowPod made the real Pod {remote_namespace}/{POD}",
            b.id
        ),
        provider_pod.map(|p| {
            format!(
                "image {}",
                p.pointer("/spec/containers/0/image")
                    .and_then(Value::as_str)
                    .unwrap_or("?")
            )
        }),
    );
    if !created {
        return Ok(());
    }
    let ip = crate::demo::network::PROVIDER_POD_V4;
    report.say(format!(
        "the demo, as {}'s kubelet, starts the pod: Running at {ip}",
        b.id
    ));
    let running = json!({"status": {
        "phase": "Running",
        "podIP": ip,
        "podIPs": [{"ip": ip}],
        "hostIP": NODE_UNDERLAY[0],
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    remote_pods
        .patch_status(POD, &PatchParams::default(), &Patch::Merge(&running))
        .await
        .context("writing the provider pod's status")?;
    // Cluster-b's pod address means cluster-a's own pod here: the virtual
    // kubelet reports it as cluster-a sees cluster-b's pods.
    let seen = network::remap(ip, POD_CIDRS[0], REMAP_POOLS[0])?;
    let reflected = wait_for(STEP, || async {
        let p = get_json(&pods, POD).await?;
        let phase = p.pointer("/status/phase").and_then(Value::as_str);
        let pod_ip = p.pointer("/status/podIP").and_then(Value::as_str);
        match (phase, pod_ip) {
            (Some("Running"), Some(pod_ip)) if pod_ip == seen => Ok(format!(
                "Running, podIP {pod_ip} (cluster-b's {ip}, remapped)"
            )),
            (phase, pod_ip) => Err(format!("phase {phase:?}, podIP {pod_ip:?} (wanted {seen})")),
        }
    })
    .await;
    report.check(
        &format!(
            "{}: pod {OFFLOADED_NAMESPACE}/{POD} reports the provider's status, its address remapped",
            a.id
        ),
        reflected,
    );
    report.say(kubectl(
        &a.kubeconfig,
        &["get", "pods", "-n", OFFLOADED_NAMESPACE],
    )?);
    Ok(())
}
