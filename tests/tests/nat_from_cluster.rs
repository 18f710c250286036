//! `strait-fabric nat run --from-cluster`: the NAT tables follow the
//! NatConfiguration CRs of the test control plane. Applying a CR makes its
//! translation happen (the test runs the NAT program on a frame with
//! BPF_PROG_RUN against the agent's pinned tables), an edit is followed, a
//! CR the agent refuses gets an Error status while the previous table
//! stays, and a deleted CR's entries leave the pinned tables. The agent only
//! talks to the API and writes pinned maps; it attaches to no interface.
//! Needs root.

use std::{
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use aya::programs::{TestRun, TestRunOptions};
use k8s_openapi::api::core::v1::Namespace;
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api,
};
use strait_api::networking::{
    ApplyState, NatConfiguration, NatConfigurationSpec, NatDirection, PrefixMapping,
};
use strait_common::Direction;
use strait_dataplane::{
    bpffs::PinDir,
    nat::NatTables,
    programs::{Dataplane, TcProgram},
};
use strait_testbed::{bins, bpffs::TestPinDir, packets::*};
use strait_testkit::TestCluster;

const LIMIT: Duration = Duration::from_secs(20);
const NS: &str = "strait";
const HOST: &str = "gateway-a";

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spec(mappings: &[(&str, &str)]) -> NatConfigurationSpec {
    NatConfigurationSpec {
        prefixes: mappings
            .iter()
            .map(|(from, to)| PrefixMapping {
                direction: NatDirection::Destination,
                from: (*from).into(),
                to: (*to).into(),
            })
            .collect(),
        addresses: vec![],
    }
}

/// The active pinned tables, as `nat show` prints them.
fn pinned_tables(pins: &TestPinDir) -> Vec<String> {
    PinDir::open(pins.path())
        .ok()
        .and_then(|dir| NatTables::open_pinned(&dir).ok())
        .and_then(|t| t.active_entries().ok())
        .map(|entries| entries.iter().map(|e| e.to_string()).collect())
        .unwrap_or_default()
}

