//! exec, attach and port-forward: the kubelet-style websocket request the
//! API server passes on (`v5.channel.k8s.io` or `v4.channel.k8s.io`) is
//! answered by opening the same subresource of the pod on the provider's
//! API server, through the tenant's identity, and relaying the frames.
//! The channel framing is the same on both legs; a `v5` close-stdin frame
//! is dropped when one side speaks `v4`, which has none.

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
const V4: &str = "v4.channel.k8s.io";
/// A v5 frame that half-closes one channel.
const CLOSE_CHANNEL: u8 = 255;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Exec,
    Attach,
    PortForward,
}

impl Kind {
    fn subresource(self) -> &'static str {
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

fn flag(query: &str, keys: &[&str]) -> bool {
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

/// Answers a stream request: 101 and a relay, or why not.
pub async fn open(
    reflection: &Reflection,
    mut request: Request<Incoming>,
    target: Target,
) -> Response<Full<Bytes>> {
    if !header_text(&request, header::UPGRADE).eq_ignore_ascii_case("websocket") {
        return text(
            StatusCode::BAD_REQUEST,
            format!(
                "{} needs a websocket upgrade ({V5} or {V4}); SPDY is not served by strait-virtual-kubelet",
                target.kind.subresource()
            ),
        );
    }
    let offered = header_text(&request, header::SEC_WEBSOCKET_PROTOCOL);
    let offers = |protocol: &str| offered.split(',').any(|o| o.trim() == protocol);
    if !offers(V5) && !offers(V4) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("none of the offered subprotocols {offered:?} is served (want {V5} or {V4})"),
        );
    }
    let key = header_text(&request, header::SEC_WEBSOCKET_KEY);
    let Some(remote_namespace) = reflection.remote_namespace(&target.namespace) else {
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "namespace {} is not offloaded through this node",
                target.namespace
            ),
        );
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let path = provider_path(&target, &remote_namespace, &query);
    let upstream_request = match http::Request::get(&path).body(Vec::new()) {
        Ok(r) => r,
        Err(error) => return text(StatusCode::BAD_REQUEST, format!("bad request: {error}")),
    };
    let upstream = match reflection.remote.connect(upstream_request).await {
        Ok(connection) => connection,
        Err(kube::Error::UpgradeConnection(
            kube::client::UpgradeConnectionError::ProtocolSwitch(code),
        )) => {
            return text(
                StatusCode::from_u16(code.as_u16()).unwrap_or(StatusCode::BAD_GATEWAY),
                format!(
                    "the provider answered {code} to {} of pod {}/{} (there {remote_namespace}/{})",
                    target.kind.subresource(),
                    target.namespace,
                    target.pod,
                    target.pod
                ),
            )
        }
        Err(error) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("the provider is unreachable: {error}"),
            )
        }
    };
    let upstream_v5 = upstream.supports_stream_close();
    let downstream_protocol = match (upstream_v5, offers(V5)) {
        (true, true) => V5,
        (false, _) if offers(V4) => V4,
        (false, _) => V5,
        (true, false) => V4,
    };
    let downstream_v5 = downstream_protocol == V5;
    let on_upgrade = hyper::upgrade::on(&mut request);
    let what = format!(
        "{} {}/{}",
        target.kind.subresource(),
        target.namespace,
        target.pod
    );
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(upgraded) => upgraded,
            Err(error) => {
                tracing::debug!(%error, %what, "the client's upgrade failed");
                return;
            }
        };
        let downstream =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        let result = relay(
            downstream,
            downstream_v5,
            upstream.into_stream(),
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

/// Copies frames both ways until either side closes, then closes the other.
async fn relay<D, U>(
    downstream: WebSocketStream<D>,
    downstream_v5: bool,
    upstream: WebSocketStream<U>,
    upstream_v5: bool,
) -> Result<(), tungstenite::Error>
where
    D: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    U: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut down_sink, mut down_source) = downstream.split();
    let (mut up_sink, mut up_source) = upstream.split();
    let to_provider = async {
        while let Some(message) = down_source.next().await {
            match message? {
                Message::Binary(frame) if frame.first() == Some(&CLOSE_CHANNEL) && !upstream_v5 => {
                }
                Message::Close(frame) => {
                    up_sink.send(Message::Close(frame)).await?;
                    return Ok(());
                }
                message @ (Message::Binary(_) | Message::Text(_)) => up_sink.send(message).await?,
                _ => {}
            }
        }
        up_sink.send(Message::Close(None)).await
    };
    let to_client = async {
        while let Some(message) = up_source.next().await {
            match message? {
                Message::Binary(frame)
                    if frame.first() == Some(&CLOSE_CHANNEL) && !downstream_v5 => {}
                Message::Close(frame) => {
                    down_sink.send(Message::Close(frame)).await?;
                    return Ok(());
                }
                message @ (Message::Binary(_) | Message::Text(_)) => {
                    down_sink.send(message).await?
                }
                _ => {}
            }
        }
        down_sink.send(Message::Close(None)).await
    };
    tokio::select! {
        result = to_provider => result,
        result = to_client => result,
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
