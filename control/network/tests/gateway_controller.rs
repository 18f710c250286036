//! The gateway controllers against the test control plane.
//!
//! Local simulation: the controller writes the gateway's `--config` from the
//! CRs, runs the gateway binary (here a script with the same contract:
//! writes its public key file and a status file) and keeps it running,
//! publishes its key, feeds it the peer's, reports the Connection and the
//! ForeignCluster's NetworkReady, and removes it all when the CR goes.
//! In-cluster mode: the objects of the template ConfigMap are applied and
//! deleted with the gateway.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api, Client,
};
use strait_api::{
    condition::find_condition,
    core::{ForeignCluster, ForeignClusterSpec, ModuleSelection},
    names::label::REMOTE_CLUSTER_ID,
    networking::{
        ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec, Connection,
        ConnectionState, GatewayServer, GatewayServerSpec, PublicKey, PublicKeySpec,
        ServerEndpoint, ServiceType,
    },
};
use strait_gateway::GatewayConfig;
use strait_network::gateway::{self, controller::local_settings, GatewayMode, Settings};
use strait_testkit::{eventually, TestCluster};

const NS: &str = "strait-tenant-cluster-b";
const REMOTE: &str = "cluster-b";
const STEP: Duration = Duration::from_secs(20);
/// What the stand-in gateway publishes as its key.
const OWN_KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";
const PEER_KEY: &str = "xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=";

/// A stand-in for strait-gateway with its file contract: `--config C
/// --status-file S`; writes `public.key` next to the config at once, and a
/// status (Connected once `peer.key` exists, over an IPv4 underlay; tunnel
/// MTU from the file `mtu` and the peer's announced spec MTU from
/// `peer-mtu`, if there are) 5 times a second; records its pid so the test
/// can kill it.
const FAKE_GATEWAY: &str = r#"#!/bin/sh
config="$2"; status="$4"; dir=$(dirname "$config")
echo $$ > "$dir/pid"
printf '%s\n' "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=" > "$dir/public.key"
start=$(date -u +%Y-%m-%dT%H:%M:%SZ)
while :; do
  if [ -s "$dir/peer.key" ]; then
    connection='{"value":"Connected","lastHandshakeTime":"'$start'","latency":{"value":"1.500ms","timestamp":"'$start'"}}'
  else
    connection='{"value":"Connecting","message":"no WireGuard handshake with the peer yet"}'
  fi
  mtu=$(cat "$dir/mtu" 2>/dev/null || echo 1420)
  peer_mtu=$(cat "$dir/peer-mtu" 2>/dev/null || echo 1420)
  printf '{"role":"server","backend":"fake","interface":"x","publicKey":"k","mtu":'$mtu',"underlay":"IPv4","peerMtu":'$peer_mtu',"txBytes":10,"rxBytes":20,"probesSent":0,"probesAnswered":0,"connection":%s}' "$connection" > "$status.tmp"
  mv "$status.tmp" "$status"
  sleep 0.2
done
"#;

async fn namespace(client: &Client, name: &str) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

fn server(name: &str) -> GatewayServer {
    let mut gateway = GatewayServer::new(
        name,
        GatewayServerSpec {
            mtu: 1420,
            endpoint: ServerEndpoint {
                port: 51840,
                service_type: ServiceType::ClusterIP,
                node_port: None,
                load_balancer_ips: Vec::new(),
            },
            secret_ref: None,
            template_ref: None,
        },
    );
    gateway.metadata.labels = Some(BTreeMap::from([(
        REMOTE_CLUSTER_ID.to_owned(),
        REMOTE.to_owned(),
    )]));
    gateway
}

