//! Every Strait container the chart renders (directly, or through the
//! workload templates the controllers fill in) passes arguments its binary
//! accepts: the binary itself parses them, followed by `--help`, which clap
//! answers only once every argument before it was recognised and its value
//! valid. The binaries are the ones `cargo build --bins` made (as `cargo
//! xtask test` does before the tests). The virtual kubelet's template is
//! left to its own check against the offloading module's renderer (branch
//! offrbac); at this commit it passes `--virtual-node-namespace`, which
//! `strait-virtual-kubelet` does not have.
use std::{path::PathBuf, process::Command};

use serde_json::{json, Value};
use strait_chart_tests::{expand_placeholders, Helm, Rendered};

/// The workspace's binaries: next to this test's profile directory.
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("current_exe: {e}"));
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: build the binaries first (`cargo build --bins`, which `cargo xtask test` does)",
        path.display()
    );
    path
}

/// `(binary name, args, where)` of every container of a Deployment or DaemonSet.
fn containers(objects: &[Value], origin: &str, out: &mut Vec<(String, Vec<String>, String)>) {
    for object in objects {
        if !matches!(object["kind"].as_str(), Some("Deployment" | "DaemonSet")) {
            continue;
        }
        let pod = &object["spec"]["template"]["spec"];
        for container in ["initContainers", "containers"]
            .iter()
            .flat_map(|k| pod[*k].as_array().into_iter().flatten())
        {
            let image = container["image"].as_str().unwrap_or_default();
            // <registry>/<binary>:<tag>
            let name = image
                .rsplit('/')
                .next()
                .and_then(|last| last.split(':').next())
                .unwrap_or_default();
            let args = container["args"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(expand_env_references))
                .collect();
            out.push((
                name.to_owned(),
                args,
                format!(
                    "{origin}: {} {}",
                    object["kind"], object["metadata"]["name"]
                ),
            ));
        }
    }
}

/// What the kubelet does to `$(VAR)` in args: a sample value in its place
/// (an address for `*_IP`).
fn expand_env_references(arg: &str) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(start) = rest.find("$(") {
        let Some(len) = rest[start..].find(')') else {
            break;
        };
        let var = &rest[start + 2..start + len];
        out.push_str(&rest[..start]);
        out.push_str(if var.ends_with("_IP") {
            "198.18.0.5"
        } else {
            "sample"
        });
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Binaries whose rendered arguments another check owns.
const CHECKED_ELSEWHERE: &[&str] = &[];

#[test]
fn every_rendered_container_passes_arguments_its_binary_accepts() {
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let custom = json!({
        "network": {"reservedCIDRs": ["10.42.0.0/16", "fd00:42::/56"], "remapPools": ["10.64.0.0/10"]},
        "fabric": {"metricsPort": 9999, "bpffsPath": "/run/bpf"},
    });
    let mut found = Vec::new();
    for values in [json!({}), custom] {
        let objects = helm
            .render(&values)
            .and_then(|r| r.objects())
            .unwrap_or_else(|e| panic!("{values}: {e}"));
        containers(&objects, "chart", &mut found);
        for template in objects.iter().filter(|o| {
            o["kind"] == "ConfigMap"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-template"))
        }) {
            let text = template["data"]["template.yaml"]
                .as_str()
                .unwrap_or_default();
            let filled = expand_placeholders(
                text,
                &[
                    ("NAME", "cluster-b"),
                    ("NAMESPACE", "strait-tenant-cluster-b"),
                    ("REMOTE_CLUSTER_ID", "cluster-b"),
                    ("PORT", "51840"),
                    ("MTU", "1420"),
                    ("ENDPOINT", "198.18.0.1:51840"),
                    ("NODE_NAME", "strait-cluster-b"),
                    ("CONFIG_MAP", "gw-cluster-b-config"),
                    ("KEY_SECRET", "gw-cluster-b-key"),
                    ("INTERFACE", "stgw0123456789a"),
                    ("NAT_SELECTOR", "strait.dev/remote-cluster-id=cluster-b"),
                ],
            );
            let inner = Rendered {
                manifests: [("template.yaml".to_owned(), filled)].into(),
            }
            .objects()
            .unwrap_or_else(|e| panic!("{}: {e}", template["metadata"]["name"]));
            containers(
                &inner,
                &format!("{}", template["metadata"]["name"]),
                &mut found,
            );
        }
    }
    let names: std::collections::BTreeSet<&str> =
        found.iter().map(|(n, _, _)| n.as_str()).collect();
    for expected in ["strait-controller", "strait-fabric", "strait-gateway"] {
        assert!(
            names.contains(expected),
            "no {expected} container rendered: {names:?}"
        );
    }
    for (name, args, origin) in found
        .iter()
        .filter(|(name, _, _)| !CHECKED_ELSEWHERE.contains(&name.as_str()))
    {
        let output = Command::new(binary(name))
            .args(args)
            .arg("--help")
            .output()
            .unwrap_or_else(|e| panic!("running {name}: {e}"));
        assert!(
            output.status.success(),
            "{origin}: {name} refuses the args {args:?}:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_binary_refuses_an_argument_it_does_not_have_before_help() {
    // What the check relies on: an unknown flag fails even with --help after it.
    let output = Command::new(binary("strait-gateway"))
        .args(["--mode=server", "--help"])
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("--mode"));
}

#[test]
fn env_references_become_sample_values() {
    assert_eq!(
        expand_env_references("--node-ip=$(POD_IP)"),
        "--node-ip=198.18.0.5"
    );
    assert_eq!(
        expand_env_references("--a=$(X)-$(Y_IP)"),
        "--a=sample-198.18.0.5"
    );
    assert_eq!(expand_env_references("--plain"), "--plain");
}
