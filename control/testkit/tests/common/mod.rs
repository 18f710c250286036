//! Helpers shared by the test binaries.
#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use http_body_util::BodyExt;
use serde_json::Value;

/// Every await on the server in these tests is bounded by this.
pub const STEP: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, future)
        .await
        .unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// A raw request: the status code and the body as JSON (Null if empty or not JSON).
pub async fn raw(
    client: &kube::Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, Value) {
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
        .body(kube::client::Body::from(body.to_vec()))
        .expect("a valid request");
    let response = within(path, client.send(request))
        .await
        .expect("a response");
    let code = response.status().as_u16();
    let bytes = within(path, response.into_body().collect())
        .await
        .expect("a body")
        .to_bytes();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Reads a watch until the server ends it (the caller sets timeoutSeconds):
/// one JSON value per event.
pub async fn watch_events(client: &kube::Client, path: &str) -> Vec<Value> {
    let request = http::Request::builder()
        .method("GET")
        .uri(path)
        .body(kube::client::Body::from(Vec::new()))
        .expect("a valid request");
    let response = within(path, client.send(request))
        .await
        .expect("a response");
    assert_eq!(response.status().as_u16(), 200, "watch {path}");
    let bytes = within(path, response.into_body().collect())
        .await
        .expect("a body")
        .to_bytes();
    bytes
        .split(|b| *b == b'\n')
        .filter(|line| !line.is_empty())
        .map(|line| serde_json::from_slice(line).expect("each line is a JSON event"))
        .collect()
}

/// The API error a kube call failed with.
pub fn api_error<T: std::fmt::Debug>(result: Result<T, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        other => panic!("expected an API error, got {other:?}"),
    }
}
