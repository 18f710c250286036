//! exec, attach and port-forward over SPDY/3.1, as kube-apiserver asks a
//! kubelet for them: the client opens one SPDY stream per channel, named
//! by its `streamtype` header (`error`, `stdin`, `stdout`, `stderr`,
//! `resize`; for port-forward `error` and `data` pairs with `port` and
//! `requestid`). The streams are turned into the channel framing and
//! relayed to the provider by the same relay as websockets
//! (`streams::relay`). Remote command speaks `v4.channel.k8s.io`: the exit
//! status comes as a `metav1.Status` on the error stream.

use std::{collections::HashMap, time::Duration};

use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::Full;
use hyper::{
    body::Incoming,
    header::{self, HeaderValue},
    Request, Response, StatusCode,
};
use strait_offloading::reflection::Reflection;
use tokio::sync::mpsc;

use crate::{
    server::text,
    spdy::{Session, Stream, StreamWriter},
    streams::{self, FromClient, Kind, RelayError, Target, ToClient, CLOSE_CHANNEL, V4},
};

/// The `Upgrade` token.
pub const UPGRADE: &str = "SPDY/3.1";
/// The header both sides name the stream protocol in.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Port-forward's only protocol.
const PORT_FORWARD: &str = "portforward.k8s.io";
/// How long the client may take to open the streams it announced (the
/// kubelet's default stream-creation timeout).
const STREAMS_WAIT: Duration = Duration::from_secs(30);
/// Port-forward pairs waiting for their second stream.
const MAX_PENDING_PAIRS: usize = 64;
/// The longest resize message buffered.
const MAX_RESIZE_MESSAGE: usize = 4096;

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const ERROR: u8 = 3;
const RESIZE: u8 = 4;

/// Answers an upgrade to SPDY/3.1.
pub async fn open(
    reflection: &Reflection,
    mut request: Request<Incoming>,
    target: Target,
) -> Response<Full<Bytes>> {
    let offered: Vec<String> = request
        .headers()
        .get_all(PROTOCOL_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|p| p.trim().to_owned()))
        .collect();
    let served = match target.kind {
        Kind::PortForward => PORT_FORWARD,
        Kind::Exec | Kind::Attach => V4,
    };
    if !offered.iter().any(|p| p == served) {
        return text(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: no common protocol: {served} is served, {offered:?} offered"
            ),
        );
    }
    let (remote_namespace, what) = match streams::remote_target(reflection, &target) {
        Ok(found) => found,
        Err(response) => return *response,
    };
    let query = request.uri().query().unwrap_or("").to_owned();
    let on_upgrade = hyper::upgrade::on(&mut request);
    match target.kind {
        Kind::Exec | Kind::Attach => {
            let path = streams::provider_path(&target, &remote_namespace, &query);
            // Opened first, so that a refusal is an HTTP answer.
            let (upstream, upstream_v5) =
                match streams::connect_upstream(&reflection.remote, &path, &what).await {
                    Ok(connected) => connected,
                    Err(response) => return *response,
                };
            let expected = Expected::from_query(&query);
            tokio::spawn(async move {
                let Some(upgraded) = streams::upgraded(on_upgrade, &what).await else {
                    return;
                };
                let mut session = Session::start(upgraded);
                let channels = match tokio::time::timeout(
                    STREAMS_WAIT,
                    expected.collect(&mut session),
                )
                .await
                {
                    Ok(Ok(channels)) => channels,
                    Ok(Err(why)) => {
                        tracing::info!(%what, %why, "SPDY stream request abandoned");
                        return;
                    }
                    Err(_) => {
                        tracing::info!(%what, "the client did not open its SPDY streams in time");
                        return;
                    }
                };
                let (from_client, to_client) = channels.into_relay_sides(session);
                match streams::relay(from_client, to_client, false, upstream, upstream_v5).await {
                    Ok(()) => tracing::debug!(%what, "stream finished"),
                    Err(error) => tracing::debug!(%what, %error, "stream ended with an error"),
                }
            });
        }
        Kind::PortForward => {
            let provider = reflection.remote.clone();
            tokio::spawn(async move {
                let Some(upgraded) = streams::upgraded(on_upgrade, &what).await else {
                    return;
                };
                let session = Session::start(upgraded);
                forward_ports(session, provider, target, remote_namespace, what).await;
            });
        }
    }
    let mut response = text(StatusCode::SWITCHING_PROTOCOLS, String::new());
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE));
    headers.insert(PROTOCOL_HEADER, HeaderValue::from_static(served));
    response
}

