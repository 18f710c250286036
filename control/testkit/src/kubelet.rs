//! What the API server asks of kubelets: `pods/exec`, `pods/attach`,
//! `pods/portforward` (websocket, `v5.channel.k8s.io` / `v4.channel.k8s.io`)
//! and `nodes/<name>/proxy/...`.
//!
//! Two ways to answer, like the two roles a test cluster plays:
//! - a test kubelet registered with `TestCluster::set_kubelet` answers the
//!   pod streams itself (the provider's side, where the test plays the
//!   kubelet: it runs a process, echoes, or connects to a local listener);
//! - otherwise the request goes to the kubelet endpoint the pod's Node
//!   publishes (`status.addresses`, `status.daemonEndpoints`), over HTTPS
//!   with the bearer token of the cluster's kubelet client, the upgrade
//!   passed through, as kube-apiserver proxies to a kubelet. As
//!   kube-apiserver does without `--kubelet-certificate-authority`, the
//!   kubelet's serving certificate is not verified.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{self, protocol::Role, Message};
use tokio_tungstenite::WebSocketStream;

use crate::error::ApiError;
use crate::pki::User;
use crate::rbac;
use crate::server::Server;

/// A boxed future, for the test kubelet's methods.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// One exec or attach into a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerCall {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// The command to run; empty for attach.
    pub command: Vec<String>,
    pub tty: bool,
}

/// The streams of a [`ContainerCall`], as the client asked for them.
pub struct ContainerIo {
    pub stdin: Option<Box<dyn AsyncRead + Send + Unpin>>,
    pub stdout: Option<Box<dyn AsyncWrite + Send + Unpin>>,
    pub stderr: Option<Box<dyn AsyncWrite + Send + Unpin>>,
}

/// A connection to a pod's port, for port-forward.
pub trait PodConnection: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> PodConnection for T {}

/// The kubelet of the pods of a test cluster, played by the test.
pub trait TestKubelet: Send + Sync {
    /// Runs the call with its streams; `Ok(exit code)`, or `Err(message)`
    /// when it could not start (the API server's `Failure` status).
    fn run(&self, call: ContainerCall, io: ContainerIo) -> BoxFuture<Result<i32, String>>;
    /// Connects to `port` of the pod.
    fn connect(
        &self,
        namespace: &str,
        pod: &str,
        port: u16,
    ) -> BoxFuture<std::io::Result<Box<dyn PodConnection>>>;
}

/// The test kubelet, once registered.
#[derive(Default)]
pub struct KubeletSlot(Mutex<Option<Arc<dyn TestKubelet>>>);

impl KubeletSlot {
    pub fn set(&self, kubelet: Arc<dyn TestKubelet>) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(kubelet);
    }

    fn get(&self) -> Option<Arc<dyn TestKubelet>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// The user the API server acts as towards kubelets (kubeadm's name for
/// it), allowed everything.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PodStream {
    Exec,
    Attach,
    PortForward,
}

impl PodStream {
    fn subresource(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
        }
    }
}

/// A request this module answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletRoute {
    Pod {
        namespace: String,
        pod: String,
        stream: PodStream,
    },
    NodeProxy {
        node: String,
        /// The kubelet path, from its leading `/`.
        path: String,
    },
}

pub fn route(path: &str) -> Option<KubeletRoute> {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", pod, sub] => {
            let stream = match *sub {
                "exec" => PodStream::Exec,
                "attach" => PodStream::Attach,
                "portforward" => PodStream::PortForward,
                _ => return None,
            };
            Some(KubeletRoute::Pod {
                namespace: (*namespace).to_owned(),
                pod: (*pod).to_owned(),
                stream,
            })
        }
        ["api", "v1", "nodes", node, "proxy", rest @ ..] => Some(KubeletRoute::NodeProxy {
            node: (*node).to_owned(),
            path: format!("/{}", rest.join("/")),
        }),
        _ => None,
    }
}

