//! What a gateway pod in a cluster is given, and where: the chart's gateway
//! template mounts the ConfigMap [`config_map_name`] (the gateway's
//! `--config` and the peer's public key) at [`CONFIG_DIR`], the key Secret at
//! [`KEY_DIR`], and a writable directory at [`RUN_DIR`]; the container runs
//! `strait-gateway --config=<CONFIG_DIR>/config.yaml`. The controller
//! renders both files from the CRs, as it does for a local gateway.

use std::{path::PathBuf, time::Duration};

use k8s_openapi::api::core::v1::Pod;
use kube::{api::ListParams, Api, Client, ResourceExt as _};
use serde_json::json;
use strait_api::{
    condition::{ConditionStatus, ConditionUpdate},
    networking::{ConnectionState, ConnectionStatus},
};
use strait_gateway::GatewayStatus;

/// Mount point of the gateway's ConfigMap.
pub const CONFIG_DIR: &str = "/etc/strait-gateway/config";
/// ConfigMap key of the gateway's `--config`.
pub const CONFIG_KEY: &str = "config.yaml";
/// ConfigMap key of the peer's public key (absent until the peer's
/// PublicKey exists; the gateway waits for the file).
pub const PEER_KEY_KEY: &str = "peer.key";
/// Mount point of the Secret with the private key (key `privateKey`).
pub const KEY_DIR: &str = "/etc/strait-gateway/key";
/// A writable directory (emptyDir) for the status and public key files.
pub const RUN_DIR: &str = "/run/strait-gateway";

/// The ConfigMap holding gateway `name`'s configuration, in the release namespace.
pub fn config_map_name(name: &str) -> String {
    format!("gw-{name}-config")
}

/// The Secret the controller generates a key into when the gateway's CR
/// names none, in the release namespace.
pub fn generated_key_secret_name(name: &str) -> String {
    format!("gw-{name}-key")
}

/// The gateway's files as seen inside its pod.
pub struct PodPaths {
    pub config: PathBuf,
    pub peer_key: PathBuf,
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub status: PathBuf,
}

pub fn pod_paths() -> PodPaths {
    let config_dir = PathBuf::from(CONFIG_DIR);
    PodPaths {
        config: config_dir.join(CONFIG_KEY),
        peer_key: config_dir.join(PEER_KEY_KEY),
        private_key: PathBuf::from(KEY_DIR).join(super::controller::PRIVATE_KEY_SECRET_KEY),
        public_key: PathBuf::from(RUN_DIR).join("public.key"),
        status: PathBuf::from(RUN_DIR).join("status.json"),
    }
}

/// The gateway's ConfigMap: its `--config` YAML and, once known, the
/// peer's public key.
pub fn config_map(
    name: &str,
    release_namespace: &str,
    labels: serde_json::Value,
    config_yaml: &str,
    peer_key: Option<&str>,
) -> serde_json::Value {
    let mut data = serde_json::Map::new();
    data.insert(CONFIG_KEY.to_owned(), json!(config_yaml));
    if let Some(key) = peer_key {
        data.insert(PEER_KEY_KEY.to_owned(), json!(format!("{}\n", key.trim())));
    }
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": config_map_name(name),
            "namespace": release_namespace,
            "labels": labels,
        },
        "data": data,
    })
}

/// The gateway pod's container running the NAT agent (`strait-fabric nat
/// run --from-cluster` on the tunnel interface).
pub const NAT_CONTAINER: &str = "nat";

/// The NatReady condition of gateway `name` from its pod's `nat` container.
pub async fn nat_condition(
    client: &Client,
    release_namespace: &str,
    name: &str,
    host: &str,
) -> Result<ConditionUpdate<'static>, kube::Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), release_namespace)
        .list(&ListParams::default().labels(&format!("{POD_LABEL}={name}")))
        .await?;
    Ok(nat_condition_of(&pods.items, name, host))
}

