//! Shared by the CLI tests: test clusters with a Strait identity, and
//! running the CLI as a user would, capturing what it prints.
#![allow(dead_code)]
use std::path::{Path, PathBuf};

use clap::Parser;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::{api::PostParams, Api, Client};
use serde_json::json;
use strait_cli::{cli::Cli, Error};
use strait_testkit::TestCluster;

pub struct Installed {
    pub cluster: TestCluster,
    pub kubeconfig: PathBuf,
}

pub async fn create_namespace(client: &Client, name: &str) {
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": name}})).expect("namespace");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
}

/// A test cluster as the chart leaves it: namespace `strait` and, when
/// `cluster_id` is given, the identity ConfigMap the controller writes.
pub async fn installed(name: &str, cluster_id: Option<&str>, dir: &Path) -> Installed {
    let cluster = TestCluster::start(name).await.expect("test cluster");
    let client = cluster.client();
    create_namespace(&client, "strait").await;
    if let Some(id) = cluster_id {
        let identity: ConfigMap = serde_json::from_value(json!({
            "metadata": {"name": "strait-cluster-identity", "namespace": "strait"},
            "data": {"clusterID": id, "publicKey": "test"},
        }))
        .expect("configmap");
        Api::<ConfigMap>::namespaced(client, "strait")
            .create(&PostParams::default(), &identity)
            .await
            .expect("identity");
    }
    let kubeconfig = dir.join(format!("{name}.kubeconfig"));
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    Installed {
        cluster,
        kubeconfig,
    }
}

/// Runs `strait ARGS…`; returns what it printed, and its error.
pub async fn strait(args: &[&str]) -> (String, Result<(), Error>) {
    let cli = Cli::try_parse_from(std::iter::once("strait").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("strait {args:?}: {e}"));
    let mut out = Vec::new();
    let result = strait_cli::run(cli, &mut out).await;
    (String::from_utf8_lossy(&out).into_owned(), result)
}

/// Compares `actual` with `tests/golden/NAME`; STRAIT_UPDATE_GOLDEN=1 rewrites it.
pub fn assert_golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    if std::env::var_os("STRAIT_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("writing golden file");
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        actual == expected,
        "output differs from {}:\n--- expected\n{expected}\n--- actual\n{actual}\n\
         (if intended: STRAIT_UPDATE_GOLDEN=1 cargo test -p strait-cli, then review the diff)",
        path.display()
    );
}

/// A condition as the controllers write it.
pub fn condition(type_: &str, status: &str, reason: &str, message: &str) -> serde_json::Value {
    json!({
        "type": type_, "status": status, "reason": reason, "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
    })
}