/// The streams an exec or attach client opens, from the kubelet query.
struct Expected {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    resize: bool,
}

/// The streams of one exec or attach.
#[derive(Default)]
struct Channels {
    error: Option<Stream>,
    stdin: Option<Stream>,
    stdout: Option<Stream>,
    stderr: Option<Stream>,
    resize: Option<Stream>,
}

impl Expected {
    fn from_query(query: &str) -> Self {
        let tty = streams::flag(query, &["tty"]);
        Self {
            stdin: streams::flag(query, &["input", "stdin"]),
            stdout: streams::flag(query, &["output", "stdout"]),
            // A terminal merges stderr into stdout.
            stderr: streams::flag(query, &["error", "stderr"]) && !tty,
            resize: tty,
        }
    }

    /// Accepts streams until every expected one is open.
    async fn collect(self, session: &mut Session) -> Result<Channels, String> {
        let mut channels = Channels::default();
        let complete = |c: &Channels| {
            c.error.is_some()
                && c.stdin.is_some() == self.stdin
                && c.stdout.is_some() == self.stdout
                && c.stderr.is_some() == self.stderr
                && c.resize.is_some() == self.resize
        };
        while !complete(&channels) {
            let stream = session
                .accept()
                .await
                .ok_or("the client went away before opening its streams")?;
            stream
                .writer
                .reply()
                .await
                .map_err(|e| format!("accepting stream {}: {e}", stream.id))?;
            let slot = match stream.header("streamtype") {
                Some("error") => &mut channels.error,
                Some("stdin") if self.stdin => &mut channels.stdin,
                Some("stdout") if self.stdout => &mut channels.stdout,
                Some("stderr") if self.stderr => &mut channels.stderr,
                Some("resize") if self.resize => &mut channels.resize,
                other => return Err(format!("unexpected stream type {other:?}")),
            };
            if slot.replace(stream).is_some() {
                return Err("a stream type was opened twice".into());
            }
        }
        Ok(channels)
    }
}

impl Channels {
    fn into_relay_sides(self, session: Session) -> (SpdyFromClient, SpdyToClient) {
        let (frames, incoming) = mpsc::channel(8);
        let writers = [
            &self.error,
            &self.stdin,
            &self.stdout,
            &self.stderr,
            &self.resize,
        ]
        .into_iter()
        .flatten()
        .map(|s| s.writer.clone())
        .collect();
        let to_client = SpdyToClient {
            channels: [
                (STDOUT, self.stdout.as_ref().map(|s| s.writer.clone())),
                (STDERR, self.stderr.as_ref().map(|s| s.writer.clone())),
                (ERROR, self.error.as_ref().map(|s| s.writer.clone())),
            ],
            all: writers,
        };
        if let Some(stdin) = self.stdin {
            tokio::spawn(pump_stdin(stdin.data, frames.clone()));
        }
        if let Some(resize) = self.resize {
            tokio::spawn(pump_resize(resize.data, frames.clone()));
        }
        drop(frames);
        (
            SpdyFromClient {
                incoming: Some(incoming),
                session,
            },
            to_client,
        )
    }
}

fn channel_frame(channel: u8, data: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(data.len() + 1);
    frame.put_u8(channel);
    frame.put_slice(data);
    frame.freeze()
}

/// stdin's data on channel 0, its end as a v5 close of channel 0.
async fn pump_stdin(mut data: mpsc::Receiver<Bytes>, frames: mpsc::Sender<Bytes>) {
    while let Some(chunk) = data.recv().await {
        if frames.send(channel_frame(STDIN, &chunk)).await.is_err() {
            return;
        }
    }
    let _ = frames.send(Bytes::from(vec![CLOSE_CHANNEL, STDIN])).await;
}

