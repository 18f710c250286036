//! A Service whose pod runs in cluster-b, used from cluster-a: Service
//! `shop/web` on cluster-a selects the offloaded pod of act 3, which runs on
//! cluster-b (the pod namespace of cluster-b's node) at the same address
//! cluster-a's own pod has. Its endpoint must be cluster-b's pod as
//! cluster-a sees it (remapped), or the Service would lead to cluster-a's
//! own pod.
//!
//! The simulation has no EndpointSlice controller and no kube-proxy. The
//! demo plays the first from the API, as the real one does: the Service's
//! selector, the matching pods' status.podIP (written by cluster-a's virtual
//! kubelet, remapped). For kube-proxy, the client in cluster-a's pod reads
//! the Service's EndpointSlices from the API and connects to each endpoint
//! itself: the address kube-proxy's DNAT of the Service's IP would pick.

use std::net::SocketAddr;

use anyhow::{bail, Context as _, Result};
use k8s_openapi::api::{core::v1::Pod, discovery::v1::EndpointSlice};
use kube::{
    api::{ListParams, Patch, PatchParams},
    Api,
};
use serde_json::{json, Value};
use strait_api::offloading::{NamespaceOffloading, ShadowEndpointSlice};
use tokio::runtime::Runtime;

use super::{
    control_plane::{Clusters, OFFLOADED_NAMESPACE, POD},
    k8s::{get_json, kubectl, wait_for, STEP},
    Report, Stage,
};
use crate::{traffic::tcp_transfer_translated, NetNs};

const SERVICE: &str = "web";
const SERVICE_PORT: u16 = 80;
const TARGET_PORT: u16 = 8080;
/// What the Kubernetes EndpointSlice controller sets; the demo plays it.
const ENDPOINTSLICE_MANAGER: &str = "endpointslice-controller.k8s.io";

/// The pods at both ends: the client's in cluster-a, and the namespace the
/// offloaded pod runs in on cluster-b.
pub struct Pods<'a> {
    pub consumer: &'a NetNs,
    pub provider: &'a NetNs,
    /// The offloaded pod's address in cluster-b.
    pub provider_ip: &'a str,
    /// That address as cluster-a sees it.
    pub remapped: &'a str,
}

pub fn act(
    runtime: &Runtime,
    stage: &Stage,
    clusters: &Clusters,
    pods: &Pods<'_>,
    report: &mut Report,
) -> Result<()> {
    let Pods {
        consumer: consumer_pod,
        provider: provider_pod,
        provider_ip,
        remapped,
    } = *pods;
    let a = &clusters.a;
    let service = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {SERVICE}\n  namespace: {OFFLOADED_NAMESPACE}\nspec:\n  selector:\n    app: {POD}\n  ports:\n    - name: http\n      port: {SERVICE_PORT}\n      targetPort: {TARGET_PORT}\n      protocol: TCP\n"
    );
    let file = stage.path("service.yaml");
    std::fs::write(&file, service)?;
    report.say(format!(
        "{} $ kubectl apply --server-side -f service.yaml   # Service {OFFLOADED_NAMESPACE}/{SERVICE}, selector app={POD}",
        a.id
    ));
    report.say(kubectl(
        &a.kubeconfig,
        &["apply", "--server-side", "-f", &file.display().to_string()],
    )?);

    report.say(format!(
        "the demo, as {}'s EndpointSlice controller, lists the pods the selector matches and writes their status.podIP:",
        a.id
    ));
    let slice = runtime.block_on(write_endpoint_slice(clusters))?;
    let slices: Api<EndpointSlice> = Api::namespaced(a.client(), OFFLOADED_NAMESPACE);
    let listed = runtime.block_on(service_endpoints(&slices))?;
    let addresses: Vec<String> = listed.iter().map(|(ip, _)| ip.clone()).collect();
    let remapped_ok = report.check(
        &format!(
            "{}: EndpointSlice {slice} lists the pod at cluster-b's address as {} sees it",
            a.id, a.id
        ),
        if addresses == [remapped] {
            Ok(format!(
                "endpoints {addresses:?}: cluster-b's {provider_ip}, remapped by the virtual kubelet"
            ))
        } else {
            Err(format!(
                "endpoints {addresses:?}, wanted [{remapped}] (cluster-b's {provider_ip} remapped)"
            ))
        },
    );

    // The virtual kubelet reflects the slice to cluster-b, where the pod is
    // known by its own address.
    let offloadings: Api<NamespaceOffloading> = Api::namespaced(a.client(), OFFLOADED_NAMESPACE);
    let remote_namespace = runtime
        .block_on(get_json(&offloadings, "offloading"))
        .map_err(anyhow::Error::msg)?
        .pointer("/status/remoteNamespaceName")
        .and_then(Value::as_str)
        .context("namespace shop has no remote namespace")?
        .to_owned();
    let shadows: Api<ShadowEndpointSlice> = Api::namespaced(clusters.b.client(), &remote_namespace);
    let reflected = runtime.block_on(wait_for(STEP, || async {
        let list = shadows
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let seen: Vec<String> = list
            .items
            .iter()
            .filter_map(|s| serde_json::to_value(s).ok())
            .flat_map(|s| addresses_of(&s, "/spec/template/endpoints"))
            .collect();
        if seen == [provider_ip] {
            Ok(format!(
                "ShadowEndpointSlice in {remote_namespace}: endpoints {seen:?}"
            ))
        } else {
            Err(format!(
                "ShadowEndpointSlices in {remote_namespace} list {seen:?}, wanted [{provider_ip}]"
            ))
        }
    }));
    report.check(
        &format!(
            "{}: the slice is reflected with the pod's own address",
            clusters.b.id
        ),
        reflected,
    );
    if !remapped_ok {
        bail!("the Service's endpoint is not cluster-b's pod as cluster-a sees it");
    }

    report.say(format!(
        "no kube-proxy here: the client in {}'s pod reads the Service's EndpointSlices and connects \
         to each endpoint, the address kube-proxy's DNAT of the Service's IP would choose",
        a.id
    ));
    let bytes = 1 << 20;
    for (address, port) in listed {
        let target = SocketAddr::new(address.parse()?, port);
        let listen = SocketAddr::new(provider_ip.parse()?, port);
        let acked = tcp_transfer_translated(consumer_pod, provider_pod, target, listen, bytes)?;
        report.check(
            &format!(
                "{}'s pod reaches Service {OFFLOADED_NAMESPACE}/{SERVICE} at endpoint {target} in cluster-b",
                a.id
            ),
            if acked == bytes as u64 {
                Ok(format!(
                    "1 MiB acknowledged by cluster-b's pod listening on {listen}"
                ))
            } else {
                Err(format!("{acked} of {bytes} bytes"))
            },
        );
    }
    Ok(())
}

