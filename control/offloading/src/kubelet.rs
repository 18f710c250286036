//! How a VirtualNode's virtual kubelet is started: one rendering of its
//! command-line arguments, used by both ways of running it (a child process
//! in the local simulation, a Deployment in a cluster).

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, sync::Mutex, time::Duration};

use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    api::{DeleteParams, Patch, PatchParams},
    Api, Client, ResourceExt as _,
};
use serde_json::json;
use strait_api::{names, offloading::VirtualNode};

use crate::{ipmap::CidrRemap, Error};

/// Field manager of the Deployments the controller applies.
pub const FIELD_MANAGER: &str = "strait-offloading-virtualnode";

/// What every virtual kubelet of this cluster shares.
#[derive(Debug, Clone)]
pub struct KubeletSettings {
    /// This (consumer) cluster's ID, for DefaultName namespaces and origin labels.
    pub local_cluster_id: String,
    /// How long the provider may be unreachable before the node turns NotReady.
    pub not_ready_grace: Duration,
    /// How often the kubelet looks at the provider and writes the node status.
    pub status_interval: Duration,
    /// Address the kubelet endpoints (logs) listen on.
    pub listen_address: String,
    /// Address published on the Node for the API server to reach the endpoints.
    pub node_ip: String,
    /// Workers of the pod reflector and of each other reflector.
    pub pod_workers: usize,
    pub reflection_workers: usize,
    /// Provider pod CIDRs seen locally under another prefix (network module remapping).
    pub pod_cidr_remaps: Vec<CidrRemap>,
    /// PEM CA of the client certificates the API server shows kubelets
    /// (`--client-ca-file`). A Deployment always gets the cluster's
    /// (`kube-root-ca.crt`, mounted at [`IN_CLUSTER_CLIENT_CA_FILE`]).
    pub client_ca_file: Option<String>,
    /// How long the kubelet keeps a denied authorization
    /// (`--authorization-cache-denied-ttl-seconds`; its default when unset).
    pub authorization_denied_ttl: Option<Duration>,
    /// Where provider pods reach the consumer's API server
    /// (`--consumer-api-address`; pods keep the provider's when unset).
    pub consumer_api_address: Option<SocketAddr>,
}

/// Where a virtual kubelet Deployment finds the cluster's client CA: the
/// `ca.crt` of the `kube-root-ca.crt` ConfigMap every namespace has (the
/// CA of the API server's kubelet client certificate in kubeadm-style
/// clusters).
pub const IN_CLUSTER_CLIENT_CA_FILE: &str = "/etc/strait/client-ca/ca.crt";
const IN_CLUSTER_CLIENT_CA_DIR: &str = "/etc/strait/client-ca";

impl Default for KubeletSettings {
    fn default() -> Self {
        Self {
            local_cluster_id: String::new(),
            not_ready_grace: Duration::from_secs(10),
            status_interval: Duration::from_secs(1),
            listen_address: "0.0.0.0:10250".into(),
            node_ip: "$(POD_IP)".into(),
            pod_workers: 8,
            reflection_workers: 2,
            pod_cidr_remaps: Vec::new(),
            client_ca_file: None,
            authorization_denied_ttl: None,
            consumer_api_address: None,
        }
    }
}

/// The Node a VirtualNode registers: named after it.
pub fn node_name(virtual_node: &VirtualNode) -> String {
    virtual_node.name_any()
}

