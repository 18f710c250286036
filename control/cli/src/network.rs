//! `strait network test`: what each peer's tunnel reports. The gateways
//! probe through the tunnel and publish the result in their Connection;
//! without a Connection there is nothing to probe through, and the command
//! says what it would have probed.
use std::io::Write;

use kube::{api::ListParams, Api, Client};
use strait_api::{
    core::ForeignCluster,
    names::{label::REMOTE_CLUSTER_ID, tenant_namespace},
    networking::{Configuration, Connection, ConnectionState},
};

use crate::error::{next_for, Error};

pub async fn test(client: &Client, remote: Option<&str>, out: &mut dyn Write) -> Result<(), Error> {
    let here = "this cluster";
    let failed = |what: &str, e: kube::Error| {
        let next = next_for(&e, here);
        Error::api(format!("listing {what}"), e, next)
    };
    let peers: Vec<String> = Api::<ForeignCluster>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| failed("ForeignClusters", e))?
        .items
        .into_iter()
        .filter(|fc| fc.spec.modules.network)
        .map(|fc| fc.spec.cluster_id)
        .filter(|id| remote.is_none_or(|r| r == id))
        .collect();
    if peers.is_empty() {
        return Err(Error::failed(
            match remote {
                Some(r) => format!("no ForeignCluster {r} with the network module"),
                None => "no peering uses the network module".to_owned(),
            },
            "peer with the network module first: strait peer ... --modules network,...",
        ));
    }
    let mut broken = Vec::new();
    for peer in &peers {
        let namespace = tenant_namespace(peer);
        let selector = ListParams::default().labels(&format!("{REMOTE_CLUSTER_ID}={peer}"));
        let connection = Api::<Connection>::all(client.clone())
            .list(&selector)
            .await
            .map_err(|e| failed("Connections", e))?
            .items
            .into_iter()
            .next();
        let target = Api::<Configuration>::namespaced(client.clone(), &namespace)
            .list(&ListParams::default())
            .await
            .map_err(|e| failed("Configurations", e))?
            .items
            .into_iter()
            .find_map(|c| c.status.and_then(|s| s.remote))
            .map_or("the peer's pod CIDR (not allocated yet)".to_owned(), |r| {
                r.cidr.pod.join(",")
            });
        match connection.and_then(|c| c.status) {
            Some(status) if status.value == ConnectionState::Connected => {
                let latency = status
                    .latency
                    .map_or("not measured yet".to_owned(), |l| l.value);
                writeln!(
                    out,
                    "✓ {peer}: tunnel Connected, round trip {latency} (to {target})"
                )?;
            }
            Some(status) => {
                writeln!(
                    out,
                    "✗ {peer}: tunnel {:?}: {} (would probe {target})",
                    status.value, status.message
                )?;
                broken.push(peer.clone());
            }
            None => {
                writeln!(
                    out,
                    "✗ {peer}: no tunnel yet (no Connection labelled {REMOTE_CLUSTER_ID}={peer}); would probe {target} through the gateway"
                )?;
                broken.push(peer.clone());
            }
        }
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(Error::failed(
            format!("no working tunnel to {}", broken.join(", ")),
            "see `strait status` for NetworkReady's reason, and the GatewayServer/GatewayClient and Connection in the peer's tenant namespace",
        ))
    }
}
