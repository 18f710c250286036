//! `TestCluster`: one in-process API server on 127.0.0.1 with its own store.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::Error;
use crate::meta;
use crate::registry::Registry;
use crate::server::{self, Server};
use crate::store::Store;

/// Namespaces every cluster starts with, as a real one does.
const DEFAULT_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many change events a watch can resume from by default.
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;

/// Options of a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events kept for watches to resume from; older resourceVersions get 410 Expired.
    pub watch_history: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch_history: DEFAULT_WATCH_HISTORY,
        }
    }
}

/// A Kubernetes-API-compatible server for tests, isolated from every other
/// one. Stops serving when dropped.
pub struct TestCluster {
    name: String,
    url: String,
    client: kube::Client,
    shutdown: watch::Sender<bool>,
}

impl TestCluster {
    pub async fn start(name: &str) -> Result<Self, Error> {
        Self::start_with(name, Options::default()).await
    }

    pub async fn start_with(name: &str, options: Options) -> Result<Self, Error> {
        let valid_name = !name.is_empty()
            && name.len() <= 63
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid_name {
            return Err(Error::InvalidName(name.to_owned()));
        }
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::Bind)?;
        let address = listener.local_addr().map_err(Error::Bind)?;
        let registry = Arc::new(Registry::standard());
        let store = Arc::new(Store::new(registry.clone(), options.watch_history));
        seed(&store, &registry);
        let (shutdown, shutdown_signal) = watch::channel(false);
        let server = Arc::new(Server {
            registry,
            store,
            address,
            shutdown: shutdown_signal,
        });
        tokio::spawn(server::serve(server, listener));

        let url = format!("http://{address}");
        let uri = url.parse().map_err(|e: http::uri::InvalidUri| Error::Url {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let client = kube::Client::try_from(kube::Config::new(uri))?;
        tracing::info!(cluster = name, %url, "test API server started");
        Ok(Self {
            name: name.to_owned(),
            url,
            client,
            shutdown,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A client for this cluster (cheap to clone; default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig for kubectl and other clients, with one context named
    /// after the cluster. Plain HTTP on loopback, no credentials.
    pub fn kubeconfig_yaml(&self) -> Result<String, Error> {
        let user = format!("{}-admin", self.name);
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": {"server": self.url}}],
            "users": [{"name": user, "user": {}}],
            "contexts": [{"name": self.name, "context": {"cluster": self.name, "user": user, "namespace": "default"}}],
            "current-context": self.name,
        });
        Ok(serde_norway::to_string(&config)?)
    }

    pub fn write_kubeconfig(&self, path: &Path) -> Result<(), Error> {
        std::fs::write(path, self.kubeconfig_yaml()?).map_err(|source| Error::WriteKubeconfig {
            path: path.to_owned(),
            source,
        })
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// The default namespaces and the Strait CRDs (readable like in a real cluster).
fn seed(store: &Store, registry: &Registry) {
    let mut state = store.lock();
    let namespace_type = registry.namespace_type();
    for name in DEFAULT_NAMESPACES {
        state.seed(
            namespace_type,
            server_owned(json!({
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": name},
                "status": {"phase": "Active"},
            })),
        );
    }
    if let Some(crd_type) = registry.crd_type() {
        for crd in strait_api::crds() {
            if let Ok(mut object) = serde_json::to_value(&crd) {
                object["apiVersion"] = json!("apiextensions.k8s.io/v1");
                object["kind"] = json!("CustomResourceDefinition");
                state.seed(crd_type, server_owned(object));
            }
        }
    }
}

fn server_owned(mut object: Value) -> Value {
    meta::set_meta(
        &mut object,
        "uid",
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    meta::set_meta(&mut object, "creationTimestamp", Value::String(meta::now()));
    meta::set_meta(&mut object, "generation", json!(1));
    object
}