/// `strait-virtual-kubelet`'s arguments for `virtual_node`.
pub fn kubelet_args(virtual_node: &VirtualNode, settings: &KubeletSettings) -> Vec<String> {
    let mut args = vec![
        "--virtual-node".to_owned(),
        format!(
            "{}/{}",
            virtual_node.namespace().unwrap_or_default(),
            virtual_node.name_any()
        ),
        "--node-name".to_owned(),
        node_name(virtual_node),
        "--local-cluster-id".to_owned(),
        settings.local_cluster_id.clone(),
        "--not-ready-grace-seconds".to_owned(),
        settings.not_ready_grace.as_secs().max(1).to_string(),
        "--node-status-interval-ms".to_owned(),
        settings.status_interval.as_millis().to_string(),
        "--listen-address".to_owned(),
        settings.listen_address.clone(),
        "--node-ip".to_owned(),
        settings.node_ip.clone(),
        "--pod-workers".to_owned(),
        settings.pod_workers.to_string(),
        "--reflection-workers".to_owned(),
        settings.reflection_workers.to_string(),
    ];
    for remap in &settings.pod_cidr_remaps {
        args.push("--pod-cidr-remap".to_owned());
        args.push(remap.to_string());
    }
    if let Some(address) = settings.consumer_api_address {
        args.push("--consumer-api-address".to_owned());
        args.push(address.to_string());
    }
    if let Some(file) = &settings.client_ca_file {
        args.push("--client-ca-file".to_owned());
        args.push(file.clone());
    }
    if let Some(ttl) = settings.authorization_denied_ttl {
        args.push("--authorization-cache-denied-ttl-seconds".to_owned());
        args.push(ttl.as_secs().to_string());
    }
    args
}

/// Name of the Deployment of `virtual_node`'s kubelet.
pub fn deployment_name(virtual_node: &VirtualNode) -> String {
    format!(
        "strait-vk-{}-{}",
        virtual_node.namespace().unwrap_or_default(),
        virtual_node.name_any()
    )
}

/// The Deployment that runs `virtual_node`'s kubelet in a cluster, in
/// `namespace` (the release namespace, where its ServiceAccount and RBAC
/// are). VirtualNodes live in tenant namespaces, so the Deployment cannot
/// be owned by one (an owner is looked for in the dependent's namespace):
/// labels name its VirtualNode, and the VirtualNode's finalizer deletes it.
pub fn render_deployment(
    virtual_node: &VirtualNode,
    settings: &KubeletSettings,
    image: &str,
    service_account: &str,
    namespace: &str,
) -> Result<Deployment, Error> {
    let labels = json!({
        "app.kubernetes.io/name": "strait-virtual-kubelet",
        names::label::MANAGED_BY: names::label::MANAGED_BY_VALUE,
        names::label::VIRTUAL_NODE: virtual_node.name_any(),
    });
    // In a cluster the kubelet trusts the cluster's client CA.
    let settings = &KubeletSettings {
        client_ca_file: Some(IN_CLUSTER_CLIENT_CA_FILE.to_owned()),
        ..settings.clone()
    };
    let deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(virtual_node),
            "namespace": namespace,
            "labels": labels,
            "annotations": {names::annotation::VIRTUAL_NODE: key(virtual_node)},
        },
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "serviceAccountName": service_account,
                    "containers": [{
                        "name": "virtual-kubelet",
                        "image": image,
                        "args": kubelet_args(virtual_node, settings),
                        "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                        "ports": [{"name": "kubelet", "containerPort": 10250}],
                        "volumeMounts": [{"name": "client-ca", "mountPath": IN_CLUSTER_CLIENT_CA_DIR, "readOnly": true}],
                        "resources": {"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"memory": "256Mi"}},
                    }],
                    "volumes": [{"name": "client-ca", "configMap": {"name": "kube-root-ca.crt"}}],
                },
            },
        },
    });
    Ok(serde_json::from_value(deployment)?)
}

/// Runs and stops virtual kubelets.
pub enum Launcher {
    /// Child processes of the controller (local simulation).
    Process(ProcessLauncher),
    /// A Deployment per VirtualNode (in a cluster), in `namespace`.
    Deployment {
        image: String,
        service_account: String,
        namespace: String,
    },
}

