//! The `pods/log` subresource: text a test sets per container, served as
//! the API server serves a container's log (plain text).

use std::collections::HashMap;
use std::sync::Mutex;

use serde_json::Value;

use crate::error::ApiError;
use crate::store::Store;

/// Container logs by (namespace, pod, container). There is no kubelet, so
/// the test writes what a container would have printed.
#[derive(Default)]
pub struct PodLogs(Mutex<HashMap<(String, String, String), String>>);

impl PodLogs {
    pub fn set(&self, namespace: &str, pod: &str, container: &str, text: &str) {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(
                (namespace.to_owned(), pod.to_owned(), container.to_owned()),
                text.to_owned(),
            );
    }

    /// The log of `container` (the pod's only container when `None`), as the
    /// API server answers `GET .../pods/<name>/log`.
    pub fn read(
        &self,
        store: &Store,
        namespace: &str,
        pod: &str,
        container: Option<&str>,
    ) -> Result<String, ApiError> {
        let state = store.lock();
        let pods = state
            .registry()
            .find("", "v1", "pods")
            .ok_or_else(|| ApiError::path_not_found("pods"))?;
        let object = state
            .get(pods, namespace, pod)
            .ok_or_else(|| ApiError::not_found("", "pods", "pods", pod))?;
        let containers: Vec<&str> = object
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .map(|list| {
                list.iter()
                    .filter_map(|c| c.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        let container = match (container, containers.as_slice()) {
            (Some(wanted), _) if containers.contains(&wanted) => wanted,
            (Some(wanted), _) => {
                return Err(ApiError::bad_request(format!(
                    "container {wanted} is not valid for pod {pod}"
                )))
            }
            (None, [only]) => *only,
            (None, _) => {
                return Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {pod}, choose one of: {containers:?}"
            )))
            }
        }
        .to_owned();
        drop(state);
        Ok(self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&(namespace.to_owned(), pod.to_owned(), container))
            .cloned()
            .unwrap_or_default())
    }
}
