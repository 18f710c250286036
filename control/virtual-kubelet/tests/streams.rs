//! `kubectl exec`, `attach` and `port-forward` on a pod of a virtual node,
//! with a kube-rs client (the websocket protocols kubectl speaks) against
//! the consumer's API server, which passes the stream to the virtual
//! kubelet's HTTPS endpoint (as kube-apiserver does, authenticating as its
//! kubelet client); the virtual kubelet checks the caller with a
//! TokenReview and a SubjectAccessReview on the consumer and opens the
//! same stream on the provider through the tenant's identity. On the
//! provider the test registers a stand-in for its kubelet: exec runs a real
//! process on this machine, attach echoes, port-forward connects to a
//! loopback listener the test opened.

mod support;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{api::core::v1::Pod, apimachinery::pkg::apis::meta::v1::Status};
use kube::{api::AttachParams, Api, Client};
use serde_json::json;
use strait_api::offloading::{NamespaceOffloading, OffloadingPhase};
use strait_offloading::kubelet::KubeletSettings;
use strait_testkit::{
    eventually, BoxFuture, ContainerCall, ContainerIo, PodConnection, TestKubelet,
};
use support::*;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

/// The pod port the test's loopback listener stands for.
const POD_PORT: u16 = 8080;
const REMOTE_NAMESPACE: &str = "shop-consumer-s";

/// The provider's kubelet, played by the test.
struct StandInKubelet {
    /// Where the pod's port 8080 leads: a listener on this machine.
    listener_port: u16,
    calls: Arc<Mutex<Vec<ContainerCall>>>,
}

impl TestKubelet for StandInKubelet {
    fn run(&self, call: ContainerCall, io: ContainerIo) -> BoxFuture<Result<i32, String>> {
        self.calls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(call.clone());
        Box::pin(async move {
            let ContainerIo {
                stdin,
                stdout,
                stderr,
            } = io;
            if call.command.is_empty() {
                // attach: the container echoes what it reads.
                if let (Some(mut input), Some(mut output)) = (stdin, stdout) {
                    tokio::io::copy(&mut input, &mut output)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                return Ok(0);
            }
            let piped = |wanted: bool| {
                if wanted {
                    std::process::Stdio::piped()
                } else {
                    std::process::Stdio::null()
                }
            };
            let mut child = tokio::process::Command::new(&call.command[0])
                .args(&call.command[1..])
                .stdin(piped(stdin.is_some()))
                .stdout(piped(stdout.is_some()))
                .stderr(piped(stderr.is_some()))
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| format!("starting {:?}: {e}", call.command))?;
            let feed = async {
                if let (Some(mut from), Some(mut to)) = (stdin, child.stdin.take()) {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                }
            };
            let out = async {
                if let (Some(mut from), Some(mut to)) = (child.stdout.take(), stdout) {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                }
            };
            let err = async {
                if let (Some(mut from), Some(mut to)) = (child.stderr.take(), stderr) {
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                }
            };
            tokio::join!(feed, out, err);
            let status = child.wait().await.map_err(|e| e.to_string())?;
            Ok(status.code().unwrap_or(-1))
        })
    }

    fn connect(
        &self,
        _namespace: &str,
        _pod: &str,
        port: u16,
    ) -> BoxFuture<std::io::Result<Box<dyn PodConnection>>> {
        let target = self.listener_port;
        Box::pin(async move {
            if port != POD_PORT {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("nothing listens on port {port} of the pod"),
                ));
            }
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", target)).await?;
            Ok(Box::new(stream) as Box<dyn PodConnection>)
        })
    }
}

