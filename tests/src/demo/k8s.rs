//! Small helpers over the Kubernetes API for the demo: `kubectl`, waiting
//! for a condition, reading objects as JSON.

use std::{
    future::Future,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{bail, Context as _, Result};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

/// How long any one step of the control plane may take.
pub const STEP: Duration = Duration::from_secs(60);

/// `kubectl --kubeconfig <kubeconfig> <args>`; its stdout, or an error with its stderr.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .output()
        .context("running kubectl (installed by `cargo xtask bootstrap`)")?;
    if !output.status.success() {
        bail!(
            "kubectl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Polls `probe` every 100 ms until it returns Ok, for at most `limit`;
/// on timeout, the last error it gave.
pub async fn wait_for<T, F, Fut>(limit: Duration, mut probe: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let started = Instant::now();
    loop {
        match probe().await {
            Ok(value) => return Ok(value),
            Err(last) if started.elapsed() >= limit => {
                return Err(format!("after {:.0?}: {last}", started.elapsed()))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// The object as JSON, or why it cannot be read.
pub async fn get_json<K>(api: &Api<K>, name: &str) -> Result<Value, String>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    match api.get_opt(name).await {
        Ok(Some(object)) => serde_json::to_value(&object).map_err(|e| e.to_string()),
        Ok(None) => Err(format!("{name} does not exist yet")),
        Err(error) => Err(format!("reading {name}: {error}")),
    }
}

/// Waits until condition `type_` of the object is True; its message, or the
/// condition as last seen.
pub async fn wait_condition<K>(api: &Api<K>, name: &str, type_: &str) -> Result<String, String>
where
    K: Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    wait_for(STEP, || async {
        let object = get_json(api, name).await?;
        let conditions = object
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let Some(condition) = conditions.iter().find(|c| c["type"] == type_) else {
            return Err(format!("{name} has no {type_} condition yet"));
        };
        let text = format!(
            "{type_}={} ({}): {}",
            condition["status"].as_str().unwrap_or("?"),
            condition["reason"].as_str().unwrap_or(""),
            condition["message"].as_str().unwrap_or("")
        );
        if condition["status"] == "True" {
            Ok(text)
        } else {
            Err(text)
        }
    })
    .await
}
