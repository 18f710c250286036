//! A Kubernetes-API-compatible test server, in process: kube-rs clients,
//! reflectors and controllers, and kubectl, run against it unchanged. Used by
//! tests and the local demo only; never shipped.
//!
//! ```no_run
//! # async fn demo() -> Result<(), strait_testkit::Error> {
//! let cluster = strait_testkit::TestCluster::start("alpha").await?;
//! let client = cluster.client();
//! # Ok(()) }
//! ```
//!
//! What the server does and where it simplifies is described in
//! control/testkit/README.md.

mod cluster;
mod discovery;
mod error;
mod handlers;
mod kubelet;
mod logs;
mod meta;
mod openapi;
mod ownership;
mod patch;
mod pki;
mod rbac;
mod registry;
mod routes;
mod selectors;
mod server;
mod signer;
mod store;
mod table;
mod tokens;
mod watch;

pub use cluster::{Options, TestCluster, ADMIN_USER, DEFAULT_WATCH_HISTORY};
pub use error::{ApiError, Error};
pub use kubelet::{
    BoxFuture, ContainerCall, ContainerIo, PodConnection, TestKubelet, KUBELET_CLIENT_USER,
};
pub use pki::{PkiError, User};
pub use rbac::SUPERUSER_GROUP;
pub use signer::CLIENT_SIGNER;

/// Polls `check` every 50 ms until it holds; panics naming `what` once
/// `limit` has passed. For tests waiting on a controller's eventual result.
pub async fn eventually<F, Fut>(what: &str, limit: std::time::Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let polled = tokio::time::timeout(limit, async {
        while !check().await {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    });
    assert!(polled.await.is_ok(), "timed out waiting for: {what}");
}