/// A loopback listener answering each read with `pong:` and the bytes
/// read; a bounded number of connections.
async fn pong_listener() -> (u16, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("listener");
    let port = listener.local_addr().expect("address").port();
    let task = tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut connection, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                for _ in 0..64 {
                    match connection.read(&mut buffer).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            let mut reply = b"pong:".to_vec();
                            reply.extend_from_slice(&buffer[..n]);
                            if connection.write_all(&reply).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (port, task)
}

/// A consumer with a virtual node on a provider, namespace `shop`
/// offloaded, pod `shop/web` Running there.
struct Scene {
    consumer: Consumer,
    provider: Provider,
    calls: Arc<Mutex<Vec<ContainerCall>>>,
    _listener: tokio::task::JoinHandle<()>,
}

async fn scene() -> Scene {
    let mut consumer = Consumer::start("consumer-s").await;
    let provider = Provider::start(
        "provider-s",
        "consumer-s",
        json!({"cpu": "8", "memory": "16Gi", "pods": "100"}),
        consumer.dir.path(),
    )
    .await;
    let (listener_port, listener) = pong_listener().await;
    let calls = Arc::new(Mutex::new(Vec::new()));
    provider.cluster.set_kubelet(Arc::new(StandInKubelet {
        listener_port,
        calls: calls.clone(),
    }));
    consumer.start_module(KubeletSettings::default());
    let local = consumer.client();
    let secret = consumer.add_provider_secret(&provider).await;
    consumer
        .add_virtual_node(
            "provider-s",
            &provider,
            &secret,
            json!({"resources": {"cpu": "4", "memory": "8Gi", "pods": "10"}}),
        )
        .await;
    consumer.wait_node_ready("provider-s", true).await;
    namespace(&local, "shop").await;
    let _: NamespaceOffloading = create(
        &local,
        Some("shop"),
        json!({
            "apiVersion": "offloading.strait.dev/v1beta1", "kind": "NamespaceOffloading",
            "metadata": {"name": "offloading"},
            "spec": {"podOffloadingStrategy": "Remote"},
        }),
    )
    .await;
    let offloadings: Api<NamespaceOffloading> = Api::namespaced(local.clone(), "shop");
    eventually("namespace offloaded", WAIT, || async {
        offloadings
            .get("offloading")
            .await
            .is_ok_and(|o| o.status.is_some_and(|s| s.phase == OffloadingPhase::Ready))
    })
    .await;
    let _: Pod = create(
        &local,
        Some("shop"),
        json!({
            "metadata": {"name": "web"},
            "spec": {"containers": [{"name": "app", "image": "registry.example/app:1",
                "resources": {"requests": {"cpu": "1", "memory": "64Mi"}}}]},
        }),
    )
    .await;
    let pods: Api<Pod> = Api::namespaced(local.clone(), "shop");
    eventually("the pod may go to virtual nodes", WAIT, || async {
        pods.get("web").await.is_ok_and(|p| {
            p.spec
                .and_then(|s| s.tolerations)
                .unwrap_or_default()
                .iter()
                .any(|t| t.key.as_deref() == Some(strait_api::names::VIRTUAL_NODE_TAINT))
        })
    })
    .await;
    bind(&local, "shop", "web", "provider-s").await;
    wait_phase(&local, "shop", "web", "Running").await;
    Scene {
        consumer,
        provider,
        calls,
        _listener: listener,
    }
}

async fn read_all(reader: Option<impl AsyncRead + Unpin>) -> String {
    let mut text = String::new();
    if let Some(mut reader) = reader {
        reader.read_to_string(&mut text).await.expect("read");
    }
    text
}

/// Runs `command` in `shop/web` through the consumer's API server:
/// (stdout, stderr, status).
async fn exec(
    client: &Client,
    command: &[&str],
    stdin: Option<&[u8]>,
) -> (String, String, Option<Status>) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "shop");
    let params = AttachParams::default()
        .stdin(stdin.is_some())
        .stdout(true)
        .stderr(true);
    let run = async {
        let mut process = pods
            .exec("web", command.to_vec(), &params)
            .await
            .expect("exec is accepted");
        if let (Some(mut writer), Some(input)) = (process.stdin(), stdin) {
            writer.write_all(input).await.expect("write stdin");
            // Sends the end of stdin (a v5.channel.k8s.io close frame).
            writer.shutdown().await.expect("close stdin");
        }
        let status = process.take_status().expect("status channel");
        let (out, err) = tokio::join!(read_all(process.stdout()), read_all(process.stderr()));
        let status = status.await;
        (out, err, status)
    };
    tokio::time::timeout(WAIT, run)
        .await
        .expect("exec finishes in time")
}

