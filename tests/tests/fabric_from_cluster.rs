//! `strait-fabric run --from-cluster=all`: the fabric follows RouteConfiguration
//! and InternalNode CRs, and a deleted CR's routes leave the pinned maps.
//! The agent runs in a test namespace and reaches the test control plane
//! through a loopback relay into that namespace. Needs root.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use kube::{
    api::{DeleteParams, PostParams},
    Api,
};
use strait_api::networking::{
    FabricRoute, InternalNode, InternalNodeSpec, RouteConfiguration, RouteConfigurationSpec,
};
use strait_dataplane::{bpffs::PinDir, fabric::pinned_routes_v4};
use strait_testbed::{bins, bpffs::TestPinDir, relay::ApiRelay, NetNs};
use strait_testkit::TestCluster;

const LIMIT: Duration = Duration::from_secs(20);

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_routes(
    pins: &TestPinDir,
    want: &[&str],
    agent: &mut Agent,
    log: &std::path::Path,
) -> Vec<String> {
    let deadline = Instant::now() + LIMIT;
    loop {
        let routes = PinDir::open(pins.path())
            .ok()
            .and_then(|dir| pinned_routes_v4(&dir).ok())
            .unwrap_or_default();
        if routes == want {
            return routes;
        }
        if Instant::now() >= deadline || agent.0.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("pinned routes {routes:?}, wanted {want:?}; agent log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn the_fabric_follows_route_and_node_crs_and_forgets_deleted_ones() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = runtime
        .block_on(TestCluster::start("fabric-crs"))
        .expect("test cluster");
    let ns = NetNs::new("fabric-crs").expect("netns");
    ns.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
    ])
    .expect("veth");
    ns.ip(&["addr", "add", "198.18.60.1/24", "dev", "eth0"])
        .expect("addr");
    for link in ["eth0", "eth1"] {
        ns.ip(&["link", "set", link, "up"]).expect("up");
    }
    let sysctl = ns
        .command("sysctl")
        .args([
            "-q",
            "-w",
            "net.ipv4.conf.all.forwarding=1",
            "-w",
            "net.ipv4.conf.eth0.forwarding=1",
        ])
        .status()
        .expect("sysctl");
    assert!(sysctl.success());

    let target: std::net::SocketAddr = cluster
        .url()
        .split("://")
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("test cluster address");
    let relay = ApiRelay::start(&ns, target).expect("relay into the namespace");
    let dir = std::env::temp_dir().join(format!("strait-fabric-crs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = relay
        .kubeconfig(
            &cluster.kubeconfig_yaml().expect("kubeconfig"),
            target,
            &dir.join("kubeconfig"),
        )
        .expect("write kubeconfig");
    let config = dir.join("fabric.yaml");
    std::fs::write(
        &config,
        "underlay: eth0\nlocalEndpoints: ['198.18.60.1']\nnodeVni: 9\nroutes:\n  - destinations: [198.19.1.0/24]\n    gateways: ['198.18.60.2']\n    vni: 5\n",
    )
    .expect("write config");

    let client = cluster.client();
    let routes_api = Api::<RouteConfiguration>::namespaced(client.clone(), "default");
    let nodes_api = Api::<InternalNode>::all(client);
    runtime.block_on(async {
        routes_api
            .create(
                &PostParams::default(),
                &RouteConfiguration::new(
                    "peer-b",
                    RouteConfigurationSpec {
                        routes: vec![FabricRoute {
                            destinations: vec!["10.71.0.0/16".into()],
                            gateways: vec!["198.18.60.3".into()],
                            vni: 5,
                        }],
                    },
                ),
            )
            .await
            .expect("RouteConfiguration");
        nodes_api
            .create(
                &PostParams::default(),
                &InternalNode::new(
                    "node-1",
                    InternalNodeSpec {
                        endpoints: vec!["198.18.60.4".into()],
                        pod_cidrs: vec!["10.244.1.0/24".into()],
                    },
                ),
            )
            .await
            .expect("InternalNode");
    });

    let pins = TestPinDir::new("fabric-crs").expect("pins");
    let log = dir.join("agent.log");
    let binary = bins::path("strait-fabric").expect("strait-fabric built");
    let mut agent = Agent(
        ns.command(&binary)
            .arg("--pin-dir")
            .arg(pins.path())
            .args([
                "run",
                "--poll-interval",
                "200ms",
                "--from-cluster=all",
                "--config",
            ])
            .arg(&config)
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("strait-fabric run"),
    );
    // The file's route and both CRs' entries.
    wait_routes(
        &pins,
        &["10.244.1.0/24", "10.71.0.0/16", "198.19.1.0/24"],
        &mut agent,
        &log,
    );

    // Deleting the CRs removes exactly their entries.
    runtime.block_on(async {
        routes_api
            .delete("peer-b", &DeleteParams::default())
            .await
            .expect("delete RouteConfiguration");
    });
    wait_routes(&pins, &["10.244.1.0/24", "198.19.1.0/24"], &mut agent, &log);
    runtime.block_on(async {
        nodes_api
            .delete("node-1", &DeleteParams::default())
            .await
            .expect("delete InternalNode");
    });
    wait_routes(&pins, &["198.19.1.0/24"], &mut agent, &log);

    drop(agent);
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