async fn peering_objects(client: &Client) {
    let mut fc = ForeignCluster::new(
        REMOTE,
        ForeignClusterSpec {
            cluster_id: REMOTE.to_owned(),
            modules: ModuleSelection {
                network: true,
                ..Default::default()
            },
            kubeconfig_secret_ref: None,
        },
    );
    fc.metadata.name = Some(REMOTE.to_owned());
    Api::<ForeignCluster>::all(client.clone())
        .create(&PostParams::default(), &fc)
        .await
        .expect("ForeignCluster");
    let mut config = Configuration::new(
        "cluster-b",
        ConfigurationSpec {
            local: None,
            remote: ClusterNetwork {
                cidr: ClusterCidrs {
                    pod: vec!["10.244.0.0/16".into()],
                    external: vec!["10.70.0.0/16".into()],
                },
            },
        },
    );
    config.metadata.labels = Some(BTreeMap::from([(
        REMOTE_CLUSTER_ID.to_owned(),
        REMOTE.to_owned(),
    )]));
    Api::<Configuration>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &config)
        .await
        .expect("Configuration");
}

async fn network_ready(client: &Client) -> Option<(String, String)> {
    let fc = Api::<ForeignCluster>::all(client.clone())
        .get(REMOTE)
        .await
        .ok()?;
    let status = fc.status?;
    let condition = find_condition(&status.conditions, "NetworkReady")?;
    status.modules.network.as_ref()?;
    Some((format!("{:?}", condition.status), condition.reason.clone()))
}

async fn connection(
    client: &Client,
    name: &str,
) -> Option<strait_api::networking::ConnectionStatus> {
    Api::<Connection>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .ok()??
        .status
}

fn pid(dir: &Path) -> Option<String> {
    std::fs::read_to_string(dir.join("pid"))
        .ok()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
}