fn exit_code(status: &Option<Status>) -> Option<String> {
    let status = status.as_ref()?;
    if status.status.as_deref() == Some("Success") {
        return Some("0".into());
    }
    status
        .details
        .as_ref()?
        .causes
        .as_ref()?
        .iter()
        .find(|c| c.reason.as_deref() == Some("ExitCode"))
        .and_then(|c| c.message.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn exec_attach_and_port_forward_reach_the_pod_on_the_provider() {
    let scene = scene().await;
    let local = scene.consumer.client();

    let (out, err, status) = exec(
        &local,
        &["sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3"],
        None,
    )
    .await;
    assert_eq!(out, "to-stdout\n");
    assert_eq!(err, "to-stderr\n");
    assert_eq!(exit_code(&status).as_deref(), Some("3"), "{status:?}");
    {
        let calls = scene.calls.lock().unwrap_or_else(|p| p.into_inner());
        let call = calls.last().expect("the provider's kubelet was asked");
        assert_eq!(
            (
                call.namespace.as_str(),
                call.pod.as_str(),
                call.container.as_str()
            ),
            (REMOTE_NAMESPACE, "web", "app"),
            "the exec ran in the provider's copy of the pod"
        );
    }

    let (out, _, status) = exec(&local, &["echo", "hello", "there"], None).await;
    assert_eq!(out, "hello there\n");
    assert_eq!(exit_code(&status).as_deref(), Some("0"), "{status:?}");

    let (out, _, status) = exec(&local, &["cat"], Some(b"through stdin\nand back\n")).await;
    assert_eq!(
        out, "through stdin\nand back\n",
        "stdin reaches the process"
    );
    assert_eq!(exit_code(&status).as_deref(), Some("0"), "{status:?}");

    let pods: Api<Pod> = Api::namespaced(local.clone(), "shop");
    let attach = async {
        let mut process = pods
            .attach(
                "web",
                &AttachParams::default()
                    .stdin(true)
                    .stdout(true)
                    .stderr(false),
            )
            .await
            .expect("attach is accepted");
        let mut stdin = process.stdin().expect("stdin");
        let mut stdout = process.stdout().expect("stdout");
        stdin.write_all(b"ping\n").await.expect("write");
        let mut echoed = [0u8; 5];
        stdout.read_exact(&mut echoed).await.expect("echo");
        stdin.shutdown().await.expect("close stdin");
        let status = process.take_status().expect("status channel").await;
        (echoed, status)
    };
    let (echoed, status) = tokio::time::timeout(WAIT, attach)
        .await
        .expect("attach in time");
    assert_eq!(&echoed, b"ping\n");
    assert_eq!(exit_code(&status).as_deref(), Some("0"), "{status:?}");

    let forward = async {
        let mut forwarder = pods
            .portforward("web", &[POD_PORT])
            .await
            .expect("port-forward is accepted");
        let mut connection = forwarder.take_stream(POD_PORT).expect("stream");
        connection.write_all(b"hello").await.expect("write");
        let mut reply = [0u8; 10];
        connection.read_exact(&mut reply).await.expect("reply");
        drop(connection);
        forwarder.abort();
        reply
    };
    let reply = tokio::time::timeout(WAIT, forward)
        .await
        .expect("port-forward in time");
    assert_eq!(&reply, b"pong:hello");
}

/// A client of the virtual kubelet's endpoint itself, with `token` if any
/// (its self-signed certificate is not verified, as the API server does not).
async fn kubelet_client(consumer: &Consumer, token: Option<String>) -> Client {
    let node = Api::<k8s_openapi::api::core::v1::Node>::all(consumer.client())
        .get("provider-s")
        .await
        .expect("node");
    let status = node.status.expect("status");
    let address = status
        .addresses
        .unwrap_or_default()
        .into_iter()
        .find(|a| a.type_ == "InternalIP")
        .expect("InternalIP")
        .address;
    let port = status
        .daemon_endpoints
        .and_then(|d| d.kubelet_endpoint)
        .map(|e| e.port)
        .expect("kubelet port");
    let url = format!("https://{address}:{port}").parse().expect("url");
    let mut config = kube::Config::new(url);
    config.accept_invalid_certs = true;
    config.auth_info.token = token.map(Into::into);
    config.read_timeout = Some(Duration::from_secs(10));
    Client::try_from(config).expect("client")
}

async fn get(client: &Client, path: &str) -> (u16, String) {
    use http_body_util::BodyExt as _;
    let request = http::Request::get(path)
        .body(kube::client::Body::from(Vec::new()))
        .expect("request");
    let response = tokio::time::timeout(WAIT, client.send(request))
        .await
        .expect("answer in time")
        .expect("HTTPS exchange");
    let code = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (code, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_kubelet_endpoint_refuses_unauthenticated_and_unauthorized_callers() {
    let scene = scene().await;
    scene
        .provider
        .cluster
        .set_pod_log(REMOTE_NAMESPACE, "web", "app", "served\n");
    let path = "/containerLogs/shop/web/app";

    let (code, body) = get(&kubelet_client(&scene.consumer, None).await, path).await;
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("no bearer token"), "{body}");

    let forged = Some("not-a-token-of-this-cluster".to_owned());
    let (code, body) = get(&kubelet_client(&scene.consumer, forged).await, path).await;
    assert_eq!(code, 401, "{body}");

    let token = scene.consumer.cluster.issue_token("intruder", &["curious"]);
    let intruder = kubelet_client(&scene.consumer, Some(token)).await;
    let (code, body) = get(&intruder, path).await;
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("user=intruder") && body.contains("subresource=proxy"),
        "{body}"
    );

    // Allowed nodes/proxy on this node by RBAC: the same token now works.
    let local = scene.consumer.client();
    let _: k8s_openapi::api::rbac::v1::ClusterRole = create_cluster(
        &local,
        json!({
            "metadata": {"name": "provider-s-proxy"},
            "rules": [{"apiGroups": [""], "resources": ["nodes/proxy"], "verbs": ["get"], "resourceNames": ["provider-s"]}],
        }),
    )
    .await;
    let _: k8s_openapi::api::rbac::v1::ClusterRoleBinding = create_cluster(
        &local,
        json!({
            "metadata": {"name": "intruder-proxy"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "provider-s-proxy"},
            "subjects": [{"kind": "Group", "name": "curious"}],
        }),
    )
    .await;
    let (code, body) = get(&intruder, path).await;
    assert_eq!((code, body.as_str()), (200, "served\n"));
    // The role covers nodes/proxy only: /stats maps to nodes/stats.
    let (code, body) = get(&intruder, "/stats/summary").await;
    assert_eq!(code, 403, "another node subresource is not covered: {body}");
}

async fn create_cluster<T>(client: &Client, value: serde_json::Value) -> T
where
    T: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    Api::<T>::all(client.clone())
        .create(&Default::default(), &object(value))
        .await
        .expect("create")
}

/// Runs kubectl against the consumer, forced onto SPDY (as kube-apiserver
/// speaks to kubelets): (exit code, stdout, stderr).
async fn kubectl_spdy(
    kubeconfig: &std::path::Path,
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (Option<i32>, Vec<u8>, String) {
    let mut child = tokio::process::Command::new("kubectl")
        .env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs (cargo xtask bootstrap installs it)");
    let mut input = child.stdin.take().expect("stdin");
    let input_bytes = stdin.unwrap_or_default().to_vec();
    let feed = async move {
        let _ = input.write_all(&input_bytes).await;
        drop(input);
    };
    let (_, output) = tokio::join!(feed, child.wait_with_output());
    let output = output.expect("kubectl output");
    (
        output.status.code(),
        output.stdout,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// kubectl, the Go client, through the consumer's API server to the
/// virtual kubelet over SPDY/3.1, and from there to the provider.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kubectl_over_spdy_execs_attaches_and_forwards_through_the_virtual_kubelet() {
    let scene = scene().await;
    let kubeconfig = scene.consumer.dir.path().join("kubectl.kubeconfig");
    scene
        .consumer
        .cluster
        .write_kubeconfig(&kubeconfig)
        .expect("kubeconfig");
    let run = |args: &'static [&'static str], stdin: Option<&'static [u8]>| {
        let kubeconfig = kubeconfig.clone();
        async move {
            tokio::time::timeout(WAIT, kubectl_spdy(&kubeconfig, args, stdin))
                .await
                .unwrap_or_else(|_| panic!("kubectl {args:?} finishes in time"))
        }
    };

    let (code, out, err) = run(
        &[
            "-n",
            "shop",
            "exec",
            "web",
            "-c",
            "app",
            "--",
            "sh",
            "-c",
            "echo to-stdout; echo to-stderr >&2; exit 3",
        ],
        None,
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&out), "to-stdout\n", "{err}");
    assert!(err.contains("to-stderr\n"), "{err}");
    assert_eq!(code, Some(3), "the exit code comes through: {err}");

    let (code, out, err) = run(
        &["-n", "shop", "exec", "-i", "web", "-c", "app", "--", "cat"],
        Some(b"through stdin\nand back\n"),
    )
    .await;
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (Some(0), "through stdin\nand back\n"),
        "{err}"
    );

    // More than the 64 KiB windows, both ways.
    static BIG: std::sync::LazyLock<Vec<u8>> =
        std::sync::LazyLock::new(|| (0..300_000u32).map(|i| b'a' + (i % 26) as u8).collect());
    let (code, out, err) = run(
        &["-n", "shop", "exec", "-i", "web", "-c", "app", "--", "cat"],
        Some(BIG.as_slice()),
    )
    .await;
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out == *BIG,
        "300,000 bytes through stdin and stdout ({} came back)",
        out.len()
    );

    let (code, out, err) = run(
        &["-n", "shop", "attach", "-i", "web", "-c", "app"],
        Some(b"ping\n"),
    )
    .await;
    assert_eq!(
        (code, String::from_utf8_lossy(&out).as_ref()),
        (Some(0), "ping\n"),
        "{err}"
    );

    // port-forward: kubectl listens on a loopback port of its choosing.
    let mut forwarder = tokio::process::Command::new("kubectl")
        .env("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args([
            "-n",
            "shop",
            "port-forward",
            "--address",
            "127.0.0.1",
            "pod/web",
            ":8080",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl port-forward runs");
    let stdout = forwarder.stdout.take().expect("stdout");
    let mut lines = tokio::io::BufReader::new(stdout);
    let local_port = tokio::time::timeout(WAIT, async {
        use tokio::io::AsyncBufReadExt as _;
        let mut line = String::new();
        loop {
            line.clear();
            let n = lines.read_line(&mut line).await.expect("kubectl output");
            assert!(n > 0, "kubectl port-forward ended before forwarding");
            // "Forwarding from 127.0.0.1:PORT -> 8080"
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                return rest
                    .split_whitespace()
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                    .expect("a port");
            }
        }
    })
    .await
    .expect("kubectl port-forward listens in time");
    for round in 0..3 {
        let exchange = async {
            let mut connection = tokio::net::TcpStream::connect(("127.0.0.1", local_port))
                .await
                .expect("connect to kubectl");
            let message = format!("hello{round}");
            connection
                .write_all(message.as_bytes())
                .await
                .expect("write");
            let mut reply = vec![0u8; message.len() + 5];
            connection.read_exact(&mut reply).await.expect("reply");
            String::from_utf8_lossy(&reply).into_owned()
        };
        let reply = tokio::time::timeout(WAIT, exchange)
            .await
            .expect("port-forward answers in time");
        assert_eq!(reply, format!("pong:hello{round}"), "connection {round}");
    }
    let _ = forwarder.kill().await;
}