/// Waits until `check` holds, failing with the agent's log.
fn wait(what: &str, agent: &mut Agent, log: &std::path::Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + LIMIT;
    while !check() {
        if Instant::now() >= deadline || agent.0.try_wait().ok().flatten().is_some() {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what}: not within {LIMIT:?}; agent log:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// This host's entry in a CR's status: (state, observedGeneration, message).
async fn host_status(api: &Api<NatConfiguration>, name: &str) -> Option<(ApplyState, i64, String)> {
    let cr = api.get_opt(name).await.ok()??;
    let entry = cr.status?.hosts.into_iter().find(|h| h.host == HOST)?;
    Some((entry.state, entry.observed_generation, entry.message))
}

/// A UDP frame from a local pod to `dst`, and what the egress program made of it.
fn egress_of(dp: &mut Dataplane, dst: [u8; 4]) -> Vec<u8> {
    let frame = udp_frame(dst);
    let prog = dp
        .classifier(TcProgram::Nat(Direction::Egress))
        .expect("egress program");
    let mut out = vec![0u8; frame.len() + 64];
    let result = prog
        .test_run(TestRunOptions {
            data_in: Some(&frame),
            data_out: Some(&mut out),
            ..TestRunOptions::new()
        })
        .expect("BPF_PROG_RUN");
    out.truncate(result.data_size_out as usize);
    out
}

fn udp_frame(dst: [u8; 4]) -> Vec<u8> {
    let src = [198, 18, 65, 10];
    eth4(ipv4(src, dst, UDP, &udp(&src, &dst, b"follow the CRs")))
}

#[test]
fn the_nat_tables_follow_natconfiguration_crs() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = runtime
        .block_on(TestCluster::start("nat-crs"))
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
    });
    let dir = std::env::temp_dir().join(format!("strait-nat-crs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_yaml().expect("kubeconfig"))
        .expect("write kubeconfig");
    let pins = TestPinDir::new("nat-crs").expect("pins");
    let log = dir.join("agent.log");
    let binary = bins::path("strait-fabric").expect("strait-fabric built");
    let mut agent = Agent(
        std::process::Command::new(&binary)
            .arg("--pin-dir")
            .arg(pins.path())
            .args([
                "nat",
                "run",
                "--from-cluster",
                "--namespace",
                NS,
                "--host",
                HOST,
                "--poll-interval",
                "200ms",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("strait-fabric nat run"),
    );
    // The same pinned maps as the agent's, to run the program against.
    wait("the agent pinned its maps", &mut agent, &log, || {
        PinDir::open(pins.path())
            .ok()
            .and_then(|dir| NatTables::open_pinned(&dir).ok())
            .is_some()
    });
    let mut dp = Dataplane::load(PinDir::open(pins.path()).expect("pins")).expect("load");
    let pod_b = [198, 18, 66, 20];
    let untouched = udp_frame([198, 19, 66, 20]);
    assert_eq!(egress_of(&mut dp, [198, 19, 66, 20]), untouched);

    // Applied: the translation happens and the status says so.
    runtime
        .block_on(api.create(
            &PostParams::default(),
            &NatConfiguration::new("peer-b", spec(&[("198.19.64.0/18", "198.18.64.0/18")])),
        ))
        .expect("create");
    wait("peer-b applied", &mut agent, &log, || {
        runtime.block_on(host_status(&api, "peer-b"))
            == Some((ApplyState::Applied, 1, String::new()))
    });
    assert_eq!(
        pinned_tables(&pins),
        [
            "egress destination 198.19.64.0/18 -> 198.18.64.0/18",
            "ingress source 198.18.64.0/18 -> 198.19.64.0/18",
        ]
    );
    assert_eq!(egress_of(&mut dp, [198, 19, 66, 20]), udp_frame(pod_b));

    // Edited: followed.
    let edit = |mappings: &[(&str, &str)]| {
        let patch = serde_json::json!({ "spec": spec(mappings) });
        runtime
            .block_on(api.patch("peer-b", &PatchParams::default(), &Patch::Merge(&patch)))
            .expect("patch");
    };
    edit(&[("198.19.128.0/18", "198.18.64.0/18")]);
    wait("the edit applied", &mut agent, &log, || {
        runtime.block_on(host_status(&api, "peer-b"))
            == Some((ApplyState::Applied, 2, String::new()))
    });
    assert_eq!(egress_of(&mut dp, [198, 19, 130, 20]), udp_frame(pod_b));
    assert_eq!(
        egress_of(&mut dp, [198, 19, 66, 20]),
        untouched,
        "the old mapping is gone"
    );

    // Refused (admitted, but translating back would be ambiguous): Error
    // with the reason, and the previous table stays.
    let before = pinned_tables(&pins);
    edit(&[
        ("198.19.128.0/18", "198.18.64.0/18"),
        ("198.19.192.0/18", "198.18.64.0/18"),
    ]);
    wait("the refusal reported", &mut agent, &log, || {
        matches!(
            runtime.block_on(host_status(&api, "peer-b")),
            Some((ApplyState::Error, 3, _))
        )
    });
    let (_, _, message) = runtime
        .block_on(host_status(&api, "peer-b"))
        .expect("status");
    assert!(
        message.starts_with(
            "NatConfiguration strait/peer-b prefixes[1]: its `to` 198.18.64.0/18 overlaps"
        ) && message.ends_with("its previously applied spec stays in effect"),
        "{message}"
    );
    assert_eq!(pinned_tables(&pins), before);
    assert_eq!(egress_of(&mut dp, [198, 19, 130, 20]), udp_frame(pod_b));

    // Deleted: its entries leave the pinned tables.
    runtime
        .block_on(api.delete("peer-b", &DeleteParams::default()))
        .expect("delete");
    wait("the entries removed", &mut agent, &log, || {
        pinned_tables(&pins).is_empty()
    });
    assert_eq!(
        egress_of(&mut dp, [198, 19, 130, 20]),
        udp_frame([198, 19, 130, 20])
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}
