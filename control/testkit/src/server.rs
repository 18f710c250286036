//! The HTTP side: accepts connections on loopback, reads each request
//! (bounded), routes it, and renders replies and errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::header::{ACCEPT, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery;
use crate::error::ApiError;
use crate::handlers::{self, Call, Query, Reply};
use crate::kubelet::{self, KubeletSlot};
use crate::logs::PodLogs;
use crate::openapi;
use crate::pki::{Pki, User};
use crate::rbac;
use crate::registry::Registry;
use crate::routes::Target;
use crate::routes::{self, Route};
use crate::store::Store;
use crate::tokens::{self, Tokens};

/// The largest request body accepted (the API server's limit is 3 MiB per object).
const MAX_BODY: usize = 3 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

pub struct Server {
    pub registry: Arc<Registry>,
    pub store: Arc<Store>,
    pub address: SocketAddr,
    pub shutdown: watch::Receiver<bool>,
    /// Set for a TLS cluster: then every request must come with a client
    /// certificate from this CA and is authorized by RBAC.
    pub tls: Option<Tls>,
    /// What `pods/<name>/log` returns, set by the test.
    pub logs: Arc<PodLogs>,
    /// Bearer tokens issued, for TokenReviews.
    pub tokens: Arc<Tokens>,
    /// The test kubelet answering pod streams, once the test sets one.
    pub kubelet: Arc<KubeletSlot>,
    /// The client certificate this API server shows the kubelets it
    /// proxies to (kube-apiserver's `--kubelet-client-certificate`).
    pub kubelet_client: crate::pki::ClientCredentials,
}

pub struct Tls {
    pub pki: Arc<Pki>,
    pub acceptor: tokio_rustls::TlsAcceptor,
}

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves connections until `shutdown` turns true.
pub async fn serve(server: Arc<Server>, listener: TcpListener) {
    let mut shutdown = server.shutdown.clone();
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        tracing::warn!(%error, "accept failed");
                        continue;
                    }
                };
                let server = server.clone();
                connections.spawn(async move {
                    let Some(tls) = &server.tls else {
                        serve_connection(server.clone(), stream, None, peer).await;
                        return;
                    };
                    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.acceptor.accept(stream)).await;
                    let stream = match handshake {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let user = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|certificate| tls.pki.user_of(certificate));
                    serve_connection(server.clone(), stream, user, peer).await;
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts every connection still open.
    connections.abort_all();
}

async fn serve_connection<I>(server: Arc<Server>, io: I, user: Option<User>, peer: SocketAddr)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let user = Arc::new(user);
    let service = hyper::service::service_fn(move |request| {
        let server = server.clone();
        let user = user.clone();
        async move { Ok::<_, Infallible>(handle(&server, request, user.as_ref().as_ref()).await) }
    });
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if let Err(error) = builder
        .serve_connection_with_upgrades(TokioIo::new(io), service)
        .await
    {
        tracing::debug!(%peer, %error, "connection ended with an error");
    }
}

async fn handle(
    server: &Server,
    request: Request<Incoming>,
    user: Option<&User>,
) -> Response<Body> {
    if let Some(route) = kubelet::route(request.uri().path()) {
        return kubelet::serve(server, request, user, route).await;
    }
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let query = Query::parse(request.uri().query());
    let header = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &hyper::header::HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let content_type = header(CONTENT_TYPE);
    let accept = header(ACCEPT);
    let user_agent = header(USER_AGENT);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error_response(&ApiError::too_large(MAX_BODY)),
    };
    let parts = Parts {
        method: &method,
        path: &path,
        query: &query,
        body: &body,
        content_type: &content_type,
        accept: &accept,
        user_agent: &user_agent,
        user,
    };
    let result = dispatch(server, &parts);
    let response = match result {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
        Ok(Reply::Text(text)) => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, "text/plain")
            .body(BodyExt::boxed(Full::new(Bytes::from(text))))
            .unwrap_or_else(|_| plain_500()),
        Ok(Reply::Watch(receiver)) => {
            let stream = StreamBody::new(ReceiverStream::new(receiver));
            Response::builder()
                .status(StatusCode::OK)
                .header(CONTENT_TYPE, "application/json")
                .body(BodyExt::boxed(stream))
                .unwrap_or_else(|_| plain_500())
        }
        Err(error) => error_response(&error),
    };
    tracing::debug!(%method, %path, user = user.map(|u| u.name.as_str()), status = response.status().as_u16(), "request");
    response
}

