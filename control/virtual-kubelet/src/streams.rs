//! exec, attach and port-forward: the kubelet-style request the API server
//! passes on (a websocket, `v5.channel.k8s.io` or `v4.channel.k8s.io`, or
//! SPDY/3.1, see `spdy_streams`) is answered by opening the same
//! subresource of the pod on the provider's API server, through the
//! tenant's identity (a websocket), and relaying the frames. The relay
//! works in the channel framing whatever the client's transport; a `v5`
//! close-stdin frame is dropped when one side speaks `v4`, which has none.

use bytes::Bytes;
use futures::{SinkExt as _, StreamExt as _};
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use strait_offloading::reflection::Reflection;
use tokio_tungstenite::{
    tungstenite::{self, protocol::Role, Message},
    WebSocketStream,
};

use crate::server::text;

const V5: &str = "v5.channel.k8s.io";
pub(crate) const V4: &str = "v4.channel.k8s.io";
/// A v5 frame that half-closes one channel.
pub(crate) const CLOSE_CHANNEL: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    pub(crate) fn subresource(self) -> &'static str {
        match self {
            Self::Exec => "exec",
            Self::Attach => "attach",
            Self::PortForward => "portforward",
        }
    }
}

/// A stream request, read from the kubelet path and query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub namespace: String,
    pub pod: String,
    /// Empty for port-forward.
    pub container: String,
}

fn values(query: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

pub(crate) fn flag(query: &str, keys: &[&str]) -> bool {
    keys.iter().any(|key| {
        values(query, key)
            .last()
            .is_some_and(|v| v == "1" || v == "true")
    })
}

/// The provider's API path for `target`, from the kubelet query (the
/// kubelet's `input`/`output`/`error`/`port` names, or the API's own).
pub fn provider_path(target: &Target, remote_namespace: &str, query: &str) -> String {
    let mut out = form_urlencoded::Serializer::new(String::new());
    match target.kind {
        Kind::PortForward => {
            let ports: Vec<String> = values(query, "port")
                .into_iter()
                .chain(values(query, "ports"))
                .flat_map(|v| {
                    v.split(',')
                        .map(|p| p.trim().to_owned())
                        .collect::<Vec<_>>()
                })
                .filter(|p| !p.is_empty())
                .collect();
            out.append_pair("ports", &ports.join(","));
        }
        Kind::Exec | Kind::Attach => {
            out.append_pair("container", &target.container);
            for (keys, name) in [
                (&["input", "stdin"][..], "stdin"),
                (&["output", "stdout"][..], "stdout"),
                (&["error", "stderr"][..], "stderr"),
                (&["tty"][..], "tty"),
            ] {
                if flag(query, keys) {
                    out.append_pair(name, "true");
                }
            }
            if target.kind == Kind::Exec {
                for command in values(query, "command") {
                    out.append_pair("command", &command);
                }
            }
        }
    }
    format!(
        "/api/v1/namespaces/{remote_namespace}/pods/{}/{}?{}",
        target.pod,
        target.kind.subresource(),
        out.finish()
    )
}

fn header_text(request: &Request<Incoming>, name: header::HeaderName) -> String {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned()
}

/// The provider's side of a relay: its API server's websocket.
pub(crate) type Upstream = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Opens `path` (from [`provider_path`]) on the provider: the websocket
/// and whether it speaks v5, or the answer to give the client.
pub(crate) async fn connect_upstream(
    provider: &kube::Client,
    path: &str,
    what: &str,
) -> Result<(Upstream, bool), Box<Response<Full<Bytes>>>> {
    let request = http::Request::get(path).body(Vec::new()).map_err(|error| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("bad request: {error}"),
        ))
    })?;
    match provider.connect(request).await {
        Ok(connection) => {
            let v5 = connection.supports_stream_close();
            Ok((connection.into_stream(), v5))
        }
        Err(kube::Error::UpgradeConnection(
            kube::client::UpgradeConnectionError::ProtocolSwitch(code),
        )) => Err(text(
            StatusCode::from_u16(code.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
            format!("the provider answered {code} to {what}"),
        )
        .into()),
        Err(error) => Err(text(
            StatusCode::BAD_GATEWAY,
            format!("the provider is unreachable: {error}"),
        )
        .into()),
    }
}