type Body = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    BodyExt::boxed(Full::new(bytes.into()))
}

fn refuse(error: &ApiError) -> Response<Body> {
    let mut response = Response::new(full(
        serde_json::to_vec(&error.to_status()).unwrap_or_default(),
    ));
    *response.status_mut() = StatusCode::from_u16(error.code).unwrap_or(StatusCode::BAD_GATEWAY);
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Answers a kubelet route.
pub async fn serve(
    server: &Server,
    request: Request<Incoming>,
    user: Option<&User>,
    route: KubeletRoute,
) -> Response<Body> {
    match answer(server, request, user, route).await {
        Ok(response) => response,
        Err(error) => refuse(&error),
    }
}

async fn answer(
    server: &Server,
    request: Request<Incoming>,
    user: Option<&User>,
    route: KubeletRoute,
) -> Result<Response<Body>, ApiError> {
    if server.tls.is_some() && user.is_none() {
        return Err(ApiError::unauthorized());
    }
    let query = request.uri().query().unwrap_or("").to_owned();
    match route {
        KubeletRoute::Pod {
            namespace,
            pod,
            stream,
        } => {
            // Opening a stream into a pod is `create` on the subresource
            // (what kube-apiserver checks for websocket upgrades too).
            let resource = format!("pods/{}", stream.subresource());
            authorize(server, user, "create", &resource, Some(&namespace), &pod)?;
            let spec = pod_spec(server, &namespace, &pod)?;
            let container = match stream {
                PodStream::PortForward => None,
                _ => Some(container_of(&spec, &pod, &query)?),
            };
            if let Some(kubelet) = server.kubelet.get() {
                return play(kubelet, request, namespace, pod, stream, container, &query);
            }
            let node = spec
                .get("nodeName")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .ok_or_else(|| {
                    ApiError::bad_request(format!("pod {pod} does not have a host assigned"))
                })?
                .to_owned();
            let path = match (stream, container) {
                (PodStream::PortForward, _) => format!("/portForward/{namespace}/{pod}"),
                (_, Some(container)) => {
                    format!("/{}/{namespace}/{pod}/{container}", stream.subresource())
                }
                (_, None) => return Err(ApiError::bad_request("no container")),
            };
            let kubelet_query = kubelet_query(stream, &query);
            proxy(server, request, &node, &path, &kubelet_query).await
        }
        KubeletRoute::NodeProxy { node, path } => {
            let verb = match *request.method() {
                Method::GET | Method::HEAD => "get",
                Method::POST => "create",
                Method::PUT => "update",
                Method::PATCH => "patch",
                Method::DELETE => "delete",
                _ => {
                    return Err(ApiError::method_not_allowed(
                        request.method().as_str(),
                        "nodes/proxy",
                    ))
                }
            };
            authorize(server, user, verb, "nodes/proxy", None, &node)?;
            proxy(server, request, &node, &path, &query).await
        }
    }
}

fn authorize(
    server: &Server,
    user: Option<&User>,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
    name: &str,
) -> Result<(), ApiError> {
    let (Some(_), Some(user)) = (&server.tls, user) else {
        return Ok(());
    };
    let attributes = rbac::Attributes {
        verb,
        group: "",
        resource,
        namespace,
        name: Some(name),
    };
    if rbac::allowed(&server.store.lock(), user, &attributes) {
        Ok(())
    } else {
        let plural = resource.split('/').next().unwrap_or(resource);
        Err(ApiError::forbidden_by_rbac(
            "",
            plural,
            plural,
            Some(name),
            rbac::refusal(user, &attributes),
        ))
    }
}

fn pod_spec(server: &Server, namespace: &str, pod: &str) -> Result<Value, ApiError> {
    let state = server.store.lock();
    let pods = state
        .registry()
        .find("", "v1", "pods")
        .ok_or_else(|| ApiError::path_not_found("pods"))?;
    state
        .get(pods, namespace, pod)
        .map(|p| p.get("spec").cloned().unwrap_or(Value::Null))
        .ok_or_else(|| ApiError::not_found("", "pods", "pods", pod))
}

fn query_values(query: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

fn query_flag(query: &str, key: &str) -> bool {
    query_values(query, key)
        .last()
        .is_some_and(|v| v == "true" || v == "1")
}

fn container_of(spec: &Value, pod: &str, query: &str) -> Result<String, ApiError> {
    let containers: Vec<&str> = spec
        .get("containers")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|c| c.get("name").and_then(Value::as_str))
                .collect()
        })
        .unwrap_or_default();
    match (
        query_values(query, "container").pop(),
        containers.as_slice(),
    ) {
        (Some(wanted), _) if containers.contains(&wanted.as_str()) => Ok(wanted),
        (Some(wanted), _) => Err(ApiError::bad_request(format!(
            "container {wanted} is not valid for pod {pod}"
        ))),
        (None, [only]) => Ok((*only).to_owned()),
        (None, _) => Err(ApiError::bad_request(format!(
            "a container name must be specified for pod {pod}, choose one of: {containers:?}"
        ))),
    }
}

