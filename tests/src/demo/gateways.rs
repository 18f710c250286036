//! The tunnel of act 4, from the peering of act 3 alone: once the
//! ForeignClusters select the network module, cluster-a's network module
//! makes a GatewayServer on cluster-b (through its Identity) and a
//! GatewayClient here dialling the endpoint the server publishes, and
//! exchanges the gateways' keys; no gateway CR is written by hand. Each
//! cluster's network module runs its `strait-gateway` (a child
//! of its strait-controller, in the cluster's gateway pod namespace) and
//! reports the tunnel in a Connection and the ForeignCluster's NetworkReady.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use kube::Api;
use serde_json::Value;
use strait_api::{
    core::ForeignCluster,
    names::{self, label::PEERING_GATEWAY},
    networking::{Connection, GatewayClient, GatewayServer, PublicKey},
};
use strait_gateway::status::GatewayStatus;
use strait_network::gateway::{key_exchange, local_key_name, peering_gateways, remote_key_name};
use tokio::runtime::Runtime;

use super::{
    control_plane::Clusters,
    k8s::{get_json, kubectl, wait_condition, wait_for, STEP},
    Report, Stage,
};
use crate::gateway::underlay_v4;

/// Where cluster `index`'s controller keeps its gateways' files.
pub fn state_dir(stage: &Stage, index: usize) -> PathBuf {
    stage.path(&format!("gateways-{}", ["a", "b"][index]))
}

/// The address cluster `index`'s gateway pod has on the internet bridge.
pub fn advertise_address(index: usize) -> String {
    underlay_v4(index as u8 + 1)
}

/// One cluster's gateway: the CR's namespace and name (named after the peer).
pub struct GatewayRef {
    pub namespace: String,
    pub name: String,
    state_dir: PathBuf,
}

impl GatewayRef {
    fn new(stage: &Stage, index: usize, peer: &str) -> Self {
        Self {
            namespace: names::tenant_namespace(peer),
            name: peer.to_owned(),
            state_dir: state_dir(stage, index),
        }
    }

    /// The status file the gateway refreshes (what the Connection is made from).
    pub fn status(&self) -> Result<GatewayStatus, String> {
        let file = self
            .state_dir
            .join(format!("{}.{}", self.namespace, self.name))
            .join("status.json");
        GatewayStatus::read(&file).map_err(|e| e.to_string())
    }