impl Launcher {
    /// Makes sure `virtual_node`'s kubelet runs with the current arguments.
    pub async fn ensure(
        &self,
        client: &Client,
        virtual_node: &VirtualNode,
        settings: &KubeletSettings,
    ) -> Result<(), Error> {
        match self {
            Self::Process(launcher) => {
                launcher.ensure(&key(virtual_node), kubelet_args(virtual_node, settings))
            }
            Self::Deployment {
                image,
                service_account,
                namespace,
            } => {
                let deployment =
                    render_deployment(virtual_node, settings, image, service_account, namespace)?;
                Api::<Deployment>::namespaced(client.clone(), namespace)
                    .patch(
                        &deployment.name_any(),
                        &PatchParams::apply(FIELD_MANAGER).force(),
                        &Patch::Apply(&deployment),
                    )
                    .await?;
                Ok(())
            }
        }
    }

    pub async fn stop(&self, client: &Client, virtual_node: &VirtualNode) -> Result<(), Error> {
        match self {
            Self::Process(launcher) => {
                launcher.stop(&key(virtual_node)).await;
                Ok(())
            }
            Self::Deployment { namespace, .. } => {
                match Api::<Deployment>::namespaced(client.clone(), namespace)
                    .delete(&deployment_name(virtual_node), &DeleteParams::default())
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
                    Err(error) => Err(error.into()),
                }
            }
        }
    }

    /// Whether the kubelet of `virtual_node` is running (always assumed for
    /// Deployments, whose pods the Node's readiness speaks for).
    pub fn is_running(&self, virtual_node: &VirtualNode) -> bool {
        match self {
            Self::Process(launcher) => launcher.is_running(&key(virtual_node)),
            Self::Deployment { .. } => true,
        }
    }
}

fn key(virtual_node: &VirtualNode) -> String {
    format!(
        "{}/{}",
        virtual_node.namespace().unwrap_or_default(),
        virtual_node.name_any()
    )
}

struct Child {
    args: Vec<String>,
    process: tokio::process::Child,
}

/// Virtual kubelets as child processes that die with the controller.
pub struct ProcessLauncher {
    binary: PathBuf,
    env: Vec<(String, String)>,
    children: Mutex<HashMap<String, Child>>,
}

impl ProcessLauncher {
    pub fn new(binary: PathBuf) -> Self {
        Self {
            binary,
            env: Vec::new(),
            children: Mutex::new(HashMap::new()),
        }
    }

