//! Kubeconform-style validation of rendered objects: each is read into its
//! k8s-openapi type and written back; a field the type does not know is
//! dropped on the way, a wrong type fails to read, so any difference
//! between the two is a mistake in the chart.
use k8s_openapi::api::{
    apps::v1::{DaemonSet, Deployment},
    core::v1::{ConfigMap, Service, ServiceAccount},
    rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding},
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::Error;

/// Checks one object against the schema of its kind.
pub fn validate_object(object: &Value) -> Result<(), Error> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let kind = object["kind"].as_str().unwrap_or_default();
    let check = match (api_version, kind) {
        ("apps/v1", "Deployment") => round_trip::<Deployment>,
        ("apps/v1", "DaemonSet") => round_trip::<DaemonSet>,
        ("v1", "ConfigMap") => round_trip::<ConfigMap>,
        ("v1", "Service") => round_trip::<Service>,
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>,
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>,
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => round_trip::<ClusterRoleBinding>,
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>,
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>,
        ("monitoring.coreos.com/v1", "ServiceMonitor") => round_trip::<ServiceMonitor>,
        _ => {
            return Err(invalid(
                object,
                format!("no schema known for {api_version} {kind}: add it to validate.rs"),
            ))
        }
    };
    check(object).map_err(|problem| invalid(object, problem))?;
    let name = object["metadata"]["name"].as_str().unwrap_or_default();
    if !is_dns_subdomain(name) {
        return Err(invalid(
            object,
            format!("name {name:?} is not a DNS subdomain"),
        ));
    }
    Ok(())
}

fn invalid(object: &Value, problem: String) -> Error {
    Error::Invalid {
        object: format!(
            "{} {}",
            object["kind"].as_str().unwrap_or("?"),
            object["metadata"]["name"].as_str().unwrap_or("?")
        ),
        problem,
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(object: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(object.clone()).map_err(|e| e.to_string())?;
    let back = serde_json::to_value(&typed).map_err(|e| e.to_string())?;
    match first_difference(object, &back, "") {
        None => Ok(()),
        Some(path) => Err(format!(
            "{path} is not part of the schema (unknown field or wrong type)"
        )),
    }
}

/// The path of the first value in `rendered` that did not survive the trip.
fn first_difference(rendered: &Value, back: &Value, path: &str) -> Option<String> {
    match (rendered, back) {
        (Value::Object(a), Value::Object(b)) => a.iter().find_map(|(key, value)| {
            let here = format!("{path}.{key}");
            match b.get(key) {
                Some(other) => first_difference(value, other, &here),
                None if value.is_null() => None,
                None => Some(here),
            }
        }),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => a
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (x, y))| first_difference(x, y, &format!("{path}[{i}]"))),
        (Value::Number(a), Value::Number(b)) => (a.as_f64() != b.as_f64()).then(|| path.to_owned()),
        _ => (rendered != back).then(|| path.to_owned()),
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The Prometheus Operator's ServiceMonitor, as far as the chart uses it.
#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitor {
    api_version: String,
    kind: String,
    metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    spec: ServiceMonitorSpec,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ServiceMonitorSpec {
    selector: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    endpoints: Vec<Endpoint>,
}

#[derive(Deserialize, Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Endpoint {
    port: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    interval: Option<String>,
}
