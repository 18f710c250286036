//! Just enough OpenAPI v3 for kubectl: one document per group/version whose
//! PATCH operations declare the `fieldValidation` parameter, so kubectl leaves
//! validation to the server (admission, for Strait kinds) instead of
//! downloading schemas. No schemas are published: kubectl then patches
//! unregistered kinds with JSON merge patches, as it does for CRDs.

use serde_json::{json, Map, Value};

use crate::registry::Registry;

fn group_version_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

pub fn root(registry: &Registry) -> Value {
    let mut paths = Map::new();
    let mut group_versions = vec![(String::new(), "v1".to_owned())];
    group_versions.extend(registry.groups());
    for (group, version) in group_versions {
        let path = group_version_path(&group, &version);
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}")}),
        );
    }
    json!({"paths": paths})
}

pub fn group_version(registry: &Registry, group: &str, version: &str) -> Option<Value> {
    let mut paths = Map::new();
    for t in registry
        .types
        .iter()
        .filter(|t| t.group == group && t.version == version)
    {
        let prefix = format!("/{}", group_version_path(group, version));
        let item = if t.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", t.plural)
        } else {
            format!("{prefix}/{}/{{name}}", t.plural)
        };
        paths.insert(
            item,
            json!({"patch": {
                "operationId": format!("patch{}", t.kind),
                "parameters": [
                    {"name": "fieldValidation", "in": "query", "schema": {"type": "string"}},
                    {"name": "fieldManager", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {"group": t.group, "version": t.version, "kind": t.kind},
            }}),
        );
    }
    if paths.is_empty() {
        return None;
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.34.0-strait-testkit"},
        "paths": paths,
        "components": {"schemas": {}},
    }))
}
