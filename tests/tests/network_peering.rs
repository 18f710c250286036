//! Two clusters connected by network CRs alone (no authentication, no
//! offloading): each cluster's gateway controller runs a real
//! `strait-gateway` in that cluster's gateway namespace; the test plays the
//! peering by copying each side's published PublicKey to the other. Both
//! use the same pod CIDR: each gateway routes the peer's as remapped, and
//! keeps its route to its own pods. The
//! tunnel comes up, carries traffic between the tunnel addresses, and the
//! time from applying the gateways to the first echo through the tunnel
//! (asserted under 3 s), and the gap after a gateway process is killed and
//! restarted, are printed.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::{Namespace, Secret};
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
        ConnectionState, GatewayClient, GatewayClientSpec, GatewayServer, GatewayServerSpec,
        PublicEndpoint, PublicKey, PublicKeySpec, ServerEndpoint, ServiceType,
    },
};
use strait_network::gateway::{self, controller::local_settings, Settings};
use strait_testbed::{
    bins,
    gateway::{ping, underlay_v4, Internet},
    NetNs,
};
use strait_testkit::{eventually, TestCluster};

const STEP: Duration = Duration::from_secs(30);
const NS: &str = "strait-peer";
/// Issue #9: from applying the gateway CRs to the first packet through.
const APPLY_TO_FIRST_PACKET_TARGET: Duration = Duration::from_secs(3);

async fn namespace(client: &Client) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(NS.to_owned());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

async fn foreign_cluster(client: &Client, remote: &str) {
    let fc = ForeignCluster::new(
        remote,
        ForeignClusterSpec {
            cluster_id: remote.to_owned(),
            modules: ModuleSelection {
                network: true,
                ..Default::default()
            },
            kubeconfig_secret_ref: None,
        },
    );
    Api::<ForeignCluster>::all(client.clone())
        .create(&PostParams::default(), &fc)
        .await
        .expect("ForeignCluster");
}

fn labels(remote: &str) -> Option<BTreeMap<String, String>> {
    Some(BTreeMap::from([(
        REMOTE_CLUSTER_ID.to_owned(),
        remote.to_owned(),
    )]))
}

/// Copies `from`'s published key of gateway `local` into `to` as the peer
/// key of gateway `remote`, once it is there.
async fn copy_key(from: &Client, local: &str, to: &Client, remote: &str) {
    let source = Api::<PublicKey>::namespaced(from.clone(), NS);
    let name = gateway::local_key_name(local);
    eventually(&format!("{name} published"), STEP, || async {
        source.get_opt(&name).await.ok().flatten().is_some()
    })
    .await;
    let key = source.get(&name).await.expect("published key");
    Api::<PublicKey>::namespaced(to.clone(), NS)
        .create(
            &PostParams::default(),
            &PublicKey::new(
                &gateway::remote_key_name(remote),
                PublicKeySpec {
                    public_key: key.spec.public_key,
                },
            ),
        )
        .await
        .expect("peer key");
}

async fn connected(client: &Client, name: &str) -> bool {
    Api::<Connection>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|c| c.status)
        .is_some_and(|s| s.value == ConnectionState::Connected)
}

async fn network_ready(client: &Client, remote: &str) -> bool {
    Api::<ForeignCluster>::all(client.clone())
        .get(remote)
        .await
        .ok()
        .and_then(|fc| fc.status)
        .and_then(|s| find_condition(&s.conditions, "NetworkReady").map(|c| c.status))
        .is_some_and(|s| format!("{s:?}") == "True")
}

/// The reason of `NetworkReady` on the ForeignCluster `remote`.
async fn network_ready_reason(client: &Client, remote: &str) -> Option<String> {
    let fc = Api::<ForeignCluster>::all(client.clone())
        .get(remote)
        .await
        .ok()?;
    find_condition(&fc.status?.conditions, "NetworkReady").map(|c| c.reason.clone())
}

/// The status file of the local gateway `name` whose controller keeps its
/// files under `dir`.
fn gateway_status(dir: &std::path::Path, name: &str) -> Option<strait_gateway::GatewayStatus> {
    strait_gateway::GatewayStatus::read(&dir.join(format!("{NS}.{name}")).join("status.json")).ok()
}

