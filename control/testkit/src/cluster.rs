//! `TestCluster`: one in-process API server on 127.0.0.1 with its own store.

use std::path::Path;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::error::Error;
use crate::kubelet::{KubeletSlot, TestKubelet, KUBELET_CLIENT_USER};
use crate::logs::PodLogs;
use crate::meta;
use crate::pki::{ClientCredentials, Pki, User};
use crate::rbac::SUPERUSER_GROUP;
use crate::registry::Registry;
use crate::server::{self, Server, Tls};
use crate::store::Store;
use crate::tokens::Tokens;
use base64::Engine;

/// Namespaces every cluster starts with, as a real one does.
const DEFAULT_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// How many change events a watch can resume from by default.
pub const DEFAULT_WATCH_HISTORY: usize = 10_000;

/// Options of a test cluster.
#[derive(Debug, Clone)]
pub struct Options {
    /// Events kept for watches to resume from; older resourceVersions get 410 Expired.
    pub watch_history: usize,
    /// Serve HTTPS with a throwaway CA, authenticate clients by certificate
    /// and authorize them with RBAC. `client()` is then the superuser.
    pub tls: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            watch_history: DEFAULT_WATCH_HISTORY,
            tls: false,
        }
    }
}

/// The user `client()` and `write_kubeconfig` act as on a TLS cluster.
pub const ADMIN_USER: &str = "strait-admin";

/// A Kubernetes-API-compatible server for tests, isolated from every other
/// one. Stops serving when dropped.
pub struct TestCluster {
    name: String,
    url: String,
    client: kube::Client,
    pki: Option<Arc<Pki>>,
    admin: Option<ClientCredentials>,
    shutdown: watch::Sender<bool>,
    logs: Arc<PodLogs>,
    tokens: Arc<Tokens>,
    kubelet: Arc<KubeletSlot>,
    /// The CA of the certificate the API server shows kubelets.
    kubelet_client_ca: String,
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
        let (pki, tls) = if options.tls {
            let pki = Arc::new(Pki::new(name)?);
            let acceptor = tokio_rustls::TlsAcceptor::from(pki.server_config()?);
            (Some(pki.clone()), Some(Tls { pki, acceptor }))
        } else {
            (None, None)
        };
        let (shutdown, shutdown_signal) = watch::channel(false);
        if let Some(pki) = &pki {
            tokio::spawn(crate::signer::run(
                store.clone(),
                pki.clone(),
                shutdown_signal.clone(),
            ));
        }
        let logs = Arc::new(PodLogs::default());
        let tokens = Arc::new(Tokens::default());
        let kubelet = Arc::new(KubeletSlot::default());
        // The certificate the API server shows kubelets, from the cluster's
        // CA (a CA of its own on a plain cluster, which has none).
        let kubelet_pki = match &pki {
            Some(pki) => pki.clone(),
            None => Arc::new(Pki::new(&format!("{name}-kubelet-client"))?),
        };
        let kubelet_client = kubelet_pki.issue(KUBELET_CLIENT_USER, &[SUPERUSER_GROUP])?;
        let kubelet_client_ca = kubelet_pki.ca_pem();
        let server = Arc::new(Server {
            logs: logs.clone(),
            tokens: tokens.clone(),
            kubelet: kubelet.clone(),
            kubelet_client,
            registry,
            store,
            address,
            shutdown: shutdown_signal,
            tls,
        });
        tokio::spawn(server::serve(server, listener));

