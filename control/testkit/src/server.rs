//! The HTTP side: accepts connections on loopback, reads each request
//! (bounded), routes it, and renders replies and errors.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Full, Limited, StreamBody};
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;

use crate::discovery;
use crate::error::ApiError;
use crate::handlers::{self, Call, Query, Reply};
use crate::openapi;
use crate::registry::Registry;
use crate::routes::{self, Route};
use crate::store::Store;

/// The largest request body accepted (the API server's limit is 3 MiB per object).
const MAX_BODY: usize = 3 * 1024 * 1024;

type Body = BoxBody<Bytes, Infallible>;

pub struct Server {
    pub registry: Arc<Registry>,
    pub store: Arc<Store>,
    pub address: SocketAddr,
    pub shutdown: watch::Receiver<bool>,
}

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
                    let service = hyper::service::service_fn(move |request| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(handle(&server, request).await) }
                    });
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    if let Err(error) = builder.serve_connection(TokioIo::new(stream), service).await {
                        tracing::debug!(%peer, %error, "connection ended with an error");
                    }
                });
            }
            _ = shutdown.changed() => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Dropping the set aborts every connection still open.
    connections.abort_all();
}

async fn handle(server: &Server, request: Request<Incoming>) -> Response<Body> {
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
    let user_agent = header(USER_AGENT);
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return error_response(&ApiError::too_large(MAX_BODY)),
    };
    let result = dispatch(
        server,
        &method,
        &path,
        &query,
        &body,
        &content_type,
        &user_agent,
    );
    let response = match result {
        Ok(Reply::Json(code, value)) => json_response(code, &value),
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
    tracing::debug!(%method, %path, status = response.status().as_u16(), "request");
    response
}

fn dispatch(
    server: &Server,
    method: &Method,
    path: &str,
    query: &Query,
    body: &[u8],
    content_type: &str,
    user_agent: &str,
) -> Result<Reply, ApiError> {
    let registry = &server.registry;
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
        manager,
    };
    let store = &server.store;
    let is_watch = query.flag("watch").unwrap_or(false);
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
