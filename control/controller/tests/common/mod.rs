//! What the strait-controller binary's tests share: the binary started as a
//! child process against a test control plane through a kubeconfig, as it
//! would run in a cluster, and killed when the test ends whatever its outcome.

#![allow(dead_code)] // each test file uses its own subset

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use k8s_openapi::api::core::v1::Namespace;
use kube::{api::PostParams, Api, Client};
use strait_api::networking::{ClusterCidrs, ClusterNetwork, Configuration, ConfigurationSpec};
use strait_testkit::TestCluster;

/// A running `strait-controller`; its kubeconfig directory goes with it.
pub struct Controller {
    child: Child,
    dir: PathBuf,
}

impl Controller {
    /// Starts the binary with `args` and `env` against `cluster`; `label`
    /// names its scratch directory (unique per process and label).
    pub fn start(cluster: &TestCluster, label: &str, args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir =
            std::env::temp_dir().join(format!("strait-controller-{label}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let kubeconfig = dir.join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        let child = Command::new(env!("CARGO_BIN_EXE_strait-controller"))
            .args(args)
            .envs(env.iter().copied())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("strait-controller starts");
        Self { child, dir }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub async fn create_namespace(client: &Client, name: &str) {
    let mut ns = Namespace::default();
    ns.metadata.name = Some(name.into());
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
}

/// Creates the Configuration `name` of a peer whose pods use `pod_cidr`.
pub async fn create_configuration(api: &Api<Configuration>, name: &str, pod_cidr: &str) {
    let spec = ConfigurationSpec {
        local: None,
        remote: ClusterNetwork {
            cidr: ClusterCidrs {
                pod: vec![pod_cidr.into()],
                external: Vec::new(),
            },
        },
    };
    api.create(&PostParams::default(), &Configuration::new(name, spec))
        .await
        .expect("create Configuration");
}