/// Plays the EndpointSlice controller for the Service: one slice with the
/// ready pods the selector matches, by their status.podIP.
async fn write_endpoint_slice(clusters: &Clusters) -> Result<String> {
    let a = &clusters.a;
    let pods: Api<Pod> = Api::namespaced(a.client(), OFFLOADED_NAMESPACE);
    let matching = pods
        .list(&ListParams::default().labels(&format!("app={POD}")))
        .await
        .context("listing the Service's pods")?;
    let endpoints: Vec<Value> = matching
        .items
        .iter()
        .filter_map(|pod| {
            let status = pod.status.as_ref()?;
            let ip = status.pod_ip.clone()?;
            Some(json!({
                "addresses": [ip],
                "conditions": {"ready": status.phase.as_deref() == Some("Running")},
                "nodeName": pod.spec.as_ref().and_then(|s| s.node_name.clone()),
                "targetRef": {"kind": "Pod", "namespace": OFFLOADED_NAMESPACE, "name": pod.metadata.name},
            }))
        })
        .collect();
    let name = format!("{SERVICE}-demo");
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/service-name": SERVICE,
                "endpointslice.kubernetes.io/managed-by": ENDPOINTSLICE_MANAGER,
            },
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
    });
    Api::<EndpointSlice>::namespaced(a.client(), OFFLOADED_NAMESPACE)
        .patch(
            &name,
            &PatchParams::apply(ENDPOINTSLICE_MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await
        .context("writing the Service's EndpointSlice")?;
    Ok(name)
}

/// Every (address, port) of the Service's ready endpoints, from the API.
async fn service_endpoints(slices: &Api<EndpointSlice>) -> Result<Vec<(String, u16)>> {
    let list = slices
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={SERVICE}")))
        .await
        .context("listing the Service's EndpointSlices")?;
    let mut endpoints = Vec::new();
    for slice in list.items {
        let port = slice
            .ports
            .as_ref()
            .and_then(|p| p.first())
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
            .context("an EndpointSlice without a port")?;
        for endpoint in slice.endpoints {
            let ready = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.ready)
                .unwrap_or(true);
            if ready {
                endpoints.extend(endpoint.addresses.into_iter().map(|a| (a, port)));
            }
        }
    }
    Ok(endpoints)
}

fn addresses_of(object: &Value, pointer: &str) -> Vec<String> {
    object
        .pointer(pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("addresses").and_then(Value::as_array))
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}