/// A request, read.
struct Parts<'a> {
    method: &'a Method,
    path: &'a str,
    query: &'a Query,
    body: &'a [u8],
    content_type: &'a str,
    accept: &'a str,
    user_agent: &'a str,
    /// The authenticated user on a TLS cluster.
    user: Option<&'a User>,
}

fn dispatch(server: &Server, parts: &Parts) -> Result<Reply, ApiError> {
    let Parts {
        method,
        path,
        query,
        body,
        content_type,
        accept,
        user_agent,
        user,
    } = *parts;
    let registry = &server.registry;
    if server.tls.is_some() && user.is_none() {
        return Err(ApiError::unauthorized());
    }
    let route = routes::parse(registry, path)?;
    let read_only = |document: Value| {
        if method == Method::GET {
            Ok(Reply::Json(200, document))
        } else {
            Err(ApiError::method_not_allowed(method.as_str(), path))
        }
    };
    let target = match route {
        Route::Version => return read_only(discovery::version()),
        Route::CoreVersions => {
            return read_only(discovery::core_versions(&server.address.to_string()))
        }
        Route::Groups => return read_only(discovery::groups(registry)),
        Route::Group(group) => return read_only(discovery::group(registry, &group)),
        Route::Resources { group, version } => {
            return read_only(discovery::resources(registry, &group, &version))
        }
        Route::OpenApiRoot => return read_only(openapi::root(registry)),
        Route::OpenApiGroupVersion { group, version } => {
            return match openapi::group_version(registry, &group, &version) {
                Some(document) => read_only(document),
                None => Err(ApiError::path_not_found(path)),
            }
        }
        Route::PodLog { namespace, name } => {
            if *method != Method::GET {
                return Err(ApiError::method_not_allowed(method.as_str(), path));
            }
            if let (Some(_), Some(user)) = (&server.tls, user) {
                let attributes = rbac::Attributes {
                    verb: "get",
                    group: "",
                    resource: "pods/log",
                    namespace: Some(&namespace),
                    name: Some(&name),
                };
                if !rbac::allowed(&server.store.lock(), user, &attributes) {
                    return Err(ApiError::forbidden_by_rbac(
                        "",
                        "pods",
                        "pods",
                        Some(&name),
                        rbac::refusal(user, &attributes),
                    ));
                }
            }
            let text =
                server
                    .logs
                    .read(&server.store, &namespace, &name, query.get("container"))?;
            return Ok(Reply::Text(text));
        }
        Route::TokenReview | Route::SubjectAccessReview => {
            if *method != Method::POST {
                return Err(ApiError::method_not_allowed(method.as_str(), path));
            }
            let (group, plural) = if route == Route::TokenReview {
                ("authentication.k8s.io", "tokenreviews")
            } else {
                ("authorization.k8s.io", "subjectaccessreviews")
            };
            if let (Some(_), Some(user)) = (&server.tls, user) {
                let attributes = rbac::Attributes {
                    verb: "create",
                    group,
                    resource: plural,
                    namespace: None,
                    name: None,
                };
                if !rbac::allowed(&server.store.lock(), user, &attributes) {
                    return Err(ApiError::forbidden_by_rbac(
                        group,
                        plural,
                        &format!("{plural}.{group}"),
                        None,
                        rbac::refusal(user, &attributes),
                    ));
                }
            }
            let review = if route == Route::TokenReview {
                tokens::token_review(&server.tokens, &server.store.lock(), body)?
            } else {
                tokens::subject_access_review(&server.store.lock(), body)?
            };
            return Ok(Reply::Json(201, review));
        }
        Route::ServiceAccountToken { namespace, name } => {
            return service_account_token(server, parts, &namespace, &name)
        }
        Route::Object(target) => target,
    };
    let resource = registry.get(target.type_id);
    if resource.namespaced && target.name.is_some() && target.namespace.is_none() {
        return Err(ApiError::path_not_found(path));
    }
    let manager = query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let agent = user_agent.split('/').next().unwrap_or("").trim();
            if agent.is_empty() {
                "unknown".to_owned()
            } else {
                agent.to_owned()
            }
        });
    let call = Call {
        target: &target,
        resource,
        query,
        body,
        content_type,
        accept,
        manager,
    };
    let store = &server.store;
    let is_watch = query.flag("watch").unwrap_or(false);
    if let (Some(_), Some(user)) = (&server.tls, user) {
        authorize(server, user, method, &target, is_watch)?;
    }
    match (method, target.name.is_some()) {
        (&Method::GET, true) => handlers::read::get(store, &call),
        (&Method::GET, false) if is_watch => {
            handlers::read::watch(store, &call, server.shutdown.clone())
        }
        (&Method::GET, false) => handlers::read::list(store, &call),
        (&Method::POST, false) => handlers::write::create(store, &call),
        (&Method::PUT, true) => handlers::write::update(store, &call),
        (&Method::PATCH, true) => handlers::write::patch(store, &call),
        (&Method::DELETE, true) => handlers::delete::delete(store, &call),
        (&Method::DELETE, false) => handlers::delete::delete_collection(store, &call),
        _ => Err(ApiError::method_not_allowed(method.as_str(), path)),
    }
}