fn nat_condition_of(pods: &[Pod], name: &str, host: &str) -> ConditionUpdate<'static> {
    let condition = |status, reason, message| ConditionUpdate {
        type_: super::controller::NAT_READY,
        status,
        reason,
        message,
    };
    let Some(pod) = pods.iter().find(|p| {
        p.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_some_and(|phase| phase == "Running")
    }) else {
        return condition(
            ConditionStatus::False,
            "WaitingForGateway",
            format!("no running gateway pod labelled {POD_LABEL}={name} yet"),
        );
    };
    let pod_name = pod.name_any();
    let has_container = pod
        .spec
        .as_ref()
        .is_some_and(|s| s.containers.iter().any(|c| c.name == NAT_CONTAINER));
    if !has_container {
        return condition(
            ConditionStatus::False,
            "NoNatContainer",
            format!(
                "gateway pod {pod_name} has no `{NAT_CONTAINER}` container (its template runs no \
                 NAT agent): the peer's remapped CIDRs are not translated; use the chart's \
                 gateway template or add the container to spec.templateRef's"
            ),
        );
    }
    let status = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|all| all.iter().find(|c| c.name == NAT_CONTAINER));
    let restarts = status.map_or(0, |s| s.restart_count);
    let state = status.and_then(|s| s.state.as_ref());
    match state {
        Some(state) if state.running.is_some() => condition(
            ConditionStatus::True,
            "Running",
            format!(
                "container {NAT_CONTAINER} of pod {pod_name} runs (restarted {restarts} times); it \
                 reports as host {host} in the NatConfigurations' status.hosts"
            ),
        ),
        other => {
            let why = other
                .and_then(|s| {
                    s.waiting
                        .as_ref()
                        .map(|w| {
                            format!(
                                "waiting: {} {}",
                                w.reason.as_deref().unwrap_or_default(),
                                w.message.as_deref().unwrap_or_default()
                            )
                        })
                        .or_else(|| {
                            s.terminated.as_ref().map(|t| {
                                format!(
                                    "terminated with exit code {}: {}",
                                    t.exit_code,
                                    t.reason.as_deref().unwrap_or_default()
                                )
                            })
                        })
                })
                .unwrap_or_else(|| "not started".to_owned());
            condition(
                ConditionStatus::False,
                "NatAgentNotRunning",
                format!(
                    "container {NAT_CONTAINER} of pod {pod_name} is {} (restarted {restarts} \
                     times): until it runs, the peer's remapped addresses are not translated; \
                     see `kubectl logs {pod_name} -c {NAT_CONTAINER}`",
                    why.trim()
                ),
            )
        }
    }
}

/// Label the gateway template puts on a gateway's pods (value: its name).
pub const POD_LABEL: &str = "strait.dev/gateway";
/// Name of the gateway container's port serving `/status` (and `/metrics`).
pub const METRICS_PORT_NAME: &str = "metrics";
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// The Connection of gateway `name`, from its running pod's `GET /status`
/// (the same JSON as a local gateway's status file).
pub async fn pod_connection(
    client: &Client,
    release_namespace: &str,
    name: &str,
    peer_key_present: bool,
) -> Result<ConnectionStatus, kube::Error> {
    let pods = Api::<Pod>::namespaced(client.clone(), release_namespace)
        .list(&ListParams::default().labels(&format!("{POD_LABEL}={name}")))
        .await?;
    let running = pods.items.iter().find_map(|pod| {
        let status = pod.status.as_ref()?;
        (status.phase.as_deref() == Some("Running")).then_some(())?;
        let ip = status.pod_ip.clone()?;
        let port = pod
            .spec
            .as_ref()?
            .containers
            .iter()
            .flat_map(|c| c.ports.iter().flatten())
            .find(|p| p.name.as_deref() == Some(METRICS_PORT_NAME))?
            .container_port;
        Some((pod.name_any(), ip, port))
    });
    let Some((pod, ip, port)) = running else {
        return Ok(connecting(format!(
            "no running gateway pod labelled {POD_LABEL}={name} with a `{METRICS_PORT_NAME}` \
             port in {release_namespace} yet"
        )));
    };
    let address = if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    };
    match tokio::time::timeout(STATUS_TIMEOUT, fetch_status(&address)).await {
        Ok(Ok(status)) => Ok(connection_of(status)),
        Ok(Err(e)) => Ok(down(format!(
            "gateway pod {pod} at {address}: GET /status: {e}"
        ))),
        Err(_) => Ok(down(format!(
            "gateway pod {pod} at {address}: GET /status got no answer in {}s",
            STATUS_TIMEOUT.as_secs()
        ))),
    }
    .map(|c| {
        if c.value == ConnectionState::Connecting && !peer_key_present {
            connecting("waiting for the peer's PublicKey".to_owned())
        } else {
            c
        }
    })
}