    /// Waits until the gateway's status satisfies `done`, for at most `limit`.
    pub fn wait_status(
        &self,
        limit: Duration,
        done: impl Fn(&GatewayStatus) -> bool,
    ) -> Result<GatewayStatus, String> {
        let deadline = Instant::now() + limit;
        loop {
            let last = self.status();
            match last {
                Ok(status) if done(&status) => return Ok(status),
                _ if Instant::now() >= deadline => {
                    return Err(format!(
                        "gateway {}/{} after {limit:?}: {last:?}",
                        self.namespace, self.name
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }
}

/// The two gateways, cluster-a's first.
pub struct Tunnel {
    pub gateways: [GatewayRef; 2],
}

pub fn act(
    runtime: &Runtime,
    stage: &Stage,
    clusters: &Clusters,
    report: &mut Report,
) -> Result<Tunnel> {
    let (a, b) = (&clusters.a, &clusters.b);
    let tunnel = Tunnel {
        gateways: [
            GatewayRef::new(stage, 0, b.id),
            GatewayRef::new(stage, 1, a.id),
        ],
    };
    let [gw_a, gw_b] = &tunnel.gateways;
    report.say(
        "the network module of each controller runs gateways from GatewayServer/GatewayClient CRs \
         (--gateway-binary strait-gateway --gateway-netns <the gateway pod's namespace>); \
         the peerings select the network module:",
    );
    for (cluster, peer) in [(a, b.id), (b, a.id)] {
        report.say(format!(
            "{} $ kubectl patch foreigncluster {peer} --type merge -p '{{\"spec\":{{\"modules\":{{\"network\":true}}}}}}'",
            cluster.id
        ));
        kubectl(
            &cluster.kubeconfig,
            &[
                "patch",
                "foreigncluster",
                peer,
                "--type",
                "merge",
                "-p",
                r#"{"spec":{"modules":{"network":true}}}"#,
            ],
        )?;
    }

    let selected = Instant::now();
    report.say(
        "nobody writes a gateway CR: cluster-a's network module makes the peering's gateways \
         itself, the GatewayServer <cluster-a> in its tenant namespace on cluster-b (through \
         the control-plane Identity cluster-b issued it) and, once that server publishes its \
         endpoint, the GatewayClient <cluster-b> here dialling it",
    );
    let servers: Api<GatewayServer> = Api::namespaced(b.client(), &gw_b.namespace);
    let endpoint = runtime.block_on(wait_for(STEP, || async {
        let server = get_json(&servers, &gw_b.name).await?;
        if server.pointer(&format!(
            "/metadata/labels/{}",
            PEERING_GATEWAY.replace('/', "~1")
        )) != Some(&Value::from("true"))
        {
            return Err(format!("GatewayServer {} is not the peering's", gw_b.name));
        }
        let endpoint = server
            .pointer("/status/endpoint")
            .cloned()
            .ok_or("no status.endpoint yet")?;
        let address = endpoint
            .pointer("/addresses/0")
            .and_then(Value::as_str)
            .ok_or("no address in status.endpoint")?
            .to_owned();
        let port = endpoint
            .get("port")
            .and_then(Value::as_i64)
            .ok_or("no port in status.endpoint")?;
        Ok((address, port))
    }));
    let published = report.check(
        &format!(
            "{}: the peering made GatewayServer {}/{}, which publishes where to dial it",
            b.id, gw_b.namespace, gw_b.name
        ),
        endpoint
            .clone()
            .map(|(address, port)| format!("status.endpoint {address}:{port}")),
    );
    let Ok((address, port)) = endpoint else {
        bail!("cluster-b's gateway server published no endpoint");
    };
    if !published || address != advertise_address(1) {
        bail!("cluster-b's gateway server is at {address}, not on the internet bridge");
    }
    let clients: Api<GatewayClient> = Api::namespaced(a.client(), &gw_a.namespace);
    let dialled = runtime.block_on(wait_for(STEP, || async {
        let client = get_json(&clients, &gw_a.name).await?;
        let to = (
            client
                .pointer("/spec/endpoint/addresses/0")
                .and_then(Value::as_str),
            client
                .pointer("/spec/endpoint/port")
                .and_then(Value::as_i64),
        );
        match to {
            (Some(a), Some(p)) if a == address && p == port => Ok(format!(
                "spec.endpoint {a}:{p}, MTU {}",
                client.pointer("/spec/mtu").unwrap_or(&Value::Null)
            )),
            other => Err(format!("GatewayClient {} dials {other:?}", gw_a.name)),
        }
    }));
    report.check(
        &format!(
            "{}: the peering made GatewayClient {}/{} dialling that endpoint",
            a.id, gw_a.namespace, gw_a.name
        ),
        dialled,
    );
    let foreign: Api<ForeignCluster> = Api::all(a.client());
    report.check(
        &format!(
            "{}: ForeignCluster {} {}",
            a.id,
            b.id,
            peering_gateways::CONDITION
        ),
        runtime.block_on(wait_condition(&foreign, b.id, peering_gateways::CONDITION)),
    );

    report.say(
        "the key exchange is the peering's: cluster-a's network module, through the \
         control-plane Identity cluster-b issued it, writes its gateway's key as PublicKey \
         remote-<server> in its tenant namespace on cluster-b and copies cluster-b's \
         local-<server> back as remote-<client>; nobody copies a key by hand",
    );
    let sides = [(a, gw_a, b, gw_b), (b, gw_b, a, gw_a)];
    for (from, from_gw, to, to_gw) in sides {
        let keys: Api<PublicKey> = Api::namespaced(from.client(), &from_gw.namespace);
        let local = local_key_name(&from_gw.name);
        let key = runtime.block_on(wait_for(STEP, || async {
            let key = get_json(&keys, &local).await?;
            key.pointer("/spec/publicKey")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .ok_or_else(|| format!("{local} has no spec.publicKey"))
        }));
        let shown = key.clone().map(|k| format!("{local}: {k}"));
        if !report.check(
            &format!("{}: its gateway's PublicKey {local} is published", from.id),
            shown,
        ) {
            bail!("{}'s gateway published no key", from.id);
        }
        let key = key.map_err(anyhow::Error::msg)?;
        let peer_keys: Api<PublicKey> = Api::namespaced(to.client(), &to_gw.namespace);
        let remote = remote_key_name(&to_gw.name);
        let arrived = runtime.block_on(wait_for(STEP, || async {
            let found = get_json(&peer_keys, &remote).await?;
            match found.pointer("/spec/publicKey").and_then(Value::as_str) {
                Some(k) if k == key => Ok(format!("{}/{remote} = {k}", to_gw.namespace)),
                other => Err(format!("{remote} holds {other:?}, not {key}")),
            }
        }));
        report.check(
            &format!(
                "{}: {}'s key arrived as PublicKey {remote} through the peering",
                to.id, from.id
            ),
            arrived,
        );
    }
    let foreign: Api<ForeignCluster> = Api::all(a.client());
    report.check(
        &format!("{}: ForeignCluster {} GatewayKeysExchanged", a.id, b.id),
        runtime.block_on(wait_condition(&foreign, b.id, key_exchange::CONDITION)),
    );

    for (cluster, gateway, peer) in [(a, gw_a, b.id), (b, gw_b, a.id)] {
        let connections: Api<Connection> = Api::namespaced(cluster.client(), &gateway.namespace);
        let connected = runtime.block_on(wait_for(STEP, || async {
            let connection = get_json(&connections, &gateway.name).await?;
            let state = connection
                .pointer("/status/value")
                .and_then(Value::as_str)
                .unwrap_or("none");
            let message = connection
                .pointer("/status/message")
                .and_then(Value::as_str)
                .unwrap_or("");
            if state == "Connected" {
                Ok(format!(
                    "Connected {:.1?} after the network module was selected; {message}",
                    selected.elapsed()
                ))
            } else {
                Err(format!("{state}: {message}"))
            }
        }));
        report.check(
            &format!(
                "{}: Connection {} of its strait-gateway is Connected",
                cluster.id, gateway.name
            ),
            connected,
        );
        let foreign: Api<ForeignCluster> = Api::all(cluster.client());
        report.check(
            &format!("{}: ForeignCluster {peer} NetworkReady", cluster.id),
            runtime.block_on(wait_condition(&foreign, peer, "NetworkReady")),
        );
    }
    report.say(kubectl(
        &a.kubeconfig,
        &["get", "gatewayclients,connections,publickeys", "-A"],
    )?);
    Ok(tunnel)
}