        let scheme = if options.tls { "https" } else { "http" };
        let url = format!("{scheme}://{address}");
        let mut cluster = Self {
            name: name.to_owned(),
            url: url.clone(),
            client: plain_client(&url)?,
            admin: None,
            pki,
            shutdown,
            logs,
            tokens,
            kubelet,
            kubelet_client_ca,
        };
        if let Some(pki) = &cluster.pki {
            let admin = pki.issue(ADMIN_USER, &[SUPERUSER_GROUP])?;
            cluster.client = cluster.client_with(&admin).await?;
            cluster.admin = Some(admin);
        }
        tracing::info!(cluster = name, %url, tls = options.tls, "test API server started");
        Ok(cluster)
    }

    /// A client authenticated as `user` in `groups` by a fresh client
    /// certificate (TLS clusters only). Bind it to roles to let it do anything.
    pub async fn client_as(&self, user: &str, groups: &[&str]) -> Result<kube::Client, Error> {
        let pki = self
            .pki
            .as_ref()
            .ok_or_else(|| Error::NotTls(self.name.clone()))?;
        let credentials = pki.issue(user, groups)?;
        self.client_with(&credentials).await
    }

    /// A kubeconfig for `user` in `groups` (TLS clusters only).
    pub fn kubeconfig_yaml_as(&self, user: &str, groups: &[&str]) -> Result<String, Error> {
        let pki = self
            .pki
            .as_ref()
            .ok_or_else(|| Error::NotTls(self.name.clone()))?;
        let credentials = pki.issue(user, groups)?;
        self.render_kubeconfig(Some(&credentials))
    }

    async fn client_with(&self, credentials: &ClientCredentials) -> Result<kube::Client, Error> {
        let yaml = self.render_kubeconfig(Some(credentials))?;
        let kubeconfig = kube::config::Kubeconfig::from_yaml(&yaml)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// Sets what `GET .../namespaces/<namespace>/pods/<pod>/log?container=<container>`
    /// returns: there is no kubelet, so the test says what the container printed.
    pub fn set_pod_log(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.logs.set(namespace, pod, container, text);
    }

    /// PEM of the CA that signed the client certificate this API server
    /// shows kubelets (user `kube-apiserver-kubelet-client`, group
    /// `system:masters`): a kubelet's `--client-ca-file`.
    pub fn kubelet_client_ca_pem(&self) -> String {
        self.kubelet_client_ca.clone()
    }

    /// A bearer token for `user` in `groups`, which a TokenReview on this
    /// cluster accepts (on plain and TLS clusters alike). The API server
    /// itself authenticates clients by certificate only.
    pub fn issue_token(&self, user: &str, groups: &[&str]) -> String {
        self.tokens.issue(User {
            name: user.to_owned(),
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
        })
    }

    /// Lets `kubelet` answer `pods/exec`, `pods/attach` and
    /// `pods/portforward` of every pod of this cluster, as the kubelet of
    /// its nodes. Without one, those requests go to the kubelet endpoint
    /// of the pod's Node, as kube-apiserver sends them.
    pub fn set_kubelet(&self, kubelet: Arc<dyn TestKubelet>) {
        self.kubelet.set(kubelet);
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
    /// after the cluster: plain HTTP without credentials, or on a TLS cluster
    /// the CA and the superuser's client certificate.
    pub fn kubeconfig_yaml(&self) -> Result<String, Error> {
        self.render_kubeconfig(self.admin.as_ref())
    }

    fn render_kubeconfig(&self, credentials: Option<&ClientCredentials>) -> Result<String, Error> {
        let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
        let user = match credentials {
            Some(c) => format!("{}-{}", self.name, c.user.name),
            None => format!("{}-admin", self.name),
        };
        let mut cluster = json!({"server": self.url});
        let mut user_entry = json!({});
        if let (Some(pki), Some(credentials)) = (&self.pki, credentials) {
            cluster["certificate-authority-data"] = json!(encode(&pki.ca_pem()));
            user_entry = json!({
                "client-certificate-data": encode(&credentials.certificate_pem),
                "client-key-data": encode(&credentials.key_pem),
            });
        }
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": self.name, "cluster": cluster}],
            "users": [{"name": user, "user": user_entry}],
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

fn plain_client(url: &str) -> Result<kube::Client, Error> {
    let uri = url.parse().map_err(|e: http::uri::InvalidUri| Error::Url {
        url: url.to_owned(),
        message: e.to_string(),
    })?;
    Ok(kube::Client::try_from(kube::Config::new(uri))?)
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