/// A TokenRequest: RBAC `create` on `serviceaccounts/token`.
fn service_account_token(
    server: &Server,
    parts: &Parts,
    namespace: &str,
    name: &str,
) -> Result<Reply, ApiError> {
    if *parts.method != Method::POST {
        return Err(ApiError::method_not_allowed(
            parts.method.as_str(),
            parts.path,
        ));
    }
    if let (Some(_), Some(user)) = (&server.tls, parts.user) {
        let attributes = rbac::Attributes {
            verb: "create",
            group: "",
            resource: "serviceaccounts/token",
            namespace: Some(namespace),
            name: Some(name),
        };
        if !rbac::allowed(&server.store.lock(), user, &attributes) {
            return Err(ApiError::forbidden_by_rbac(
                "",
                "serviceaccounts",
                "serviceaccounts",
                Some(name),
                rbac::refusal(user, &attributes),
            ));
        }
    }
    let issued = tokens::token_request(
        &server.tokens,
        &server.store.lock(),
        namespace,
        name,
        parts.body,
    )?;
    Ok(Reply::Json(201, issued))
}

/// RBAC for resource requests; discovery is open to every authenticated user.
fn authorize(
    server: &Server,
    user: &User,
    method: &Method,
    target: &Target,
    is_watch: bool,
) -> Result<(), ApiError> {
    let named = target.name.is_some();
    let verb = match *method {
        Method::GET if named => "get",
        Method::GET if is_watch => "watch",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => return Err(ApiError::method_not_allowed(method.as_str(), "resources")),
    };
    let resource = server.registry.get(target.type_id);
    let status_resource = format!("{}/status", resource.plural);
    let attributes = rbac::Attributes {
        verb,
        group: &resource.group,
        resource: if target.status {
            &status_resource
        } else {
            &resource.plural
        },
        namespace: target.namespace.as_deref(),
        name: target.name.as_deref(),
    };
    let allowed = rbac::allowed(&server.store.lock(), user, &attributes);
    tracing::debug!(user = %user.name, verb, resource = attributes.resource, allowed, "authorization");
    if allowed {
        Ok(())
    } else {
        Err(ApiError::forbidden_by_rbac(
            &resource.group,
            &resource.plural,
            &resource.group_resource(),
            target.name.as_deref(),
            rbac::refusal(user, &attributes),
        ))
    }
}

fn json_response(code: u16, value: &Value) -> Response<Body> {
    let body = serde_json::to_vec(value).unwrap_or_default();
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(CONTENT_TYPE, "application/json")
        .body(BodyExt::boxed(Full::new(Bytes::from(body))))
        .unwrap_or_else(|_| plain_500())
}

fn error_response(error: &ApiError) -> Response<Body> {
    tracing::debug!(code = error.code, reason = error.reason, message = %error.message, "refused");
    json_response(error.code, &error.to_status())
}

fn plain_500() -> Response<Body> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from_static(
        b"internal error",
    ))));
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
