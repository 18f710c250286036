//! RBAC authorization from the Role, ClusterRole, RoleBinding and
//! ClusterRoleBinding objects in the store, as the API server's RBAC
//! authorizer evaluates them (allow rules only; no aggregation).

use serde_json::Value;

use crate::meta;
use crate::pki::User;
use crate::store::State;

/// The group that is allowed everything, as in Kubernetes.
pub const SUPERUSER_GROUP: &str = "system:masters";

/// What a resource request asks to do.
#[derive(Debug, Clone)]
pub struct Attributes<'a> {
    pub verb: &'a str,
    pub group: &'a str,
    /// The plural, or `plural/status` for the status subresource.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
}

pub fn allowed(state: &State, user: &User, request: &Attributes) -> bool {
    if user.groups.iter().any(|g| g == SUPERUSER_GROUP) {
        return true;
    }
    let registry = state.registry();
    let find = |plural: &str| registry.find("rbac.authorization.k8s.io", "v1", plural);
    let (Some(roles), Some(cluster_roles), Some(bindings), Some(cluster_bindings)) = (
        find("roles"),
        find("clusterroles"),
        find("rolebindings"),
        find("clusterrolebindings"),
    ) else {
        return false;
    };
    let role_allows = |kind: &str, name: &str, binding_namespace: &str| {
        let role = match kind {
            "ClusterRole" => state.get(cluster_roles, "", name),
            "Role" => state.get(roles, binding_namespace, name),
            _ => None,
        };
        role.and_then(|r| r.get("rules"))
            .and_then(Value::as_array)
            .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, request)))
    };
    let binding_allows = |binding: &Value, namespace: &str| {
        binds(binding, user)
            && role_allows(
                meta::str_at(binding, "/roleRef/kind"),
                meta::str_at(binding, "/roleRef/name"),
                namespace,
            )
    };
    if state
        .list(cluster_bindings, None)
        .any(|b| binding_allows(b, ""))
    {
        return true;
    }
    request.namespace.is_some_and(|namespace| {
        state
            .list(bindings, Some(namespace))
            .any(|b| binding_allows(b, namespace))
    })
}

/// Whether a binding's subjects include the user or one of its groups.
fn binds(binding: &Value, user: &User) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|subjects| {
            subjects.iter().any(|subject| {
                let name = meta::str_at(subject, "/name");
                match meta::str_at(subject, "/kind") {
                    "User" => name == user.name,
                    "Group" => user.groups.iter().any(|g| g == name),
                    // A ServiceAccount authenticates as this user name.
                    "ServiceAccount" => {
                        let namespace = meta::str_at(subject, "/namespace");
                        user.name == format!("system:serviceaccount:{namespace}:{name}")
                    }
                    _ => false,
                }
            })
        })
}

fn rule_allows(rule: &Value, request: &Attributes) -> bool {
    let list = |key: &str| -> Vec<&str> {
        rule.get(key)
            .and_then(Value::as_array)
            .map(|items| items.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default()
    };
    let covers = |key: &str, wanted: &str| list(key).iter().any(|v| *v == "*" || *v == wanted);
    let names = list("resourceNames");
    covers("verbs", request.verb)
        && covers("apiGroups", request.group)
        && covers("resources", request.resource)
        && (names.is_empty() || request.name.is_some_and(|n| names.contains(&n)))
}

/// The API server's wording of a refusal.
pub fn refusal(user: &User, request: &Attributes) -> String {
    let scope = match request.namespace {
        Some(namespace) => format!(" in the namespace {namespace:?}"),
        None => " at the cluster scope".to_owned(),
    };
    format!(
        "User {:?} cannot {} resource {:?} in API group {:?}{scope}",
        user.name, request.verb, request.resource, request.group
    )
}