/// When the first echo from namespace `ns` to `to` came back (pings of
/// 200 ms each, for at most [`STEP`]).
fn first_echo(ns: &str, to: &str) -> Option<Instant> {
    let deadline = Instant::now() + STEP;
    while Instant::now() < deadline {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/run/netns/{ns}"))
            .args(["--", "ping", "-n", "-q", "-c", "1", "-W", "0.2", to])
            .output();
        if out.is_ok_and(|o| o.status.success()) {
            return Some(Instant::now());
        }
    }
    None
}

/// The pid of the gateway process started with `config`.
fn gateway_pid(config: &std::path::Path) -> Option<i32> {
    let wanted = config.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let is_gateway = args.first().is_some_and(|a| a.ends_with(b"strait-gateway"));
            (is_gateway && args.contains(&wanted.as_bytes())).then_some(pid)
        })
}

/// The peering's Configuration in `client`: both pod CIDRs 198.18.64.0/24,
/// the remote's remapped to 198.19.64.0/24.
async fn configuration(client: &Client, remote: &str) {
    let pods = |cidr: &str| ClusterNetwork {
        cidr: ClusterCidrs {
            pod: vec![cidr.to_owned()],
            external: Vec::new(),
        },
    };
    let mut configuration = Configuration::new(
        remote,
        ConfigurationSpec {
            local: Some(pods("198.18.64.0/24")),
            remote: pods("198.18.64.0/24"),
        },
    );
    configuration.metadata.labels = labels(remote);
    let api = Api::<Configuration>::namespaced(client.clone(), NS);
    api.create(&PostParams::default(), &configuration)
        .await
        .expect("Configuration");
    api.patch_status(
        remote,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"remote": pods("198.19.64.0/24")}})),
    )
    .await
    .expect("Configuration status");
}