/// Terminal sizes, one JSON object per line, each a frame on channel 4.
async fn pump_resize(mut data: mpsc::Receiver<Bytes>, frames: mpsc::Sender<Bytes>) {
    let mut pending = BytesMut::new();
    while let Some(chunk) = data.recv().await {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|b| *b == b'\n') {
            let line = pending.split_to(end + 1);
            let message = line.strip_suffix(b"\n").unwrap_or(&line);
            if !message.is_empty() && frames.send(channel_frame(RESIZE, message)).await.is_err() {
                return;
            }
        }
        if pending.len() > MAX_RESIZE_MESSAGE {
            tracing::info!("a resize message without an end; dropped");
            pending.clear();
        }
    }
    if !pending.is_empty() {
        let _ = frames.send(channel_frame(RESIZE, &pending)).await;
    }
}

/// The client's side of an exec or attach: its stdin and resize frames
/// until the session ends (the streams may all be finished long before the
/// command ends).
struct SpdyFromClient {
    incoming: Option<mpsc::Receiver<Bytes>>,
    session: Session,
}

impl FromClient for SpdyFromClient {
    async fn next_frame(&mut self) -> Option<Result<Bytes, RelayError>> {
        loop {
            let next = async {
                match self.incoming.as_mut() {
                    Some(incoming) => incoming.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                frame = next => match frame {
                    Some(frame) => return Some(Ok(frame)),
                    None => self.incoming = None,
                },
                stream = self.session.accept() => match stream {
                    // Streams past the expected ones are refused by being dropped unanswered.
                    Some(stream) => tracing::debug!(stream = stream.id, "unexpected SPDY stream"),
                    None => return None,
                },
            }
        }
    }
}

/// Output to the client: channel 1 to stdout, 2 to stderr, 3 (the
/// status) to the error stream.
struct SpdyToClient {
    channels: [(u8, Option<StreamWriter>); 3],
    all: Vec<StreamWriter>,
}

impl ToClient for SpdyToClient {
    async fn send_frame(&mut self, frame: Bytes) -> Result<(), RelayError> {
        let Some((&channel, _)) = frame.split_first() else {
            return Ok(());
        };
        if let Some((_, Some(writer))) = self.channels.iter().find(|(c, _)| *c == channel) {
            writer.send(frame.slice(1..)).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), RelayError> {
        for writer in &self.all {
            writer.finish().await?;
        }
        Ok(())
    }
}

/// Port-forward: every pair of streams (error, data) with one request id
/// is one connection to the pod's port, relayed through its own
/// port-forward on the provider.
async fn forward_ports(
    mut session: Session,
    provider: kube::Client,
    target: Target,
    remote_namespace: String,
    what: String,
) {
    let mut pending: HashMap<String, (Option<Stream>, Option<Stream>)> = HashMap::new();
    while let Some(stream) = session.accept().await {
        if let Err(error) = stream.writer.reply().await {
            tracing::debug!(%error, %what, "the SPDY session closed");
            break;
        }
        let (Some(request), Some(kind)) = (
            stream.header("requestid").map(str::to_owned),
            stream.header("streamtype").map(str::to_owned),
        ) else {
            tracing::info!(%what, stream = stream.id, "a port-forward stream without requestid or streamtype");
            let _ = stream.writer.finish().await;
            continue;
        };
        if !pending.contains_key(&request) && pending.len() >= MAX_PENDING_PAIRS {
            tracing::info!(%what, "too many half-open port-forward pairs; refusing one");
            let _ = stream.writer.finish().await;
            continue;
        }
        let pair = pending.entry(request.clone()).or_default();
        match kind.as_str() {
            "error" => pair.0 = Some(stream),
            "data" => pair.1 = Some(stream),
            _ => {
                tracing::info!(%what, %kind, "unexpected port-forward stream type");
                let _ = stream.writer.finish().await;
                continue;
            }
        }
        if let (Some(_), Some(_)) = pair {
            if let Some((Some(error), Some(data))) = pending.remove(&request) {
                let path = streams::provider_path(
                    &target,
                    &remote_namespace,
                    &format!("port={}", data.header("port").unwrap_or_default()),
                );
                let provider = provider.clone();
                let what = format!("{what}, request {request}");
                tokio::spawn(forward_one(provider, path, what, error, data));
            }
        }
    }
}

async fn forward_one(
    provider: kube::Client,
    path: String,
    what: String,
    error: Stream,
    data: Stream,
) {
    let (upstream, _) = match streams::connect_upstream(&provider, &path, &what).await {
        Ok(connected) => connected,
        Err(response) => {
            let message = format!("{what}: the provider refused ({})", response.status());
            let _ = error.writer.send(Bytes::from(message)).await;
            let _ = error.writer.finish().await;
            let _ = data.writer.finish().await;
            return;
        }
    };
    let to_client = ForwardToClient {
        data: data.writer,
        error: error.writer,
        port_announced: [false; 2],
    };
    let from_client = ForwardFromClient(data.data);
    match streams::relay(from_client, to_client, false, upstream, false).await {
        Ok(()) => tracing::debug!(%what, "port-forward connection finished"),
        Err(error) => tracing::debug!(%what, %error, "port-forward connection ended with an error"),
    }
}

/// The client's bytes for the pod, on data channel 0.
struct ForwardFromClient(mpsc::Receiver<Bytes>);

impl FromClient for ForwardFromClient {
    async fn next_frame(&mut self) -> Option<Result<Bytes, RelayError>> {
        self.0
            .recv()
            .await
            .map(|chunk| Ok(channel_frame(0, &chunk)))
    }
}

/// The pod's bytes (channel 0) and errors (channel 1) to the client;
/// each channel's first frame only names the port.
struct ForwardToClient {
    data: StreamWriter,
    error: StreamWriter,
    port_announced: [bool; 2],
}

impl ToClient for ForwardToClient {
    async fn send_frame(&mut self, frame: Bytes) -> Result<(), RelayError> {
        let Some((&channel, _)) = frame.split_first() else {
            return Ok(());
        };
        let (writer, announced) = match channel {
            0 => (&self.data, &mut self.port_announced[0]),
            1 => (&self.error, &mut self.port_announced[1]),
            _ => return Ok(()),
        };
        let payload = if *announced {
            frame.slice(1..)
        } else {
            *announced = true;
            frame.slice(frame.len().min(3)..)
        };
        if !payload.is_empty() {
            writer.send(payload).await?;
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<(), RelayError> {
        self.data.finish().await?;
        self.error.finish().await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn resize_messages_become_one_channel_4_frame_each() {
        let (chunks, data) = mpsc::channel(4);
        let (frames, mut out) = mpsc::channel(4);
        let pump = tokio::spawn(pump_resize(data, frames));
        for chunk in [
            &b"{\"Width\":80,\"Hei"[..],
            b"ght\":24}\n{\"Width\":100,\"Height\":40}\n",
        ] {
            chunks.send(Bytes::from(chunk)).await.expect("send");
        }
        drop(chunks);
        let mut got = Vec::new();
        while let Some(frame) = out.recv().await {
            got.push(frame);
        }
        pump.await.expect("pump");
        assert_eq!(
            got,
            vec![
                Bytes::from_static(b"\x04{\"Width\":80,\"Height\":24}"),
                Bytes::from_static(b"\x04{\"Width\":100,\"Height\":40}"),
            ]
        );
    }

    #[tokio::test]
    async fn stdin_ends_with_a_close_of_channel_0() {
        let (chunks, data) = mpsc::channel(4);
        let (frames, mut out) = mpsc::channel(4);
        let pump = tokio::spawn(pump_stdin(data, frames));
        chunks.send(Bytes::from_static(b"abc")).await.expect("send");
        drop(chunks);
        pump.await.expect("pump");
        assert_eq!(out.recv().await, Some(Bytes::from_static(b"\x00abc")));
        assert_eq!(out.recv().await, Some(Bytes::from_static(b"\xff\x00")));
    }

    #[test]
    fn the_query_says_which_streams_the_client_opens() {
        let plain = Expected::from_query("command=ls&input=1&output=1&error=1");
        assert!(plain.stdin && plain.stdout && plain.stderr && !plain.resize);
        let tty = Expected::from_query("command=sh&input=1&output=1&error=1&tty=1");
        assert!(tty.stdin && tty.stdout && !tty.stderr && tty.resize);
    }
}
