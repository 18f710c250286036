//! The kubelet endpoints `kubectl logs` needs, answered by asking the
//! provider for the real pod's log through the tenant's identity.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::{api::LogParams, Api};
use strait_offloading::reflection::Reflection;
use tokio::net::TcpListener;

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, reflection: Arc<Reflection>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let reflection = reflection.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let reflection = reflection.clone();
                async move { Ok::<_, Infallible>(handle(&reflection, request).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response
}

async fn handle<B>(reflection: &Reflection, request: Request<B>) -> Response<Full<Bytes>> {
    let path = request.uri().path().to_owned();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match segments.as_slice() {
        ["healthz"] => text(StatusCode::OK, "ok".into()),
        ["containerLogs", namespace, pod, container] => {
            let Some(remote_namespace) = reflection.remote_namespace(namespace) else {
                return text(
                    StatusCode::NOT_FOUND,
                    format!("namespace {namespace} is not offloaded through this node"),
                );
            };
            let params = LogParams {
                container: Some((*container).to_owned()),
                ..LogParams::default()
            };
            match Api::<Pod>::namespaced(reflection.remote.clone(), &remote_namespace)
                .logs(pod, &params)
                .await
            {
                Ok(log) => text(StatusCode::OK, log),
                Err(kube::Error::Api(status)) => text(
                    StatusCode::from_u16(status.code).unwrap_or(StatusCode::BAD_GATEWAY),
                    format!(
                        "the provider refused the log of {namespace}/{pod}: {}",
                        status.message
                    ),
                ),
                Err(error) => text(
                    StatusCode::BAD_GATEWAY,
                    format!("the provider is unreachable: {error}"),
                ),
            }
        }
        ["exec", ..] | ["attach", ..] | ["portForward", ..] => text(
            StatusCode::NOT_IMPLEMENTED,
            "exec, attach and port-forward are not proxied by strait-virtual-kubelet yet".into(),
        ),
        _ => text(StatusCode::NOT_FOUND, format!("no kubelet endpoint {path}")),
    }
}

/// The address the server listens on, for the Node's daemon endpoint.
pub fn port_of(address: SocketAddr) -> u16 {
    address.port()
}