/// The kubelet's query for a pod stream: `input`/`output`/`error`/`tty`
/// and `command` for exec and attach, `port` for port-forward, as
/// kube-apiserver rewrites the pod subresource's options.
fn kubelet_query(stream: PodStream, query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    match stream {
        PodStream::PortForward => {
            for value in query_values(query, "ports") {
                for port in value.split(',').filter(|p| !p.is_empty()) {
                    out.append_pair("port", port.trim());
                }
            }
        }
        PodStream::Exec | PodStream::Attach => {
            for (from, to) in [
                ("stdin", "input"),
                ("stdout", "output"),
                ("stderr", "error"),
                ("tty", "tty"),
            ] {
                if query_flag(query, from) {
                    out.append_pair(to, "1");
                }
            }
            for command in query_values(query, "command") {
                out.append_pair("command", &command);
            }
        }
    }
    out.finish()
}

// ---- the API server's side of a kubelet connection ----

/// A TLS verifier that accepts any kubelet serving certificate, as
/// kube-apiserver does when it is given no kubelet CA.
#[derive(Debug)]
struct AnyKubeletCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyKubeletCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn kubelet_client_chain(
    server: &Server,
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, ApiError> {
    use rustls::pki_types::{pem::PemObject as _, CertificateDer};
    CertificateDer::pem_slice_iter(server.kubelet_client.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            ApiError::new(
                500,
                "InternalError",
                format!("the kubelet client certificate: {e}"),
            )
        })
}

fn kubelet_client_key(
    server: &Server,
) -> Result<rustls::pki_types::PrivateKeyDer<'static>, ApiError> {
    use rustls::pki_types::{pem::PemObject as _, PrivateKeyDer};
    PrivateKeyDer::from_pem_slice(server.kubelet_client.key_pem.as_bytes())
        .map_err(|e| ApiError::new(500, "InternalError", format!("the kubelet client key: {e}")))
}

/// Where the Node says its kubelet listens.
fn kubelet_address(server: &Server, node: &str) -> Result<(String, u16), ApiError> {
    let state = server.store.lock();
    let nodes = state
        .registry()
        .find("", "v1", "nodes")
        .ok_or_else(|| ApiError::path_not_found("nodes"))?;
    let object = state
        .get(nodes, "", node)
        .ok_or_else(|| ApiError::not_found("", "nodes", "nodes", node))?;
    let addresses = object
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let address_of = |kind: &str| {
        addresses
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(kind))
            .and_then(|a| a.get("address").and_then(Value::as_str))
            .map(str::to_owned)
    };
    let address = address_of("InternalIP")
        .or_else(|| address_of("ExternalIP"))
        .or_else(|| address_of("Hostname"))
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node} publishes no address"),
            )
        })?;
    let port = object
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            ApiError::new(
                503,
                "ServiceUnavailable",
                format!("node {node} publishes no kubelet port"),
            )
        })?;
    Ok((address, port))
}

