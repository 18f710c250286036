//! Admission as the API server does it for Strait's CRDs, without an API
//! server: defaults, then the structural schema (types, enums, patterns,
//! ranges, required and unknown fields), then the CEL rules evaluated by a
//! real CEL interpreter with the Kubernetes extension library.
//!
//! Agents validate their `--config` files with it, the CLI validates what it
//! is about to write, and the tests prove every example and every rule.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::core::cel::{apply_defaults, RootContext, Validator};
use serde_json::{Map, Value};

/// Why an object was refused: one line per problem, `path: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} {name} is invalid:\n  {}", .problems.join("\n  "))]
pub struct Rejected {
    pub kind: String,
    pub name: String,
    pub problems: Vec<String>,
}

/// Validates `object` (and, on update, against `old`) the way the API server
/// admits it for `crd`. Returns the defaulted object on success.
pub fn admit(
    crd: &CustomResourceDefinition,
    object: &Value,
    old: Option<&Value>,
) -> Result<Value, Rejected> {
    admit_with_schema(crd, &schema_of(crd), object, old)
}

/// The served version's OpenAPI schema of `crd` as JSON (`Null` if none).
/// Turning it into JSON is most of the cost of an admission for a kind with
/// a large schema (a ShadowPod embeds a whole PodSpec), so a caller that
/// admits many objects computes it once and uses [`admit_with_schema`].
pub fn schema_of(crd: &CustomResourceDefinition) -> Value {
    crd.spec
        .versions
        .iter()
        .find(|v| v.served)
        .and_then(|v| v.schema.as_ref())
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .and_then(|s| serde_json::to_value(s).ok())
        .unwrap_or(Value::Null)
}

/// [`admit`] with the schema already computed by [`schema_of`].
pub fn admit_with_schema(
    crd: &CustomResourceDefinition,
    schema: &Value,
    object: &Value,
    old: Option<&Value>,
) -> Result<Value, Rejected> {
    let kind = crd.spec.names.kind.clone();
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("<unnamed>")
        .to_owned();
    let reject = |problems| Rejected {
        kind: kind.clone(),
        name: name.clone(),
        problems,
    };
    let Some(version) = crd.spec.versions.iter().find(|v| v.served) else {
        return Err(reject(vec!["the CRD serves no version".into()]));
    };
    let api_version = format!("{}/{}", crd.spec.group, version.name);

    let mut problems = Vec::new();
    if object.get("apiVersion").and_then(Value::as_str) != Some(api_version.as_str()) {
        problems.push(format!("apiVersion: must be {api_version}"));
    }
    if object.get("kind").and_then(Value::as_str) != Some(kind.as_str()) {
        problems.push(format!("kind: must be {kind}"));
    }
    check_metadata(
        object.get("metadata"),
        crd.spec.scope == "Namespaced",
        &mut problems,
    );

    let defaulted = apply_defaults(schema, object);
    structural(schema, &defaulted, "", &mut problems);
    if !problems.is_empty() {
        // The API server stops at schema errors; CEL rules assume a well-typed object.
        return Err(reject(problems));
    }
    let root = RootContext {
        api_version,
        api_group: crd.spec.group.clone(),
        kind: kind.clone(),
    };
    if let Err(errors) =
        Validator::new().validate_with_context(schema, &defaulted, old, Some(&root))
    {
        problems.extend(errors.iter().map(ToString::to_string));
        return Err(reject(problems));
    }
    Ok(defaulted)
}

fn check_metadata(metadata: Option<&Value>, namespaced: bool, problems: &mut Vec<String>) {
    let Some(metadata) = metadata.and_then(Value::as_object) else {
        problems.push("metadata: required".into());
        return;
    };
    let name = metadata.get("name").and_then(Value::as_str).unwrap_or("");
    let generate = metadata
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() && generate.is_empty() {
        problems.push("metadata.name: required".into());
    } else if !name.is_empty() && !is_dns_subdomain(name) {
        problems.push(format!(
            "metadata.name: {name:?} must be a lowercase DNS subdomain (a-z, 0-9, '-', '.')"
        ));
    }
    if !namespaced && metadata.contains_key("namespace") {
        problems.push("metadata.namespace: not allowed on a cluster-scoped kind".into());
    }
}

