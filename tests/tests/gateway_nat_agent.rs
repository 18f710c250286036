//! The network module's local gateway supervisor runs a gateway's NAT
//! agent (`strait-fabric nat run --from-cluster`) in the gateway's network
//! namespace: started by `ensure_nat`, its pinned tables follow the
//! peering's NatConfiguration, it is started again when killed and when the
//! gateway process changes, it attaches again to an interface made anew,
//! and `stop` ends it and removes its pins. Needs root (network namespace,
//! bpffs).

use std::{
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{Patch, PatchParams, PostParams},
    Api,
};
use strait_api::networking::{
    ApplyState, NatConfiguration, NatConfigurationSpec, NatDirection, PrefixMapping,
};
use strait_dataplane::{bpffs::PinDir, nat::NatTables};
use strait_network::gateway::{
    local::{LocalGateways, NatAgentSpec, NatAgents},
    nat_host,
};
use strait_testbed::{bins, bpffs::TestPinDir, relay::ApiRelay, NetNs, Veth};
use strait_testkit::TestCluster;

const LIMIT: Duration = Duration::from_secs(20);
const NS: &str = "strait-tenant-peer";
const GATEWAY: &str = "peer";
const IFACE: &str = "stgwnattest0";
const REMOTE: &str = "strait.dev/remote-cluster-id";

fn spec(from: &str, to: &str) -> NatConfigurationSpec {
    NatConfigurationSpec {
        prefixes: vec![PrefixMapping {
            direction: NatDirection::Destination,
            from: from.into(),
            to: to.into(),
        }],
        addresses: vec![],
    }
}

/// The active pinned tables, as `nat show` prints them.
fn pinned_tables(pins: &Path) -> Vec<String> {
    PinDir::open(pins)
        .ok()
        .and_then(|dir| NatTables::open_pinned(&dir).ok())
        .and_then(|t| t.active_entries().ok())
        .map(|entries| entries.iter().map(|e| e.to_string()).collect())
        .unwrap_or_default()
}