/// The stream protocols a SPDY client offers and the kubelet picks.
const STREAM_PROTOCOL: header::HeaderName =
    header::HeaderName::from_static("x-stream-protocol-version");

/// Request headers passed to the kubelet; the rest (credentials above all)
/// stay here.
const FORWARDED_HEADERS: [header::HeaderName; 8] = [
    STREAM_PROTOCOL,
    header::CONNECTION,
    header::UPGRADE,
    header::SEC_WEBSOCKET_KEY,
    header::SEC_WEBSOCKET_VERSION,
    header::SEC_WEBSOCKET_PROTOCOL,
    header::ACCEPT,
    header::CONTENT_TYPE,
];

async fn proxy(
    server: &Server,
    mut request: Request<Incoming>,
    node: &str,
    path: &str,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let (address, port) = kubelet_address(server, node)?;
    let unreachable = |what: String| {
        ApiError::new(
            502,
            "ServiceUnavailable",
            format!("the kubelet of node {node} at {address}:{port}: {what}"),
        )
    };
    let upgrade = request.headers().contains_key(header::UPGRADE);
    let downstream_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let method = request.method().clone();
    let mut headers = hyper::HeaderMap::new();
    for name in FORWARDED_HEADERS {
        for value in request.headers().get_all(&name) {
            headers.append(name.clone(), value.clone());
        }
    }
    let body = Limited::new(request.into_body(), 3 * 1024 * 1024)
        .collect()
        .await
        .map_err(|_| ApiError::bad_request("request body too large"))?
        .to_bytes();

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyKubeletCertificate(provider)))
        .with_client_auth_cert(kubelet_client_chain(server)?, kubelet_client_key(server)?)
        .map_err(|e| unreachable(format!("the kubelet client certificate: {e}")))?;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect((address.as_str(), port))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let name = rustls::pki_types::ServerName::try_from(address.clone())
        .map_err(|e| unreachable(e.to_string()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| unreachable(format!("TLS: {e}")))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    tokio::spawn(async move {
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "kubelet connection ended");
        }
    });
    let uri = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let mut upstream = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, format!("{address}:{port}"))
        .body(Full::new(body))
        .map_err(|e| unreachable(e.to_string()))?;
    upstream.headers_mut().extend(headers);
    let mut response = sender
        .send_request(upstream)
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(downstream) = downstream_upgrade else {
            return Err(unreachable("switched protocols unasked".into()));
        };
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream_upgrade) {
                Ok((down, up)) => {
                    let (mut down, mut up) = (TokioIo::new(down), TokioIo::new(up));
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                }
                Err(error) => tracing::debug!(%error, "kubelet stream upgrade failed"),
            }
        });
        let mut answer = Response::new(full(Bytes::new()));
        *answer.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        for name in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_ACCEPT,
            header::SEC_WEBSOCKET_PROTOCOL,
            STREAM_PROTOCOL,
        ] {
            if let Some(value) = response.headers().get(&name) {
                answer.headers_mut().insert(name, value.clone());
            }
        }
        return Ok(answer);
    }
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = Limited::new(response.into_body(), 16 * 1024 * 1024)
        .collect()
        .await
        .map_err(|e| unreachable(e.to_string()))?
        .to_bytes();
    let mut answer = Response::new(full(body));
    *answer.status_mut() = status;
    if let Some(content_type) = content_type {
        answer
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    Ok(answer)
}

// ---- the test kubelet's side: the websocket stream protocols ----

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const CLOSE: u8 = 255;

/// The subprotocols served, preferred first.
const PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