/// Where `target` lives on the provider and what to call it in messages,
/// or the answer to give the client.
pub(crate) fn remote_target(
    reflection: &Reflection,
    target: &Target,
) -> Result<(String, String), Box<Response<Full<Bytes>>>> {
    let Some(remote_namespace) = reflection.remote_namespace(&target.namespace) else {
        return Err(text(
            StatusCode::NOT_FOUND,
            format!(
                "namespace {} is not offloaded through this node",
                target.namespace
            ),
        )
        .into());
    };
    let what = format!(
        "{} of pod {}/{} (there {remote_namespace}/{})",
        target.kind.subresource(),
        target.namespace,
        target.pod,
        target.pod
    );
    Ok((remote_namespace, what))
}

/// Answers a stream request: 101 and a relay, or why not. Websockets
/// (what kube-rs and kubectl speak to an API server) and SPDY/3.1 (what
/// kube-apiserver speaks to kubelets) are both served.
pub async fn open(
    reflection: &Reflection,
    request: Request<Incoming>,
    target: Target,
) -> Response<Full<Bytes>> {
    let upgrade = header_text(&request, header::UPGRADE);
    if upgrade.eq_ignore_ascii_case(crate::spdy_streams::UPGRADE) {
        return crate::spdy_streams::open(reflection, request, target).await;
    }
    if !upgrade.eq_ignore_ascii_case("websocket") {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "{} needs an upgrade to SPDY/3.1 or to a websocket ({V5} or {V4})",
                target.kind.subresource()
            ),
        );
    }
    open_websocket(reflection, request, target).await
}

async fn open_websocket(
    reflection: &Reflection,
    mut request: Request<Incoming>,
    target: Target,
) -> Response<Full<Bytes>> {
    let offered = header_text(&request, header::SEC_WEBSOCKET_PROTOCOL);
    let offers = |protocol: &str| offered.split(',').any(|o| o.trim() == protocol);
    if !offers(V5) && !offers(V4) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("none of the offered subprotocols {offered:?} is served (want {V5} or {V4})"),
        );
    }
    let key = header_text(&request, header::SEC_WEBSOCKET_KEY);
    let (remote_namespace, what) = match remote_target(reflection, &target) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let path = provider_path(&target, &remote_namespace, &query);
    let (upstream, upstream_v5) = match connect_upstream(&reflection.remote, &path, &what).await {
        Ok(connected) => connected,
        Err(response) => return *response,
    };
    let downstream_protocol = match (upstream_v5, offers(V5)) {
        (true, true) => V5,
        (false, _) if offers(V4) => V4,
        (false, _) => V5,
        (true, false) => V4,
    };
    let downstream_v5 = downstream_protocol == V5;
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Some(upgraded) = upgraded(on_upgrade, &what).await else {
            return;
        };
        let downstream = WebSocketStream::from_raw_socket(upgraded, Role::Server, None).await;
        let (sink, source) = downstream.split();
        let result = relay(
            WebSocketFromClient(source),
            WebSocketToClient {
                sink,
                closed: false,
            },
            downstream_v5,
            upstream,
            upstream_v5,
        )
        .await;
        match result {
            Ok(()) => tracing::debug!(%what, "stream finished"),
            Err(error) => tracing::debug!(%what, %error, "stream ended with an error"),
        }
    });
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) =
        HeaderValue::from_str(&tungstenite::handshake::derive_accept_key(key.as_bytes()))
    {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    headers.insert(
        header::SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(downstream_protocol),
    );
    response
}

/// Why a relay ended early.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("websocket: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error("SPDY: {0}")]
    Spdy(#[from] crate::spdy::SpdyError),
}

/// The client's frames, in the channel framing (first byte the channel)
/// whatever the transport; `None` when the client is gone.
pub(crate) trait FromClient {
    async fn next_frame(&mut self) -> Option<Result<Bytes, RelayError>>;
}

