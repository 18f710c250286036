//! Reading and writing `metadata` on objects kept as JSON: the server stores
//! every kind the same way, so it only ever looks at the fields the API
//! machinery owns.

use serde_json::{Map, Value};

pub fn str_at<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or("")
}

pub fn name(object: &Value) -> &str {
    str_at(object, "/metadata/name")
}

pub fn namespace(object: &Value) -> &str {
    str_at(object, "/metadata/namespace")
}

pub fn uid(object: &Value) -> &str {
    str_at(object, "/metadata/uid")
}

pub fn resource_version(object: &Value) -> &str {
    str_at(object, "/metadata/resourceVersion")
}

pub fn is_deleting(object: &Value) -> bool {
    object
        .pointer("/metadata/deletionTimestamp")
        .is_some_and(|v| !v.is_null())
}

pub fn has_finalizers(object: &Value) -> bool {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

pub fn labels(object: &Value) -> Option<&Map<String, Value>> {
    object
        .pointer("/metadata/labels")
        .and_then(Value::as_object)
}

/// The uids this object names in `metadata.ownerReferences`.
pub fn owner_uids(object: &Value) -> Vec<String> {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r.get("uid").and_then(Value::as_str))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// `metadata` as a mutable map, created when absent or not an object.
pub fn metadata_mut(object: &mut Value) -> &mut Map<String, Value> {
    if !object.is_object() {
        *object = Value::Object(Map::new());
    }
    let root = object.as_object_mut().expect("made an object above");
    let metadata = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !metadata.is_object() {
        *metadata = Value::Object(Map::new());
    }
    metadata.as_object_mut().expect("made an object above")
}

pub fn set_meta(object: &mut Value, key: &str, value: Value) {
    metadata_mut(object).insert(key.to_owned(), value);
}

/// Copies `key` of `metadata` from `from` to `to`, removing it from `to` when `from` lacks it.
pub fn copy_meta(from: &Value, to: &mut Value, key: &str) {
    match from.get("metadata").and_then(|m| m.get(key)) {
        Some(value) => set_meta(to, key, value.clone()),
        None => {
            metadata_mut(to).remove(key);
        }
    }
}

/// The current time as the API server writes it (RFC 3339, seconds).
pub fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The value of a dotted field path (`metadata.name`, `spec.nodeName`) as a
/// field selector compares it; absent fields compare as "".
pub fn field_as_string(object: &Value, path: &str) -> String {
    let mut current = object;
    for key in path.split('.') {
        match current.get(key) {
            Some(next) => current = next,
            None => return String::new(),
        }
    }
    match current {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