fn connecting(message: String) -> ConnectionStatus {
    ConnectionStatus {
        value: ConnectionState::Connecting,
        latency: None,
        last_handshake_time: None,
        message,
    }
}

fn down(message: String) -> ConnectionStatus {
    ConnectionStatus {
        value: ConnectionState::Error,
        ..connecting(message)
    }
}

/// The gateway's own Connection, with its traffic in the message.
fn connection_of(status: GatewayStatus) -> ConnectionStatus {
    let mut connection = status.connection;
    let traffic = format!("sent {} B, received {} B", status.tx_bytes, status.rx_bytes);
    connection.message = [connection.message.as_str(), traffic.as_str()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    connection
}

/// `GET /status` over plain HTTP/1.1 (the gateway answers and closes).
async fn fetch_status(address: &str) -> Result<GatewayStatus, String> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = tokio::net::TcpStream::connect(address)
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /status HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .take(1 << 20)
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or("not an HTTP response")?;
    let code = head.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        return Err(format!("HTTP {code}: {}", body.trim()));
    }
    serde_json::from_str(body).map_err(|e| format!("not a gateway status: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_map_holds_the_config_and_the_peer_key_once_known() {
        let without = config_map("to-b", "strait", json!({}), "tunnel: {}\n", None);
        assert_eq!(without["metadata"]["name"], "gw-to-b-config");
        assert_eq!(without["data"][CONFIG_KEY], "tunnel: {}\n");
        assert!(without["data"].get(PEER_KEY_KEY).is_none());
        let with = config_map("to-b", "strait", json!({}), "x", Some(" KEY= "));
        assert_eq!(with["data"][PEER_KEY_KEY], "KEY=\n");
    }

    fn pod(nat: Option<serde_json::Value>) -> Pod {
        let mut containers = vec![json!({"name": "gateway"})];
        let mut statuses = vec![
            json!({"name": "gateway", "ready": true, "restartCount": 0, "image": "g", "imageID": "", "state": {"running": {}}}),
        ];
        if let Some(state) = nat {
            containers.push(json!({"name": NAT_CONTAINER}));
            statuses.push(json!({"name": NAT_CONTAINER, "ready": false, "restartCount": 3, "image": "f", "imageID": "", "state": state}));
        }
        serde_json::from_value(json!({
            "metadata": {"name": "gw-to-b-1"},
            "spec": {"containers": containers},
            "status": {"phase": "Running", "containerStatuses": statuses},
        }))
        .expect("pod")
    }

    #[test]
    fn nat_ready_follows_the_nat_container() {
        let running = nat_condition_of(&[pod(Some(json!({"running": {}})))], "to-b", "gw-to-b");
        assert_eq!(
            (running.status, running.reason),
            (ConditionStatus::True, "Running")
        );
        assert!(
            running.message.contains("host gw-to-b"),
            "{}",
            running.message
        );
        let crashing = nat_condition_of(
            &[pod(Some(
                json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}}),
            ))],
            "to-b",
            "gw-to-b",
        );
        assert_eq!(
            (crashing.status, crashing.reason),
            (ConditionStatus::False, "NatAgentNotRunning")
        );
        assert!(
            crashing.message.contains("CrashLoopBackOff back-off 40s")
                && crashing.message.contains("restarted 3 times")
                && crashing.message.contains("kubectl logs gw-to-b-1 -c nat"),
            "{}",
            crashing.message
        );
        let without = nat_condition_of(&[pod(None)], "to-b", "gw-to-b");
        assert_eq!(without.reason, "NoNatContainer");
        let none = nat_condition_of(&[], "to-b", "gw-to-b");
        assert_eq!(
            (none.status, none.reason),
            (ConditionStatus::False, "WaitingForGateway")
        );
    }

    #[test]
    fn pod_paths_are_under_the_template_mounts() {
        let paths = pod_paths();
        assert!(paths.config.starts_with(CONFIG_DIR));
        assert!(paths.peer_key.starts_with(CONFIG_DIR));
        assert!(paths.private_key.starts_with(KEY_DIR));
        assert!(paths.status.starts_with(RUN_DIR));
    }
}