/// Frames to the client, in the channel framing; `close` ends every
/// channel (called once the provider's side ends, and safe to repeat).
pub(crate) trait ToClient {
    async fn send_frame(&mut self, frame: Bytes) -> Result<(), RelayError>;
    async fn close(&mut self) -> Result<(), RelayError>;
}

struct WebSocketFromClient<S>(futures::stream::SplitStream<WebSocketStream<S>>);

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> FromClient
    for WebSocketFromClient<S>
{
    async fn next_frame(&mut self) -> Option<Result<Bytes, RelayError>> {
        loop {
            match self.0.next().await? {
                Ok(Message::Binary(frame)) => return Some(Ok(frame)),
                Ok(Message::Close(_)) => return None,
                Ok(_) => {}
                Err(error) => return Some(Err(error.into())),
            }
        }
    }
}

struct WebSocketToClient<S> {
    sink: futures::stream::SplitSink<WebSocketStream<S>, Message>,
    closed: bool,
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> ToClient for WebSocketToClient<S> {
    async fn send_frame(&mut self, frame: Bytes) -> Result<(), RelayError> {
        Ok(self.sink.send(Message::Binary(frame)).await?)
    }

    async fn close(&mut self) -> Result<(), RelayError> {
        if std::mem::replace(&mut self.closed, true) {
            return Ok(());
        }
        Ok(self.sink.send(Message::Close(None)).await?)
    }
}

/// Copies frames both ways until either side ends, then ends the other:
/// one relay for every transport the client speaks. A v5 close-channel
/// frame is dropped towards a side that does not speak v5.
pub(crate) async fn relay<U>(
    mut from_client: impl FromClient,
    mut to_client: impl ToClient,
    client_v5: bool,
    upstream: WebSocketStream<U>,
    upstream_v5: bool,
) -> Result<(), RelayError>
where
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut up_sink, mut up_source) = upstream.split();
    let to_provider = async {
        while let Some(frame) = from_client.next_frame().await {
            let frame = frame?;
            if frame.first() == Some(&CLOSE_CHANNEL) && !upstream_v5 {
                continue;
            }
            up_sink.send(Message::Binary(frame)).await?;
        }
        up_sink.send(Message::Close(None)).await?;
        Ok::<_, RelayError>(())
    };
    let to_client_side = async {
        while let Some(message) = up_source.next().await {
            match message? {
                Message::Binary(frame) if frame.first() == Some(&CLOSE_CHANNEL) && !client_v5 => {}
                Message::Binary(frame) => to_client.send_frame(frame).await?,
                Message::Close(_) => break,
                _ => {}
            }
        }
        Ok::<_, RelayError>(())
    };
    let result = tokio::select! {
        result = to_provider => result,
        result = to_client_side => result,
    };
    let closed = to_client.close().await;
    result.and(closed)
}

/// The client's connection once the 101 went out, or `None` (logged) when
/// the upgrade failed.
pub(crate) async fn upgraded(
    on_upgrade: hyper::upgrade::OnUpgrade,
    what: &str,
) -> Option<TokioIo<hyper::upgrade::Upgraded>> {
    match on_upgrade.await {
        Ok(upgraded) => Some(TokioIo::new(upgraded)),
        Err(error) => {
            tracing::debug!(%error, %what, "the client's upgrade failed");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_queries_become_the_provider_api_queries() {
        let exec = Target {
            kind: Kind::Exec,
            namespace: "shop".into(),
            pod: "web".into(),
            container: "app".into(),
        };
        assert_eq!(
            provider_path(
                &exec,
                "shop-x",
                "command=sh&command=-c&command=echo+hi&input=1&output=1&error=1"
            ),
            "/api/v1/namespaces/shop-x/pods/web/exec?container=app&stdin=true&stdout=true&stderr=true&command=sh&command=-c&command=echo+hi"
        );
        let forward = Target {
            kind: Kind::PortForward,
            namespace: "shop".into(),
            pod: "web".into(),
            container: String::new(),
        };
        assert_eq!(
            provider_path(&forward, "shop-x", "port=80&port=8080"),
            "/api/v1/namespaces/shop-x/pods/web/portforward?ports=80%2C8080"
        );
    }
}
