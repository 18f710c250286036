//! The kubelet endpoints (`kubectl logs`, `exec`, `attach`, `port-forward`
//! reach them through the API server): HTTPS, every request authenticated
//! and authorized as a kubelet does it (see `auth`), then answered by
//! asking the provider for the real pod through the tenant's identity.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, header, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::api::core::v1::Pod;
use kube::{api::LogParams, Api};
use rustls::pki_types::CertificateDer;
use strait_offloading::reflection::Reflection;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::{
    auth::{Gatekeeper, Refusal},
    streams,
};

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What serving needs.
pub struct Endpoint {
    pub reflection: Arc<Reflection>,
    pub gatekeeper: Gatekeeper,
    pub tls: TlsAcceptor,
}

/// Serves until the listener fails.
pub async fn serve(listener: TcpListener, endpoint: Arc<Endpoint>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(%error, "accept failed");
                continue;
            }
        };
        let endpoint = endpoint.clone();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, endpoint.tls.accept(stream)).await {
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
            // Verified against --client-ca-file by the handshake when present.
            let certificate: Option<Arc<CertificateDer<'static>>> = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .map(|c| Arc::new(c.clone().into_owned()));
            let service = hyper::service::service_fn(move |request| {
                let endpoint = endpoint.clone();
                let certificate = certificate.clone();
                async move {
                    Ok::<_, Infallible>(handle(&endpoint, certificate.as_deref(), request).await)
                }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(error) = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%peer, %error, "connection ended with an error");
            }
        });
    }
}

pub(crate) fn text(code: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = code;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(
    endpoint: &Endpoint,
    certificate: Option<&CertificateDer<'static>>,
    request: Request<Incoming>,
) -> Response<Full<Bytes>> {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let gatekeeper = &endpoint.gatekeeper;
    let checked = match gatekeeper.authenticate(certificate, authorization).await {
        Ok(requester) => gatekeeper
            .authorize(&requester, &method, &path)
            .await
            .map(|()| requester),
        Err(refusal) => Err(refusal),
    };
    let requester = match checked {
        Ok(requester) => requester,
        Err(refusal) => {
            tracing::info!(%method, %path, ?refusal, "kubelet request refused");
            return match refusal {
                Refusal::Unauthenticated(why) => {
                    text(StatusCode::UNAUTHORIZED, format!("Unauthorized: {why}\n"))
                }
                Refusal::Forbidden(why) => text(StatusCode::FORBIDDEN, format!("{why}\n")),
                Refusal::ReviewFailed(why) => text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("cannot check the request with the cluster: {why}\n"),
                ),
            };
        }
    };
    tracing::debug!(%method, %path, user = %requester.name, "kubelet request");
    let reflection = &endpoint.reflection;
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let stream = |kind, namespace: &str, pod: &str, container: &str| streams::Target {
        kind,
        namespace: namespace.to_owned(),
        pod: pod.to_owned(),
        container: container.to_owned(),
    };
    // The kubelet also takes a pod UID before the container; it is not needed here.
    let target = match segments.as_slice() {
        ["healthz"] => return text(StatusCode::OK, "ok".into()),
        ["containerLogs", namespace, pod, container] => {
            if let Err(response) = runs_here(reflection, namespace, pod).await {
                return response;
            }
            return container_log(reflection, namespace, pod, container).await;
        }
        ["exec", namespace, pod, container] | ["exec", namespace, pod, _, container] => {
            stream(streams::Kind::Exec, namespace, pod, container)
        }
        ["attach", namespace, pod, container] | ["attach", namespace, pod, _, container] => {
            stream(streams::Kind::Attach, namespace, pod, container)
        }
        ["portForward", namespace, pod] | ["portForward", namespace, pod, _] => {
            stream(streams::Kind::PortForward, namespace, pod, "")
        }
        _ => return text(StatusCode::NOT_FOUND, format!("no kubelet endpoint {path}")),
    };
    if let Err(response) = runs_here(reflection, &target.namespace, &target.pod).await {
        return response;
    }
    streams::open(reflection, request, target).await
}

/// A kubelet serves only its own pods: the pod must be bound to this node.
async fn runs_here(
    reflection: &Reflection,
    namespace: &str,
    pod: &str,
) -> Result<(), Response<Full<Bytes>>> {
    match Api::<Pod>::namespaced(reflection.local.clone(), namespace)
        .get_opt(pod)
        .await
    {
        Ok(Some(found))
            if found.spec.as_ref().and_then(|s| s.node_name.as_deref())
                == Some(reflection.node_name.as_str()) =>
        {
            Ok(())
        }
        Ok(_) => Err(text(
            StatusCode::NOT_FOUND,
            format!(
                "pod {namespace}/{pod} does not run on node {}",
                reflection.node_name
            ),
        )),
        Err(error) => Err(text(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("reading pod {namespace}/{pod}: {error}"),
        )),
    }
}

async fn container_log(
    reflection: &Reflection,
    namespace: &str,
    pod: &str,
    container: &str,
) -> Response<Full<Bytes>> {
    let Some(remote_namespace) = reflection.remote_namespace(namespace) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("namespace {namespace} is not offloaded through this node"),
        );
    };
    let params = LogParams {
        container: Some(container.to_owned()),
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