fn alive(pid: &str) -> bool {
    std::process::Command::new("kill")
        .args(["-0", pid])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_local_gateway_is_configured_published_restarted_and_removed() {
    let cluster = TestCluster::start("gateway-local")
        .await
        .expect("test cluster");
    let client = cluster.client();
    namespace(&client, NS).await;
    peering_objects(&client).await;
    let state = tempfile::tempdir().expect("state dir");
    let binary = state.path().join("fake-gateway");
    std::fs::write(&binary, FAKE_GATEWAY).expect("script");
    std::process::Command::new("chmod")
        .args(["+x", &binary.display().to_string()])
        .status()
        .expect("chmod");
    let settings = Settings {
        mode: local_settings(
            binary,
            state.path().join("gateways"),
            None,
            Some("198.18.0.1".into()),
            Vec::new(),
        ),
        cluster_id: None,
    };
    let controller = tokio::spawn(gateway::run(client.clone(), settings));
    let servers = Api::<GatewayServer>::namespaced(client.clone(), NS);
    servers
        .create(&PostParams::default(), &server("to-b"))
        .await
        .expect("GatewayServer");
    let dir: PathBuf = state.path().join("gateways").join(format!("{NS}.to-b"));

    // Until the network module decided how this cluster sees the peer's
    // CIDRs, nothing runs (the real ones might be this cluster's own).
    eventually("Ready WaitingForRemap", STEP, || async {
        servers
            .get("to-b")
            .await
            .ok()
            .and_then(|g| g.status)
            .is_some_and(|s| {
                find_condition(&s.conditions, "Ready")
                    .is_some_and(|c| c.reason == "WaitingForRemap")
            })
    })
    .await;
    assert!(
        !dir.join("config.yaml").exists(),
        "started before the remap"
    );
    // The pod CIDR remapped, the external one as it is.
    Api::<Configuration>::namespaced(client.clone(), NS)
        .patch_status(
            "cluster-b",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"remote": {"cidr": {
                "pod": ["10.71.0.0/16"], "external": ["10.70.0.0/16"]}}}})),
        )
        .await
        .expect("Configuration status");

    // The config file carries the CR's spec and the peering's CIDRs:
    // accepted by their real ranges, routed by how this cluster sees them.
    eventually("config written", STEP, || async {
        dir.join("config.yaml").exists()
    })
    .await;
    let config = GatewayConfig::from_file(&dir.join("config.yaml")).expect("a valid config");
    assert_eq!(config.server.as_ref().map(|s| s.endpoint.port), Some(51840));
    assert_eq!(config.client, None);
    assert_eq!(config.tunnel.allowed_ips, ["10.244.0.0/16", "10.70.0.0/16"]);
    assert_eq!(
        config.tunnel.routes.as_deref(),
        Some(&["10.70.0.0/16".to_owned(), "10.71.0.0/16".to_owned()][..])
    );
    assert_eq!(config.peer_public_key_file, Some(dir.join("peer.key")));
    assert_eq!(config.public_key_file, Some(dir.join("public.key")));
    config.plan().expect("the gateway accepts it");

    // Our key is published; without the peer's the tunnel waits, and says so.
    let keys = Api::<PublicKey>::namespaced(client.clone(), NS);
    eventually("own key published", STEP, || async {
        keys.get_opt("local-to-b")
            .await
            .ok()
            .flatten()
            .is_some_and(|k| k.spec.public_key == OWN_KEY)
    })
    .await;
    eventually("NetworkReady waits for the peer key", STEP, || async {
        network_ready(&client).await == Some(("False".into(), "WaitingForPeerKey".into()))
    })
    .await;

    // The peer's key goes to the gateway; its status reaches the Connection.
    keys.create(
        &PostParams::default(),
        &PublicKey::new(
            "remote-to-b",
            PublicKeySpec {
                public_key: PEER_KEY.into(),
            },
        ),
    )
    .await
    .expect("peer key");
    eventually("connected", STEP, || async {
        connection(&client, "to-b")
            .await
            .is_some_and(|c| c.value == ConnectionState::Connected)
    })
    .await;
    let up = connection(&client, "to-b").await.expect("status");
    assert_eq!(up.latency.map(|l| l.value).as_deref(), Some("1.500ms"));
    assert!(up.last_handshake_time.is_some());
    assert!(
        up.message.contains("sent 10 B, received 20 B"),
        "{}",
        up.message
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("peer.key"))
            .expect("peer key file")
            .trim(),
        PEER_KEY
    );
    eventually("NetworkReady", STEP, || async {
        network_ready(&client).await == Some(("True".into(), "Connected".into()))
    })
    .await;
    // The path narrower than the spec's MTU: the gateway reports a lowered
    // tunnel MTU, and the peering says what to change.
    std::fs::write(dir.join("mtu"), "1380").expect("mtu file");
    eventually("NetworkReady MtuMismatch", STEP, || async {
        network_ready(&client).await == Some(("False".into(), "MtuMismatch".into()))
    })
    .await;
    std::fs::remove_file(dir.join("mtu")).expect("mtu file");
    eventually("NetworkReady again", STEP, || async {
        network_ready(&client).await == Some(("True".into(), "Connected".into()))
    })
    .await;
    // The peer gateway announces another spec.mtu through the tunnel: the
    // peering names both numbers.
    std::fs::write(dir.join("peer-mtu"), "1380").expect("peer-mtu file");
    eventually("NetworkReady MtuMismatch with both MTUs", STEP, || async {
        let fc = Api::<ForeignCluster>::all(client.clone())
            .get_opt(REMOTE)
            .await
            .ok()
            .flatten();
        fc.and_then(|fc| find_condition(&fc.status?.conditions, "NetworkReady").cloned())
            .is_some_and(|c| {
                c.reason == "MtuMismatch"
                    && c.message.contains("spec.mtu 1420")
                    && c.message.contains("announces spec.mtu 1380")
            })
    })
    .await;
    std::fs::remove_file(dir.join("peer-mtu")).expect("peer-mtu file");
    eventually("NetworkReady once more", STEP, || async {
        network_ready(&client).await == Some(("True".into(), "Connected".into()))
    })
    .await;
    let endpoint = servers
        .get("to-b")
        .await
        .expect("server")
        .status
        .and_then(|s| s.endpoint)
        .expect("status.endpoint");
    assert_eq!(
        (endpoint.addresses, endpoint.port),
        (vec!["198.18.0.1".to_owned()], 51840)
    );

    // A killed gateway is started again, and the Connection says it was.
    let first = pid(&dir).expect("pid");
    assert!(std::process::Command::new("kill")
        .args(["-9", &first])
        .status()
        .expect("kill")
        .success());
    eventually("restarted", STEP, || async {
        pid(&dir).is_some_and(|p| p != first && alive(&p))
    })
    .await;
    eventually("the restart shows in the Connection", STEP, || async {
        connection(&client, "to-b").await.is_some_and(|c| {
            c.value == ConnectionState::Connected && c.message.contains("restarted 1 times")
        })
    })
    .await;

    // Deleting the gateway stops it and removes what it published.
    let second = pid(&dir).expect("pid");
    servers
        .delete("to-b", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("gateway gone", STEP, || async {
        servers.get_opt("to-b").await.is_ok_and(|g| g.is_none())
    })
    .await;
    assert!(!alive(&second), "the gateway process was stopped");
    assert!(!dir.exists(), "its files were removed");
    assert!(keys.get_opt("local-to-b").await.expect("get").is_none());
    assert!(connection(&client, "to-b").await.is_none());
    assert!(Api::<Connection>::namespaced(client.clone(), NS)
        .get_opt("to-b")
        .await
        .expect("get")
        .is_none());
    eventually("NetworkReady false again", STEP, || async {
        network_ready(&client).await == Some(("False".into(), "GatewayNotReady".into()))
    })
    .await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_the_template_is_rendered_and_removed_with_the_gateway() {
    let cluster = TestCluster::start("gateway-cluster")
        .await
        .expect("test cluster");
    let client = cluster.client();
    namespace(&client, NS).await;
    namespace(&client, "strait").await;
    let template = "apiVersion: v1\nkind: Service\nmetadata:\n  name: gw-${NAME}\n  namespace: strait\n  labels:\n    strait.dev/remote-cluster-id: ${REMOTE_CLUSTER_ID}\nspec:\n  ports:\n    - name: wireguard\n      port: ${PORT}\n      protocol: UDP\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: gw-${NAME}-args\n  namespace: strait\ndata:\n  args: --mtu=${MTU} --namespace=${NAMESPACE}\n";
    let mut cm = ConfigMap::default();
    cm.metadata.name = Some(gateway::template::SERVER_TEMPLATE.into());
    cm.data = Some(BTreeMap::from([("template.yaml".into(), template.into())]));
    let configmaps = Api::<ConfigMap>::namespaced(client.clone(), "strait");
    configmaps
        .create(&PostParams::default(), &cm)
        .await
        .expect("template");
    let settings = Settings {
        mode: GatewayMode::Cluster {
            release_namespace: "strait".into(),
        },
        cluster_id: None,
    };
    let controller = tokio::spawn(gateway::run(client.clone(), settings));
    let servers = Api::<GatewayServer>::namespaced(client.clone(), NS);
    servers
        .create(&PostParams::default(), &server("to-b"))
        .await
        .expect("GatewayServer");
    let services = Api::<Service>::namespaced(client.clone(), "strait");
    eventually("service rendered", STEP, || async {
        services.get_opt("gw-to-b").await.ok().flatten().is_some()
    })
    .await;
    let service = services.get("gw-to-b").await.expect("service");
    let port = service
        .spec
        .and_then(|s| s.ports)
        .and_then(|p| p.first().map(|p| p.port));
    assert_eq!(port, Some(51840));
    assert_eq!(
        service
            .metadata
            .labels
            .and_then(|l| l.get(REMOTE_CLUSTER_ID).cloned())
            .as_deref(),
        Some(REMOTE)
    );
    // The documents are applied in order: the second may come a moment later.
    eventually("second document rendered", STEP, || async {
        configmaps
            .get_opt("gw-to-b-args")
            .await
            .ok()
            .flatten()
            .is_some()
    })
    .await;
    let args = configmaps
        .get("gw-to-b-args")
        .await
        .expect("second document");
    assert_eq!(
        args.data.and_then(|d| d.get("args").cloned()).as_deref(),
        Some(format!("--mtu=1420 --namespace={NS}").as_str())
    );
    eventually("Ready", STEP, || async {
        servers
            .get("to-b")
            .await
            .ok()
            .and_then(|g| g.status)
            .is_some_and(|s| {
                find_condition(&s.conditions, "Ready").is_some_and(|c| c.reason == "Deployed")
            })
    })
    .await;

    // What the gateway pod mounts: its --config rendered into a ConfigMap,
    // its key in a Secret generated for it, whose public half is published.
    let config = configmaps.get("gw-to-b-config").await.expect("config map");
    let yaml = config
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml").cloned())
        .unwrap_or_default();
    let parsed: strait_gateway::GatewayConfig = serde_norway::from_str(&yaml).expect("--config");
    parsed.plan().expect("a config the gateway accepts");
    assert_eq!(
        parsed.private_key_file.as_deref(),
        Some(std::path::Path::new("/etc/strait-gateway/key/privateKey"))
    );
    assert!(
        config
            .data
            .as_ref()
            .is_some_and(|d| !d.contains_key("peer.key")),
        "no peer key yet"
    );
    let secrets = Api::<Secret>::namespaced(client.clone(), "strait");
    let secret = secrets.get("gw-to-b-key").await.expect("generated key");
    let private = secret
        .data
        .as_ref()
        .and_then(|d| d.get("privateKey"))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default();
    let public = strait_gateway::PrivateKey::parse(&private)
        .expect("a WireGuard key")
        .public_key()
        .to_string();
    let keys = Api::<PublicKey>::namespaced(client.clone(), NS);
    eventually("public key published", STEP, || async {
        keys.get_opt("local-to-b")
            .await
            .ok()
            .flatten()
            .is_some_and(|k| k.spec.public_key == public)
    })
    .await;
    // The gateway pod's status endpoint (a stand-in serving what
    // `strait-gateway --metrics-address` serves at /status).
    let status_server = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("status server");
    let status_port = status_server.local_addr().expect("port").port();
    let serving = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let body = serde_json::json!({
            "role": "server", "backend": "embedded", "interface": "stgw0",
            "publicKey": "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=", "mtu": 1420,
            "txBytes": 4242, "rxBytes": 2424, "probesSent": 3, "probesAnswered": 3,
            "connection": {"value": "Connected", "message": "handshake 1s ago"},
        })
        .to_string();
        while let Ok((mut stream, _)) = status_server.accept().await {
            let mut request = [0u8; 512];
            let _ = stream.read(&mut request).await;
            let _ = stream
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    });
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "gw-to-b-0", "labels": {"strait.dev/gateway": "to-b"}},
        "spec": {"containers": [{"name": "gateway", "image": "strait-gateway",
            "ports": [{"name": "metrics", "containerPort": status_port}]}]},
    }))
    .expect("pod");
    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), "strait");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("gateway pod");
    pods.patch_status(
        "gw-to-b-0",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"phase": "Running", "podIP": "127.0.0.1"}})),
    )
    .await
    .expect("pod status");
    // The peer's key reaches the pod through the same ConfigMap.
    keys.create(
        &PostParams::default(),
        &PublicKey::new(
            "remote-to-b",
            PublicKeySpec {
                public_key: "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=".into(),
            },
        ),
    )
    .await
    .expect("peer key");
    eventually("peer key in the ConfigMap", STEP, || async {
        configmaps
            .get_opt("gw-to-b-config")
            .await
            .ok()
            .flatten()
            .and_then(|c| c.data)
            .and_then(|d| d.get("peer.key").cloned())
            .is_some_and(|k| k.trim() == "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc=")
    })
    .await;

    // The Connection comes from the pod's status endpoint.
    eventually("Connection from the pod's /status", STEP, || async {
        connection(&client, "to-b").await.is_some_and(|c| {
            c.value == ConnectionState::Connected && c.message.contains("sent 4242 B")
        })
    })
    .await;
    // A pod that stops answering is an Error, not a stale Connected (the
    // peer key's rotation makes the controller look again).
    serving.abort();
    let _ = serving.await;
    keys.patch(
        "remote-to-b",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"publicKey": PEER_KEY}})),
    )
    .await
    .expect("rotate the peer key");
    eventually("Connection Error once /status is gone", STEP, || async {
        connection(&client, "to-b")
            .await
            .is_some_and(|c| c.value == ConnectionState::Error && c.message.contains("GET /status"))
    })
    .await;

    servers
        .delete("to-b", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("rendered objects removed", STEP, || async {
        services.get_opt("gw-to-b").await.is_ok_and(|s| s.is_none())
            && configmaps
                .get_opt("gw-to-b-args")
                .await
                .is_ok_and(|c| c.is_none())
            && configmaps
                .get_opt("gw-to-b-config")
                .await
                .is_ok_and(|c| c.is_none())
            && secrets
                .get_opt("gw-to-b-key")
                .await
                .is_ok_and(|s| s.is_none())
            && servers.get_opt("to-b").await.is_ok_and(|g| g.is_none())
    })
    .await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_template_is_a_condition_not_a_crash() {
    let cluster = TestCluster::start("gateway-notemplate")
        .await
        .expect("test cluster");
    let client = cluster.client();
    namespace(&client, NS).await;
    let settings = Settings {
        mode: GatewayMode::Cluster {
            release_namespace: "strait".into(),
        },
        cluster_id: None,
    };
    let controller = tokio::spawn(gateway::run(client.clone(), settings));
    let servers = Api::<GatewayServer>::namespaced(client.clone(), NS);
    servers
        .create(&PostParams::default(), &server("to-b"))
        .await
        .expect("GatewayServer");
    eventually("TemplateNotFound", STEP, || async {
        servers
            .get("to-b")
            .await
            .ok()
            .and_then(|g| g.status)
            .is_some_and(|s| {
                find_condition(&s.conditions, "Ready").is_some_and(|c| {
                    c.reason == "TemplateNotFound"
                        && c.message.contains("strait/strait-gateway-server-template")
                })
            })
    })
    .await;
    controller.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_with_a_secret_uses_its_private_key() {
    use std::os::unix::fs::PermissionsExt as _;
    let cluster = TestCluster::start("gateway-secret")
        .await
        .expect("test cluster");
    let client = cluster.client();
    namespace(&client, NS).await;
    let state = tempfile::tempdir().expect("state dir");
    let binary = state.path().join("fake-gateway");
    std::fs::write(&binary, FAKE_GATEWAY).expect("script");
    std::fs::set_permissions(&binary, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let settings = Settings {
        mode: local_settings(
            binary,
            state.path().join("gateways"),
            None,
            None,
            Vec::new(),
        ),
        cluster_id: None,
    };
    let controller = tokio::spawn(gateway::run(client.clone(), settings));
    let mut gateway = server("keyed");
    gateway.spec.secret_ref = Some(strait_api::SecretReference {
        name: "gw-key".into(),
        namespace: None,
    });
    let servers = Api::<GatewayServer>::namespaced(client.clone(), NS);
    servers
        .create(&PostParams::default(), &gateway)
        .await
        .expect("GatewayServer");
    eventually("PrivateKeyNotFound", STEP, || async {
        servers
            .get("keyed")
            .await
            .ok()
            .and_then(|g| g.status)
            .is_some_and(|s| {
                find_condition(&s.conditions, "Ready").is_some_and(|c| {
                    c.reason == "PrivateKeyNotFound"
                        && c.message.contains("gw-key has no key privateKey")
                })
            })
    })
    .await;
    let private = "yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=";
    let mut secret = k8s_openapi::api::core::v1::Secret::default();
    secret.metadata.name = Some("gw-key".into());
    secret.data = Some(BTreeMap::from([(
        "privateKey".into(),
        k8s_openapi::ByteString(private.as_bytes().to_vec()),
    )]));
    Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), NS)
        .create(&PostParams::default(), &secret)
        .await
        .expect("Secret");
    let dir = state.path().join("gateways").join(format!("{NS}.keyed"));
    eventually("config with the key file", STEP, || async {
        GatewayConfig::from_file(&dir.join("config.yaml"))
            .is_ok_and(|c| c.private_key_file == Some(dir.join("private.key")))
    })
    .await;
    let key_file = dir.join("private.key");
    assert_eq!(
        std::fs::read_to_string(&key_file).expect("key file").trim(),
        private
    );
    let mode = std::fs::metadata(&key_file)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "readable by the owner only");
    servers
        .delete("keyed", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("removed with its key", STEP, || async {
        servers.get_opt("keyed").await.is_ok_and(|g| g.is_none()) && !key_file.exists()
    })
    .await;
    controller.abort();
}
