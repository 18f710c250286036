//! Shared by the API tests: the examples, CRD lookup and JSON merge patches.
#![allow(
    dead_code,
    reason = "each test binary includes this module and uses a different part of it"
)]

use std::{collections::BTreeMap, path::PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::Deserialize as _;
use serde_json::Value;

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every document of every examples/*.yaml, by kind (a kind may have several).
pub fn examples() -> BTreeMap<String, Vec<Value>> {
    let dir = repo_root().join("examples");
    let mut by_kind: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("example readable");
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value =
                Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let kind = value["kind"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: a document without kind", file.display()));
            by_kind.entry(kind.to_owned()).or_default().push(value);
        }
    }
    by_kind
}

/// The first example of `kind`.
pub fn example(kind: &str) -> Value {
    examples()
        .remove(kind)
        .and_then(|v| v.into_iter().next())
        .unwrap_or_else(|| panic!("no example of {kind}"))
}

pub fn crd(kind: &str) -> CustomResourceDefinition {
    strait_api::crds()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for {kind}"))
}

/// RFC 7386 JSON merge patch: objects merge, null deletes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (key, value) in p {
                if value.is_null() {
                    t.remove(key);
                } else {
                    merge_patch(t.entry(key.clone()).or_insert(Value::Null), value);
                }
            }
        }
        (target, patch) => *target = patch.clone(),
    }
}
