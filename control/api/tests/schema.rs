//! The generated CRDs: committed as generated, documented field by field,
//! their CEL rules compilable within the API server's cost budget, their
//! printer columns pointing at real fields, and the types round-tripping.

mod support;

use std::fmt::Debug;

use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;
use strait_api::{authentication, core, ipam, networking, offloading};
use support::{examples, repo_root};

fn schema_of(
    crd: &k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
) -> Value {
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref());
    serde_json::to_value(schema).expect("schema serializes")
}

#[test]
fn committed_crds_are_exactly_what_the_types_generate() {
    let dir = repo_root().join("charts/strait/crds");
    for crd in strait_api::crds() {
        let path = dir.join(strait_api::crd_file_name(&crd));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask crdgen`)", path.display()));
        let committed: Value = serde_norway::from_str(&committed).expect("committed CRD is YAML");
        // No assert_eq: the diff of two CRDs is unreadable; git diff shows it better.
        assert!(
            committed == serde_json::to_value(&crd).expect("CRD serializes"),
            "{} is stale: run `cargo xtask crdgen` and review the API change with git diff",
            path.display()
        );
    }
}

/// Every property of every schema, with its path.
fn walk<'a>(schema: &'a Value, path: String, out: &mut Vec<(String, &'a Value)>) {
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            let p = format!("{path}.{name}");
            out.push((p.clone(), sub));
            walk(sub, p, out);
        }
    }
    if let Some(items) = schema.get("items") {
        walk(items, format!("{path}[]"), out);
    }
    if let Some(extra) = schema.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, format!("{path}{{}}"), out);
    }
}

#[test]
fn every_field_is_described_for_kubectl_explain() {
    let mut missing = Vec::new();
    for crd in strait_api::crds() {
        let schema = schema_of(&crd);
        assert!(
            schema
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.contains("Auto-generated")),
            "{}: the kind needs a description",
            crd.spec.names.kind
        );
        let mut fields = Vec::new();
        walk(&schema, crd.spec.names.kind.clone(), &mut fields);
        for (path, field) in fields {
            let described = field
                .get("description")
                .and_then(Value::as_str)
                .is_some_and(|d| !d.trim().is_empty());
            if !described {
                missing.push(path);
            }
        }
    }
    assert!(
        missing.is_empty(),
        "fields without a description:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_cel_rule_compiles_and_fits_the_cost_budget() {
    let mut problems = Vec::new();
    let mut rules = 0;
    for crd in strait_api::crds() {
        let schema = schema_of(&crd);
        let compiled = kube::core::cel::compile_schema(&schema);
        for error in compiled.compilation_errors() {
            problems.push(format!("{}: {error}", crd.spec.names.kind));
        }
        let mut fields = vec![(crd.spec.names.kind.clone(), &schema)];
        walk(&schema, crd.spec.names.kind.clone(), &mut fields);
        for (path, field) in fields {
            for rule in field
                .get("x-kubernetes-validations")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                rules += 1;
                let text = rule["rule"].as_str().unwrap_or_default();
                assert!(
                    rule["message"].as_str().is_some_and(|m| !m.is_empty()),
                    "{path}: rule `{text}` has no message"
                );
                let field_schema = kube::core::cel::compile_schema(field);
                for warning in kube::core::cel::estimate_rule_cost(text, &field_schema) {
                    problems.push(format!("{path}: `{text}`: {warning:?}"));
                }
            }
        }
    }
    assert!(rules >= 30, "only {rules} rules found: the walk is broken");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn printer_columns_point_at_fields_that_exist() {
    for crd in strait_api::crds() {
        let schema = schema_of(&crd);
        let mut fields = Vec::new();
        walk(&schema, String::new(), &mut fields);
        for version in &crd.spec.versions {
            for column in version.additional_printer_columns.iter().flatten() {
                let path = column.json_path.split('[').next().unwrap_or_default();
                let known = path == ".metadata.creationTimestamp"
                    || fields.iter().any(|(p, _)| p.replace("[]", "") == path);
                assert!(
                    known,
                    "{}: column {} points at {path}, which the schema lacks",
                    crd.spec.names.kind, column.name
                );
            }
        }
    }
}

/// Deserialises `value` as `K`, serialises it back, and checks nothing the
/// user wrote was lost or altered on the way.
fn round_trip<K: DeserializeOwned + Serialize + PartialEq + Debug>(value: &Value) {
    let typed: K = serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value}"));
    let back = serde_json::to_value(&typed).expect("serializes");
    let again: K = serde_json::from_value(back.clone()).expect("deserializes again");
    assert_eq!(typed, again);
    assert_contains(value, &back, "");
}

/// Every leaf of `expected` is in `actual` with the same value (`actual` may
/// add defaults).
fn assert_contains(expected: &Value, actual: &Value, path: &str) {
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => {
            for (key, value) in e {
                let next = format!("{path}.{key}");
                let found = a
                    .get(key)
                    .unwrap_or_else(|| panic!("{next} was dropped by the round trip"));
                assert_contains(value, found, &next);
            }
        }
        (Value::Array(e), Value::Array(a)) => {
            assert_eq!(e.len(), a.len(), "{path}: list length changed");
            for (i, (ev, av)) in e.iter().zip(a).enumerate() {
                assert_contains(ev, av, &format!("{path}[{i}]"));
            }
        }
        (e, a) => assert_eq!(e, a, "{path} changed in the round trip"),
    }
}

#[test]
fn every_example_round_trips_through_its_rust_type() {
    for (kind, docs) in examples() {
        for doc in &docs {
            match kind.as_str() {
                "ForeignCluster" => round_trip::<core::ForeignCluster>(doc),
                "Tenant" => round_trip::<authentication::Tenant>(doc),
                "Identity" => round_trip::<authentication::Identity>(doc),
                "ResourceSlice" => round_trip::<authentication::ResourceSlice>(doc),
                "Configuration" => round_trip::<networking::Configuration>(doc),
                "GatewayServer" => round_trip::<networking::GatewayServer>(doc),
                "GatewayClient" => round_trip::<networking::GatewayClient>(doc),
                "PublicKey" => round_trip::<networking::PublicKey>(doc),
                "Connection" => round_trip::<networking::Connection>(doc),
                "InternalNode" => round_trip::<networking::InternalNode>(doc),
                "RouteConfiguration" => round_trip::<networking::RouteConfiguration>(doc),
                "NatConfiguration" => round_trip::<networking::NatConfiguration>(doc),
                "Network" => round_trip::<ipam::Network>(doc),
                "IP" => round_trip::<ipam::IP>(doc),
                "VirtualNode" => round_trip::<offloading::VirtualNode>(doc),
                "NamespaceOffloading" => round_trip::<offloading::NamespaceOffloading>(doc),
                "ShadowPod" => round_trip::<offloading::ShadowPod>(doc),
                "ShadowEndpointSlice" => round_trip::<offloading::ShadowEndpointSlice>(doc),
                "NamespaceMap" => round_trip::<offloading::NamespaceMap>(doc),
                other => panic!("no Rust type for {other}"),
            }
        }
    }
}

#[test]
fn statuses_round_trip_too() {
    let fc = serde_json::json!({
        "apiVersion": "core.strait.dev/v1beta1", "kind": "ForeignCluster",
        "metadata": {"name": "cluster-b"},
        "spec": {"clusterID": "cluster-b", "modules": {"network": true, "authentication": false, "offloading": false}},
        "status": {
            "role": "Provider",
            "modules": {"network": {"state": "Error", "conditions": [{
                "type": "NetworkReady", "status": "False", "reason": "HandshakeFailing",
                "message": "no WireGuard handshake for 3m", "lastTransitionTime": "2026-11-25T10:00:00Z",
                "observedGeneration": 4
            }]}},
            "tenantNamespace": {"local": "strait-tenant-cluster-b"},
            "conditions": []
        }
    });
    round_trip::<core::ForeignCluster>(&fc);
    let conn = serde_json::json!({
        "apiVersion": "networking.strait.dev/v1beta1", "kind": "Connection",
        "metadata": {"name": "cluster-b", "namespace": "t"},
        "spec": {"type": "Client", "gatewayRef": {"apiVersion": "networking.strait.dev/v1beta1", "kind": "GatewayClient", "name": "cluster-b"}},
        "status": {"value": "Connected", "latency": {"value": "1.2ms", "timestamp": "2026-11-25T10:00:00Z"},
                   "lastHandshakeTime": "2026-11-25T09:59:58Z"}
    });
    round_trip::<networking::Connection>(&conn);
    strait_api::admission::admit(&support::crd("Connection"), &conn, None)
        .expect("a valid status is admitted");
}