fn play(
    kubelet: Arc<dyn TestKubelet>,
    mut request: Request<Incoming>,
    namespace: String,
    pod: String,
    stream: PodStream,
    container: Option<String>,
    query: &str,
) -> Result<Response<Body>, ApiError> {
    let header_text = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    if !header_text(header::UPGRADE).eq_ignore_ascii_case("websocket") {
        return Err(ApiError::bad_request(
            "this test cluster serves pod streams over websockets only (v5.channel.k8s.io, v4.channel.k8s.io)",
        ));
    }
    let key = header_text(header::SEC_WEBSOCKET_KEY);
    let offered = header_text(header::SEC_WEBSOCKET_PROTOCOL);
    let protocol = PROTOCOLS
        .into_iter()
        .find(|p| offered.split(',').any(|o| o.trim() == *p))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "none of the offered subprotocols {offered:?} is served (want one of {PROTOCOLS:?})"
            ))
        })?;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let call = ContainerCall {
        namespace,
        pod,
        container: container.unwrap_or_default(),
        command: query_values(query, "command"),
        tty: query_flag(query, "tty"),
    };
    let wants = |key: &str| query_flag(query, key);
    let (stdin, stdout, stderr) = (wants("stdin"), wants("stdout"), wants("stderr"));
    let ports: Vec<u16> = query_values(query, "ports")
        .iter()
        .flat_map(|v| {
            v.split(',')
                .map(str::trim)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter_map(|p| p.parse().ok())
        .collect();
    if stream == PodStream::PortForward && ports.is_empty() {
        return Err(ApiError::bad_request(
            "port-forward needs at least one port",
        ));
    }
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, "pod stream upgrade failed");
                return;
            }
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let result = match stream {
            PodStream::PortForward => forward_ports(kubelet, socket, &call, &ports).await,
            _ => run_container(kubelet, socket, call, stdin, stdout, stderr).await,
        };
        if let Err(error) = result {
            tracing::debug!(%error, "pod stream ended with an error");
        }
    });
    let mut response = Response::new(full(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    headers.insert(
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_str(&accept).map_err(|e| ApiError::bad_request(e.to_string()))?,
    );
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(protocol),
    );
    Ok(response)
}