fn is_dns_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// The structural checks of an OpenAPI v3 CRD schema, with the API server's wording.
fn structural(schema: &Value, value: &Value, path: &str, problems: &mut Vec<String>) {
    let Some(schema) = schema.as_object() else {
        return;
    };
    let at = if path.is_empty() { "<root>" } else { path };
    if value.is_null() {
        if !flag(schema, "nullable") && schema.contains_key("type") {
            problems.push(format!("{at}: Invalid value: null: must not be null"));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_i64() || value.is_u64() || value.is_string()) {
            problems.push(format!(
                "{at}: Invalid value: {value}: must be an integer or a string"
            ));
        }
        return;
    }
    if let Some(expected) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(expected, value) {
            problems.push(format!(
                "{at}: Invalid value: {}: must be of type {expected}",
                short(value)
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let list: Vec<String> = allowed
                .iter()
                .filter(|v| !v.is_null())
                .map(ToString::to_string)
                .collect();
            problems.push(format!(
                "{at}: Unsupported value: {value}: supported values: {}",
                list.join(", ")
            ));
        }
    }
    match value {
        Value::String(s) => string_checks(schema, s, at, problems),
        Value::Number(n) => number_checks(schema, n.as_f64().unwrap_or(0.0), value, at, problems),
        Value::Array(items) => {
            bound(
                schema,
                "minItems",
                "maxItems",
                items.len(),
                "items",
                at,
                problems,
            );
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    structural(item_schema, item, &format!("{path}[{i}]"), problems);
                }
            }
        }
        Value::Object(fields) => object_checks(schema, fields, path, problems),
        Value::Bool(_) | Value::Null => {}
    }
}

fn object_checks(
    schema: &Map<String, Value>,
    fields: &Map<String, Value>,
    path: &str,
    problems: &mut Vec<String>,
) {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_owned()
        } else {
            format!("{path}.{key}")
        }
    };
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required.iter().filter_map(Value::as_str) {
            if !fields.contains_key(key) {
                problems.push(format!("{}: Required value", child(key)));
            }
        }
    }
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties");
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    for (key, value) in fields {
        // metadata is ObjectMeta, checked separately; the schema leaves it open.
        if path.is_empty() && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match (properties.and_then(|p| p.get(key)), additional) {
            (Some(field_schema), _) => structural(field_schema, value, &child(key), problems),
            (None, Some(Value::Object(_))) => structural(
                additional.unwrap_or(&Value::Null),
                value,
                &child(key),
                problems,
            ),
            (None, Some(Value::Bool(true))) => {}
            _ if preserve => {}
            _ => problems.push(format!("{}: unknown field", child(key))),
        }
    }
    bound(
        schema,
        "minProperties",
        "maxProperties",
        fields.len(),
        "properties",
        if path.is_empty() { "<root>" } else { path },
        problems,
    );
}

fn string_checks(schema: &Map<String, Value>, s: &str, at: &str, problems: &mut Vec<String>) {
    bound(
        schema,
        "minLength",
        "maxLength",
        s.chars().count(),
        "characters",
        at,
        problems,
    );
    if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
        match regex::Regex::new(pattern) {
            Ok(re) if re.is_match(s) => {}
            Ok(_) => problems.push(format!(
                "{at}: Invalid value: {s:?}: should match '{pattern}'"
            )),
            Err(e) => problems.push(format!("{at}: the schema's pattern does not compile: {e}")),
        }
    }
}

fn number_checks(
    schema: &Map<String, Value>,
    n: f64,
    value: &Value,
    at: &str,
    problems: &mut Vec<String>,
) {
    if let Some(min) = schema.get("minimum").and_then(Value::as_f64) {
        if n < min {
            problems.push(format!(
                "{at}: Invalid value: {value}: should be greater than or equal to {min}"
            ));
        }
    }
    if let Some(max) = schema.get("maximum").and_then(Value::as_f64) {
        if n > max {
            problems.push(format!(
                "{at}: Invalid value: {value}: should be less than or equal to {max}"
            ));
        }
    }
}

fn bound(
    schema: &Map<String, Value>,
    min_key: &str,
    max_key: &str,
    len: usize,
    unit: &str,
    at: &str,
    problems: &mut Vec<String>,
) {
    let len = len as u64;
    if let Some(min) = schema.get(min_key).and_then(Value::as_u64) {
        if len < min {
            problems.push(format!(
                "{at}: Invalid value: should have at least {min} {unit}"
            ));
        }
    }
    if let Some(max) = schema.get(max_key).and_then(Value::as_u64) {
        if len > max {
            problems.push(format!(
                "{at}: Too many: {len}: must have at most {max} {unit}"
            ));
        }
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        _ => true,
    }
}

fn flag(schema: &Map<String, Value>, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool).unwrap_or(false)
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 {
        format!(
            "{}...",
            &text[..text.char_indices().nth(37).map_or(text.len(), |(i, _)| i)]
        )
    } else {
        text
    }
}