/// Waits until `check` holds, failing with the agent's log.
async fn wait(what: &str, log: &Path, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !check().await {
        if Instant::now() >= deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what}: not within {LIMIT:?}; NAT agent log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(pid: u32) -> bool {
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

#[test]
fn the_supervisor_starts_restarts_and_stops_the_gateway_nat_agent() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = runtime
        .block_on(TestCluster::start("gateway-nat"))
        .expect("test cluster");
    let client = cluster.client();
    let api = Api::<NatConfiguration>::namespaced(client.clone(), NS);
    runtime.block_on(async {
        let mut ns = Namespace::default();
        ns.metadata.name = Some(NS.into());
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("namespace");
        let mut nat =
            NatConfiguration::new("peer-gateway", spec("198.19.64.0/18", "198.18.64.0/18"));
        nat.metadata.labels = Some([(REMOTE.to_owned(), "peer".to_owned())].into());
        api.create(&PostParams::default(), &nat).await.expect("nat");
        // Another peering's: the agent must leave it alone.
        let mut other =
            NatConfiguration::new("other-gateway", spec("198.19.0.0/18", "198.18.0.0/18"));
        other.metadata.labels = Some([(REMOTE.to_owned(), "other".to_owned())].into());
        api.create(&PostParams::default(), &other)
            .await
            .expect("other nat");
    });

    // The gateway's namespace, with the interface a gateway would make, and
    // a way from it to the API server (which listens on the host's loopback).
    let netns = NetNs::new("gwnat").expect("netns");
    Veth::pair((&netns, IFACE, &[]), (&netns, "stgwnatpeer0", &[])).expect("veth");
    let target = cluster
        .url()
        .split("://")
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("API server address");
    let relay = ApiRelay::start(&netns, target).expect("relay");
    let dir = std::env::temp_dir().join(format!("strait-gwnat-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = relay
        .kubeconfig(
            &cluster.kubeconfig_yaml().expect("kubeconfig"),
            target,
            &dir.join("kubeconfig"),
        )
        .expect("kubeconfig");
    let pin_root = TestPinDir::new("gwnat").expect("pins");
    let pins: PathBuf = pin_root.path().join(IFACE);

    let gateways = LocalGateways::new(
        PathBuf::from("/bin/false"),
        dir.join("state"),
        Some(netns.path()),
    )
    .with_nat_agents(NatAgents {
        binary: bins::path("strait-fabric").expect("strait-fabric built"),
        pin_root: pin_root.path().to_owned(),
        kubeconfig: Some(kubeconfig),
        poll_interval: Duration::from_millis(200),
    });
    let log = gateways.files(NS, GATEWAY).nat_log;
    let agent = |gateway_pid| NatAgentSpec {
        interface: IFACE.to_owned(),
        namespace: NS.to_owned(),
        selector: Some(format!("{REMOTE}=peer")),
        host: nat_host(GATEWAY),
        gateway_pid,
    };
    let host_state = |name: &'static str| {
        let api = api.clone();
        async move {
            api.get_opt(name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.status)
                .and_then(|s| s.hosts.into_iter().find(|h| h.host == nat_host(GATEWAY)))
                .map(|h| (h.state, h.observed_generation))
        }
    };

    runtime.block_on(async {
        // Started: the peering's NatConfiguration (and only it) is pinned,
        // the programs are attached, the CR's status says Applied.
        gateways
            .ensure_nat(NS, GATEWAY, &agent(100))
            .await
            .expect("ensure_nat");
        wait("the agent applied peer-gateway", &log, async || {
            host_state("peer-gateway").await == Some((ApplyState::Applied, 1))
        })
        .await;
        assert_eq!(
            pinned_tables(&pins),
            [
                "egress destination 198.19.64.0/18 -> 198.18.64.0/18",
                "ingress source 198.18.64.0/18 -> 198.19.64.0/18",
            ]
        );
        assert_eq!(host_state("other-gateway").await, None);
        for direction in ["ingress", "egress"] {
            let link = pins.join("links").join(format!("{IFACE}_nat_{direction}"));
            assert!(link.exists(), "{} not pinned", link.display());
        }
        let first = gateways.nat_state(NS, GATEWAY).expect("supervised");
        let first_pid = first.pid.expect("running");
        assert_eq!(first.crashes, 0);
        // Same spec: left alone.
        gateways
            .ensure_nat(NS, GATEWAY, &agent(100))
            .await
            .expect("ensure_nat");
        assert_eq!(
            gateways.nat_state(NS, GATEWAY).and_then(|s| s.pid),
            Some(first_pid)
        );

        // Killed: started again, and the new agent follows an edit.
        // SAFETY: kill(2) of the agent this test's supervisor started.
        unsafe {
            libc::kill(first_pid as i32, libc::SIGKILL);
        }
        wait("the killed agent restarted", &log, async || {
            gateways
                .nat_state(NS, GATEWAY)
                .is_some_and(|s| s.crashes == 1 && s.pid.is_some_and(|p| p != first_pid))
        })
        .await;
        let restarted = gateways.nat_state(NS, GATEWAY).expect("supervised");
        assert!(
            restarted
                .last_exit
                .as_deref()
                .is_some_and(|e| e.contains("signal: 9")),
            "{restarted:?}"
        );
        let patch = serde_json::json!({ "spec": spec("198.19.128.0/18", "198.18.64.0/18") });
        api.patch(
            "peer-gateway",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .expect("patch");
        wait("the restarted agent applied the edit", &log, async || {
            host_state("peer-gateway").await == Some((ApplyState::Applied, 2))
        })
        .await;
        assert_eq!(
            pinned_tables(&pins),
            [
                "egress destination 198.19.128.0/18 -> 198.18.64.0/18",
                "ingress source 198.18.64.0/18 -> 198.19.128.0/18",
            ]
        );

        // The interface made again (as a restarted gateway does): the agent
        // attaches to the new one, replacing its dead pinned links, without
        // exiting.
        let attaches = || {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("NAT programs attached")
                .count()
        };
        let attached_before = attaches();
        netns
            .ip(&["link", "del", IFACE])
            .expect("delete the interface");
        Veth::pair((&netns, IFACE, &[]), (&netns, "stgwnatpeer0", &[])).expect("veth again");
        wait(
            "the agent attached to the new interface",
            &log,
            async || attaches() > attached_before,
        )
        .await;
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert!(
            text.contains("the pinned tcx link's interface is gone; attaching anew"),
            "{text}"
        );
        assert_eq!(
            gateways.nat_state(NS, GATEWAY).map(|s| s.crashes),
            Some(1),
            "the agent exited on the new interface:\n{text}"
        );

        // A new gateway process: the agent is restarted for it (on purpose,
        // not counted as a crash), the tables stay.
        let before = restarted.pid.expect("running");
        gateways
            .ensure_nat(NS, GATEWAY, &agent(101))
            .await
            .expect("ensure_nat");
        let renewed = gateways.nat_state(NS, GATEWAY).expect("supervised");
        wait(
            "the agent restarted for the new gateway",
            &log,
            async || {
                gateways
                    .nat_state(NS, GATEWAY)
                    .and_then(|s| s.pid)
                    .is_some_and(|p| p != before)
            },
        )
        .await;
        assert!(!alive(before), "the previous agent {before} still runs");
        assert_eq!(renewed.crashes, 0, "{renewed:?}");
        assert_eq!(pinned_tables(&pins).len(), 2);

        // Stopped with the gateway: the agent is gone, and so are its pins.
        let last = gateways
            .nat_state(NS, GATEWAY)
            .and_then(|s| s.pid)
            .expect("running");
        gateways.stop(NS, GATEWAY, IFACE).await.expect("stop");
        assert!(gateways.nat_state(NS, GATEWAY).is_none());
        wait("the agent ended", &log, async || !alive(last)).await;
        assert!(!pins.exists(), "{} left behind", pins.display());
    });
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}