type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Copies `reader` into `channel` frames until it ends.
async fn pump(mut reader: impl AsyncRead + Unpin, channel: u8, frames: mpsc::Sender<Vec<u8>>) {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer[1..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                buffer[0] = channel;
                if frames.send(buffer[..=n].to_vec()).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The `Status` written on the error channel when a call ends.
fn exit_status(result: &Result<i32, String>, command: &[String]) -> Value {
    match result {
        Ok(0) => json!({"metadata": {}, "status": "Success"}),
        Ok(code) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!("command terminated with non-zero exit code: error executing command {command:?}, exit code {code}"),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        Err(message) => json!({"metadata": {}, "status": "Failure", "message": message}),
    }
}

async fn run_container(
    kubelet: Arc<dyn TestKubelet>,
    socket: Socket,
    call: ContainerCall,
    stdin: bool,
    stdout: bool,
    stderr: bool,
) -> Result<(), tungstenite::Error> {
    let (mut sink, mut source) = socket.split();
    let (stdin_writer, stdin_reader) = tokio::io::duplex(64 * 1024);
    let (stdout_writer, stdout_reader) = tokio::io::duplex(64 * 1024);
    let (stderr_writer, stderr_reader) = tokio::io::duplex(64 * 1024);
    let io = ContainerIo {
        stdin: stdin.then(|| Box::new(stdin_reader) as Box<dyn AsyncRead + Send + Unpin>),
        stdout: stdout.then(|| Box::new(stdout_writer) as Box<dyn AsyncWrite + Send + Unpin>),
        stderr: stderr.then(|| Box::new(stderr_writer) as Box<dyn AsyncWrite + Send + Unpin>),
    };
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(16);
    let command = call.command.clone();
    let producer = {
        let frames = frames.clone();
        async move {
            let (result, (), ()) = tokio::join!(
                kubelet.run(call, io),
                pump(stdout_reader, STDOUT, frames.clone()),
                pump(stderr_reader, STDERR, frames.clone()),
            );
            let mut status = vec![STATUS];
            status.extend(serde_json::to_vec(&exit_status(&result, &command)).unwrap_or_default());
            let _ = frames.send(status).await;
        }
    };
    drop(frames);
    let writer = async {
        while let Some(frame) = outgoing.recv().await {
            sink.send(Message::binary(frame)).await?;
        }
        sink.send(Message::Close(None)).await
    };
    let reader = async move {
        let mut stdin_writer = Some(stdin_writer);
        while let Some(Ok(message)) = source.next().await {
            tracing::trace!(?message, "pod stream frame from the client");
            match message {
                Message::Binary(bytes) => match bytes.first() {
                    Some(&STDIN) => {
                        if let Some(writer) = stdin_writer.as_mut() {
                            if writer.write_all(&bytes[1..]).await.is_err() {
                                stdin_writer = None;
                            }
                        }
                    }
                    // v5: the client closed its stdin.
                    Some(&CLOSE) if bytes.get(1) == Some(&STDIN) => stdin_writer = None,
                    _ => {}
                },
                Message::Close(_) => break,
                _ => {}
            }
        }
        // The socket is gone: let the call see the end of its stdin.
        drop(stdin_writer);
        std::future::pending::<()>().await;
    };
    let (_, written) = tokio::select! {
        done = async { tokio::join!(producer, writer) } => done,
        () = reader => unreachable!("the reader never finishes on its own"),
    };
    written
}

async fn forward_ports(
    kubelet: Arc<dyn TestKubelet>,
    socket: Socket,
    call: &ContainerCall,
    ports: &[u16],
) -> Result<(), tungstenite::Error> {
    let (mut sink, mut source) = socket.split();
    let (frames, mut outgoing) = mpsc::channel::<Vec<u8>>(16);
    let mut writers = Vec::new();
    let mut pumps = Vec::new();
    for (index, port) in ports.iter().enumerate() {
        let data = u8::try_from(2 * index).unwrap_or(u8::MAX - 1);
        let [low, high] = port.to_le_bytes();
        // Each channel opens with the port it carries.
        sink.send(Message::binary(vec![data, low, high])).await?;
        sink.send(Message::binary(vec![data + 1, low, high]))
            .await?;
        match kubelet.connect(&call.namespace, &call.pod, *port).await {
            Ok(connection) => {
                let (reader, writer) = tokio::io::split(connection);
                writers.push(Some(writer));
                pumps.push(pump(reader, data, frames.clone()));
            }
            Err(error) => {
                writers.push(None);
                let mut message = vec![data + 1];
                message.extend(
                    format!("error forwarding port {port} to pod {}: {error}", call.pod)
                        .into_bytes(),
                );
                sink.send(Message::binary(message)).await?;
            }
        }
    }
    drop(frames);
    let pumps = futures::future::join_all(pumps);
    let writer = async {
        while let Some(frame) = outgoing.recv().await {
            sink.send(Message::binary(frame)).await?;
        }
        sink.send(Message::Close(None)).await
    };
    let reader = async move {
        while let Some(Ok(message)) = source.next().await {
            match message {
                Message::Binary(bytes) if bytes.len() > 1 && bytes[0] % 2 == 0 => {
                    let index = usize::from(bytes[0] / 2);
                    if let Some(Some(writer)) = writers.get_mut(index) {
                        if writer.write_all(&bytes[1..]).await.is_err() {
                            writers[index] = None;
                        }
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    };
    tokio::select! {
        (_, written) = async { tokio::join!(pumps, writer) } => written,
        () = reader => Ok(()),
    }
}