    /// Sets an environment variable of the kubelets (for example the
    /// KUBECONFIG of the cluster they register in).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn ensure(&self, key: &str, args: Vec<String>) -> Result<(), Error> {
        let mut children = self.lock();
        if let Some(child) = children.get_mut(key) {
            let exited = child.process.try_wait().ok().flatten();
            if child.args == args && exited.is_none() {
                return Ok(());
            }
            if let Some(status) = exited {
                tracing::warn!(virtual_node = key, %status, "virtual kubelet exited, restarting it");
            }
            // Changed arguments: the old one is killed on drop.
            let _ = child.process.start_kill();
        }
        let mut command = tokio::process::Command::new(&self.binary);
        command
            .args(&args)
            .arg("--exit-with-parent")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .kill_on_drop(true);
        let process = command.spawn().map_err(|source| Error::Spawn {
            binary: self.binary.display().to_string(),
            source,
        })?;
        tracing::info!(
            virtual_node = key,
            pid = process.id(),
            "virtual kubelet started"
        );
        children.insert(key.to_owned(), Child { args, process });
        Ok(())
    }

    fn is_running(&self, key: &str) -> bool {
        self.lock()
            .get_mut(key)
            .is_some_and(|child| matches!(child.process.try_wait(), Ok(None)))
    }

    /// The process IDs of the running kubelets (for measurements).
    pub fn pids(&self) -> Vec<u32> {
        self.lock()
            .values()
            .filter_map(|child| child.process.id())
            .collect()
    }

    async fn stop(&self, key: &str) {
        let child = self.lock().remove(key);
        if let Some(mut child) = child {
            let _ = child.process.start_kill();
            let _ = child.process.wait().await;
            tracing::info!(virtual_node = key, "virtual kubelet stopped");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use strait_api::{offloading::VirtualNodeSpec, SecretReference};

    fn virtual_node() -> VirtualNode {
        let mut vn = VirtualNode::new(
            "cluster-b-gpu",
            VirtualNodeSpec {
                cluster_id: "cluster-b".into(),
                kubeconfig_secret_ref: SecretReference {
                    name: "cluster-b-kubeconfig".into(),
                    namespace: None,
                },
                resource_slice_name: None,
                resources: Default::default(),
                create_node: true,
                labels: Default::default(),
                annotations: Default::default(),
                taints: Vec::new(),
                offloading_patch: None,
            },
        );
        vn.metadata.namespace = Some("strait-tenant-cluster-b".into());
        vn.metadata.uid = Some("uid-1".into());
        vn
    }

    #[test]
    fn the_deployment_runs_the_same_arguments_as_the_process() {
        let settings = KubeletSettings {
            local_cluster_id: "cluster-a".into(),
            pod_cidr_remaps: vec!["10.0.0.0/16=10.70.0.0/16".parse().expect("remap")],
            consumer_api_address: Some("[fd00::10]:6443".parse().expect("address")),
            ..KubeletSettings::default()
        };
        let vn = virtual_node();
        let args = kubelet_args(&vn, &settings);
        let pair = |flag: &str| {
            let at = args.iter().position(|a| a == flag).expect(flag);
            args[at + 1].clone()
        };
        assert_eq!(
            pair("--virtual-node"),
            "strait-tenant-cluster-b/cluster-b-gpu"
        );
        assert_eq!(pair("--node-name"), "cluster-b-gpu");
        assert_eq!(pair("--local-cluster-id"), "cluster-a");
        assert_eq!(pair("--pod-cidr-remap"), "10.0.0.0/16=10.70.0.0/16");
        assert_eq!(pair("--node-ip"), "$(POD_IP)");
        assert_eq!(pair("--consumer-api-address"), "[fd00::10]:6443");

        let deployment = render_deployment(&vn, &settings, "strait/vk:1", "strait-vk", "strait")
            .expect("renders");
        assert_eq!(
            deployment.metadata.name.as_deref(),
            Some("strait-vk-strait-tenant-cluster-b-cluster-b-gpu")
        );
        assert_eq!(
            deployment.metadata.namespace.as_deref(),
            Some("strait"),
            "next to its ServiceAccount"
        );
        assert_eq!(
            deployment.metadata.owner_references, None,
            "no owner across namespaces"
        );
        let pod = deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod template");
        let container = &pod.containers[0];
        // The same, and in a cluster the cluster's client CA.
        let mut in_cluster = args.clone();
        in_cluster.extend([
            "--client-ca-file".to_owned(),
            IN_CLUSTER_CLIENT_CA_FILE.to_owned(),
        ]);
        assert_eq!(container.args.as_ref(), Some(&in_cluster));
        let volumes = pod.volumes.as_ref().expect("volumes");
        assert_eq!(
            volumes[0].config_map.as_ref().map(|c| c.name.as_str()),
            Some("kube-root-ca.crt")
        );
        let mounts = container.volume_mounts.as_ref().expect("mounts");
        assert_eq!(
            (mounts[0].name.as_str(), mounts[0].mount_path.as_str()),
            ("client-ca", IN_CLUSTER_CLIENT_CA_DIR)
        );
        assert_eq!(container.image.as_deref(), Some("strait/vk:1"));
        assert_eq!(pod.service_account_name.as_deref(), Some("strait-vk"));
        let env = container.env.as_ref().expect("env");
        assert_eq!(
            env[0].name, "POD_IP",
            "--node-ip $(POD_IP) is expanded from it"
        );
    }
}