/// The device `ns` sends to `to` through.
fn route_dev(ns: &NetNs, to: &str) -> String {
    let out = ns.ip(&["route", "get", to]).expect("ip route get");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

/// SIGKILL to a gateway this test's controller started.
fn kill(pid: i32) -> i32 {
    // SAFETY: kill(2) on a pid found by its own config path under this
    // test's state directory: a process of this test.
    unsafe { libc::kill(pid, libc::SIGKILL) }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_peered_by_network_crs_only() {
    let binary = bins::path("strait-gateway").expect("strait-gateway built");
    let internet = Internet::new().expect("internet");
    let gw_a = NetNs::new("gw-a").expect("netns");
    let gw_b = NetNs::new("gw-b").expect("netns");
    internet.attach(&gw_a, 1).expect("attach a");
    internet.attach(&gw_b, 2).expect("attach b");
    let state = std::env::temp_dir().join(format!("strait-peering-{}", std::process::id()));

    let a = TestCluster::start("peer-a").await.expect("cluster a");
    let b = TestCluster::start("peer-b").await.expect("cluster b");
    let (ca, cb) = (a.client(), b.client());
    for (client, remote) in [(&ca, "cluster-b"), (&cb, "cluster-a")] {
        namespace(client).await;
        foreign_cluster(client, remote).await;
    }
    let settings = |ns: &NetNs, dir: &str, advertise: Option<String>| Settings {
        mode: local_settings(
            binary.clone(),
            state.join(dir),
            Some(ns.path()),
            advertise,
            vec![
                "--wireguard=userspace".into(),
                "--probe-interval-ms=200".into(),
            ],
        ),
        cluster_id: None,
    };
    let controllers = [
        tokio::spawn(gateway::run(
            ca.clone(),
            settings(&gw_a, "a", Some(underlay_v4(1))),
        )),
        tokio::spawn(gateway::run(cb.clone(), settings(&gw_b, "b", None))),
    ];

    // Keys from Secrets, so a restarted gateway keeps its key and the peer
    // needs nothing new.
    for (client, key) in [
        (&ca, "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA="),
        (&cb, "KCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRkc="),
    ] {
        let mut secret = Secret::default();
        secret.metadata.name = Some("gateway-key".into());
        secret.data = Some(BTreeMap::from([(
            "privateKey".to_owned(),
            k8s_openapi::ByteString(key.as_bytes().to_vec()),
        )]));
        Api::<Secret>::namespaced(client.clone(), NS)
            .create(&PostParams::default(), &secret)
            .await
            .expect("key Secret");
    }
    let key_ref = || {
        Some(strait_api::SecretReference {
            name: "gateway-key".into(),
            namespace: None,
        })
    };
    // Both clusters' pods are 198.18.64.0/24 (each gateway namespace
    // routes it to its own pods); each sees the other's as 198.19.64.0/24,
    // as its IPAM decided (written here by hand: no Configuration
    // controller runs).
    for (client, ns, remote) in [(&ca, &gw_a, "cluster-b"), (&cb, &gw_b, "cluster-a")] {
        configuration(client, remote).await;
        ns.ip(&[
            "link", "add", "pods0", "type", "veth", "peer", "name", "pods1",
        ])
        .expect("pods link");
        for link in ["pods0", "pods1"] {
            ns.ip(&["link", "set", link, "up"]).expect("pods link up");
        }
        ns.ip(&["addr", "add", "198.18.64.1/24", "dev", "pods0"])
            .expect("pods route");
    }
    let applied = Instant::now();
    let mut server = GatewayServer::new(
        "to-b",
        GatewayServerSpec {
            mtu: 1420,
            endpoint: ServerEndpoint {
                port: 51840,
                service_type: ServiceType::ClusterIP,
                node_port: None,
                load_balancer_ips: Vec::new(),
            },
            secret_ref: key_ref(),
            template_ref: None,
        },
    );
    server.metadata.labels = labels("cluster-b");
    Api::<GatewayServer>::namespaced(ca.clone(), NS)
        .create(&PostParams::default(), &server)
        .await
        .expect("server");
    let mut client = GatewayClient::new(
        "to-a",
        GatewayClientSpec {
            mtu: 1420,
            endpoint: PublicEndpoint {
                addresses: vec![underlay_v4(1)],
                port: 51840,
            },
            secret_ref: key_ref(),
            template_ref: None,
        },
    );
    client.metadata.labels = labels("cluster-a");
    Api::<GatewayClient>::namespaced(cb.clone(), NS)
        .create(&PostParams::default(), &client)
        .await
        .expect("client");
    // The peering's part: each side's key to the other.
    tokio::join!(
        copy_key(&ca, "to-b", &cb, "to-a"),
        copy_key(&cb, "to-a", &ca, "to-b")
    );

    // The first echo through the tunnel, from cluster A's gateway namespace
    // to cluster B's tunnel address (the client's, second of the /127).
    let first_packet = tokio::task::spawn_blocking({
        let gw_a = gw_a.name().to_owned();
        move || first_echo(&gw_a, "fd00:5354::1")
    })
    .await
    .expect("ping task")
    .expect("an echo through the tunnel in time");
    let apply_to_first_packet = first_packet - applied;

    eventually("both Connections Connected", STEP, || async {
        connected(&ca, "to-b").await && connected(&cb, "to-a").await
    })
    .await;
    let apply_to_connected = applied.elapsed();
    eventually("NetworkReady on both ForeignClusters", STEP, || async {
        network_ready(&ca, "cluster-b").await && network_ready(&cb, "cluster-a").await
    })
    .await;
    assert_eq!(ping(&gw_b, "fd00:5354::", 5, "0.1"), 5, "echoes both ways");
    // The tunnel accepts the peer's real pods and routes them as seen
    // here; each gateway's own pods keep their route.
    for (ns, side, name) in [(&gw_a, "a", "to-b"), (&gw_b, "b", "to-a")] {
        let config = strait_gateway::GatewayConfig::from_file(
            &state
                .join(side)
                .join(format!("{NS}.{name}"))
                .join("config.yaml"),
        )
        .expect("gateway config");
        assert_eq!(config.tunnel.allowed_ips, ["198.18.64.0/24"]);
        assert_eq!(
            config.tunnel.routes.as_deref(),
            Some(&["198.19.64.0/24".to_owned()][..])
        );
        assert_eq!(route_dev(ns, "198.18.64.10"), "pods0", "{side}: own pods");
        assert_eq!(
            route_dev(ns, "198.19.64.10"),
            config.interface,
            "{side}: the peer's"
        );
    }
    println!(
        "apply_to_first_packet_ms={} apply_to_connected_ms={}",
        apply_to_first_packet.as_millis(),
        apply_to_connected.as_millis()
    );
    // The target. A first handshake lost to a server not ready yet
    // used to cost WireGuard's 5 s retry; the gateway now retries it sooner.
    assert!(
        apply_to_first_packet < APPLY_TO_FIRST_PACKET_TARGET,
        "apply to first packet took {} ms (target < {} ms)",
        apply_to_first_packet.as_millis(),
        APPLY_TO_FIRST_PACKET_TARGET.as_millis()
    );

    // Echoes as large as the tunnel MTU (1420, don't-fragment) get through
    // both ways.
    for (side, name) in [("a", "to-b"), ("b", "to-a")] {
        let dir = state.join(side);
        eventually(&format!("full-size probes answered ({side})"), STEP, || {
            let status = gateway_status(&dir, name);
            async move {
                status.is_some_and(|s| {
                    s.full_size_probes.size == 1420
                        && s.full_size_probes.answered > 0
                        && s.full_size_probes.consecutive_failures == 0
                })
            }
        })
        .await;
    }
    // A narrower underlay on cluster B's side: its gateway lowers the
    // tunnel to what the path carries and the peering says MtuMismatch;
    // restored, it is Connected again.
    gw_b.ip(&["link", "set", "eth0", "mtu", "1400"])
        .expect("narrow the underlay");
    eventually("NetworkReady MtuMismatch", STEP, || async {
        network_ready_reason(&cb, "cluster-a").await.as_deref() == Some("MtuMismatch")
    })
    .await;
    gw_b.ip(&["link", "set", "eth0", "mtu", "1500"])
        .expect("restore the underlay");
    eventually("NetworkReady again", STEP, || async {
        network_ready(&cb, "cluster-a").await
    })
    .await;

    // Cluster A's gateway killed: restarted by its controller with the same
    // key, the tunnel carries traffic again; the gap is measured.
    let config = state
        .join("a")
        .join(format!("{NS}.to-b"))
        .join("config.yaml");
    let pid = gateway_pid(&config).expect("cluster A's gateway process");
    let killed = Instant::now();
    assert_eq!(kill(pid), 0, "kill {pid}");
    let back = tokio::task::spawn_blocking({
        let gw_a = gw_a.name().to_owned();
        move || first_echo(&gw_a, "fd00:5354::1")
    })
    .await
    .expect("ping task")
    .expect("an echo through the tunnel after the restart");
    assert_ne!(gateway_pid(&config), Some(pid), "a new process");
    println!("restart_gap_ms={}", (back - killed).as_millis());

    // Deleting the gateways stops them (their interfaces go with them).
    Api::<GatewayServer>::namespaced(ca.clone(), NS)
        .delete("to-b", &DeleteParams::default())
        .await
        .expect("delete server");
    Api::<GatewayClient>::namespaced(cb.clone(), NS)
        .delete("to-a", &DeleteParams::default())
        .await
        .expect("delete client");
    eventually("gateways removed", STEP, || async {
        Api::<GatewayServer>::namespaced(ca.clone(), NS)
            .get_opt("to-b")
            .await
            .is_ok_and(|g| g.is_none())
            && Api::<GatewayClient>::namespaced(cb.clone(), NS)
                .get_opt("to-a")
                .await
                .is_ok_and(|g| g.is_none())
    })
    .await;
    assert_eq!(ping(&gw_a, "fd00:5354::1", 1, "0.2"), 0, "no tunnel left");
    for controller in controllers {
        controller.abort();
    }
    let _ = std::fs::remove_dir_all(&state);
}
