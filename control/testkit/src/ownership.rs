//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A simplified model of the API server's structured-merge-diff:
//! - A manager owns leaf fields. Maps (objects) are granular, down to single
//!   labels and annotations; lists and scalars are atomic leaves (no
//!   `listType=map` merging by key, so two managers cannot share one list).
//! - Of `metadata`, only `labels`, `annotations`, `finalizers` and
//!   `ownerReferences` are owned; everything else is the server's.
//! - Apply: a field the applier sets that another manager owns with a
//!   different value is a conflict (409) unless `force=true`, which takes
//!   ownership. Fields the applier owned before and no longer sets are
//!   removed unless another manager also owns them. Everything else in the
//!   object is left alone, and the configuration is merged in map by map.
//! - Update, patch and create record the fields they changed as owned by
//!   their manager (operation `Update`) and take them from everyone else.
//! - Each manager entry is per (manager, operation, subresource): an apply to
//!   `/status` owns only `status`, an apply to the main resource of a kind
//!   with a status subresource never owns `status`.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::meta;

pub type FieldPath = Vec<String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Main,
    Status,
}

impl Scope {
    fn subresource(self) -> &'static str {
        match self {
            Self::Main => "",
            Self::Status => "status",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: String,
    fields: BTreeSet<FieldPath>,
}

impl Entry {
    fn is(&self, manager: &str, operation: &str, scope: Scope) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource == scope.subresource()
    }
}

/// The leaf fields of `object` a manager writing in `scope` can own.
pub fn owned_paths(object: &Value, scope: Scope, has_status: bool) -> BTreeSet<FieldPath> {
    let mut paths = BTreeSet::new();
    let Some(root) = object.as_object() else {
        return paths;
    };
    for (key, value) in root {
        let in_scope = match key.as_str() {
            "apiVersion" | "kind" => false,
            "metadata" => scope == Scope::Main,
            "status" => scope == Scope::Status || !has_status,
            _ => scope == Scope::Main || !has_status,
        };
        if !in_scope {
            continue;
        }
        if key == "metadata" {
            for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(value) = value.get(owned) {
                    let prefix = vec!["metadata".to_owned(), owned.to_owned()];
                    if matches!(owned, "labels" | "annotations") {
                        leaves(value, prefix, &mut paths);
                    } else {
                        paths.insert(prefix);
                    }
                }
            }
            continue;
        }
        leaves(value, vec![key.clone()], &mut paths);
    }
    paths
}

/// Empty maps own nothing: they are structure, not values.
fn leaves(value: &Value, path: FieldPath, into: &mut BTreeSet<FieldPath>) {
    match value.as_object() {
        Some(map) => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                leaves(child, child_path, into);
            }
        }
        _ => {
            into.insert(path);
        }
    }
}

fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |current, key| current.get(key))
}

fn remove_at(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut current = object;
    for key in parents {
        match current.get_mut(key) {
            Some(next) => current = next,
            None => return,
        }
    }
    if let Some(map) = current.as_object_mut() {
        map.remove(last);
    }
}

/// Whether one path is the other or contains it.
fn overlaps(a: &[String], b: &[String]) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn dotted(path: &[String]) -> String {
    format!(".{}", path.join("."))
}

fn read_entries(object: &Value) -> Vec<Entry> {
    let Some(list) = object
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    list.iter()
        .map(|entry| {
            let text = |key: &str| {
                entry
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned()
            };
            let mut fields = BTreeSet::new();
            if let Some(tree) = entry.get("fieldsV1") {
                tree_to_paths(tree, Vec::new(), &mut fields);
            }
            Entry {
                manager: text("manager"),
                operation: text("operation"),
                subresource: text("subresource"),
                api_version: text("apiVersion"),
                time: text("time"),
                fields,
            }
        })
        .collect()
}

fn tree_to_paths(tree: &Value, path: FieldPath, into: &mut BTreeSet<FieldPath>) {
    let Some(map) = tree.as_object() else {
        return;
    };
    let children: Vec<(&String, &Value)> =
        map.iter().filter(|(k, _)| k.starts_with("f:")).collect();
    if children.is_empty() {
        if !path.is_empty() {
            into.insert(path);
        }
        return;
    }
    for (key, child) in children {
        let mut child_path = path.clone();
        child_path.push(key[2..].to_owned());
        tree_to_paths(child, child_path, into);
    }
}

fn paths_to_tree(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut current = &mut root;
        for key in path {
            let child = current
                .entry(format!("f:{key}"))
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            current = match child.as_object_mut() {
                Some(map) => map,
                None => break,
            };
        }
    }
    Value::Object(root)
}

fn write_entries(object: &mut Value, entries: Vec<Entry>) {
    let rendered: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut entry = serde_json::json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": paths_to_tree(&e.fields),
            });
            if !e.subresource.is_empty() {
                entry["subresource"] = Value::String(e.subresource);
            }
            entry
        })
        .collect();
    let metadata = meta::metadata_mut(object);
    if rendered.is_empty() {
        metadata.remove("managedFields");
    } else {
        metadata.insert("managedFields".to_owned(), Value::Array(rendered));
    }
}

fn upsert<'a>(
    entries: &'a mut Vec<Entry>,
    manager: &str,
    operation: &str,
    scope: Scope,
    api_version: &str,
) -> &'a mut Entry {
    let index = match entries.iter().position(|e| e.is(manager, operation, scope)) {
        Some(index) => index,
        None => {
            entries.push(Entry {
                manager: manager.to_owned(),
                operation: operation.to_owned(),
                subresource: scope.subresource().to_owned(),
                api_version: api_version.to_owned(),
                time: String::new(),
                fields: BTreeSet::new(),
            });
            entries.len() - 1
        }
    };
    &mut entries[index]
}

/// Records a create, update or patch by `manager`: the fields it changed
/// become its own. `new` carries `old`'s managedFields on entry (clients
/// cannot rewrite ownership).
pub fn record_update(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    scope: Scope,
    has_status: bool,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let now_paths = owned_paths(new, scope, has_status);
    let before = old
        .map(|o| owned_paths(o, scope, has_status))
        .unwrap_or_default();
    let changed: BTreeSet<FieldPath> = now_paths
        .iter()
        .filter(|p| old.and_then(|o| value_at(o, p)) != value_at(new, p))
        .cloned()
        .collect();
    let removed: Vec<&FieldPath> = before.iter().filter(|p| !now_paths.contains(*p)).collect();
    for entry in entries.iter_mut() {
        entry.fields.retain(|f| {
            !changed.iter().any(|c| overlaps(c, f)) && !removed.iter().any(|r| overlaps(r, f))
        });
    }
    if !changed.is_empty() {
        let api_version = meta::str_at(new, "/apiVersion").to_owned();
        let entry = upsert(&mut entries, manager, "Update", scope, &api_version);
        entry.fields.extend(changed);
        entry.time = meta::now();
    }
    write_entries(new, entries);
}

/// A field another manager owns with a different value: `(manager, .path)`.
pub type Conflict = (String, String);

/// Server-side apply of `config` by `manager` onto `current` (the stored
/// object, or an empty skeleton on create). Returns the merged object with
/// updated managedFields, or the conflicts when not forced.
pub fn apply(
    current: &Value,
    config: &Value,
    manager: &str,
    scope: Scope,
    has_status: bool,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = read_entries(current);
    let applied = owned_paths(config, scope, has_status);

    let mut conflicts = Vec::new();
    for entry in entries.iter().filter(|e| !e.is(manager, "Apply", scope)) {
        for path in &applied {
            for owned in entry.fields.iter().filter(|f| overlaps(f, path)) {
                let longer = if owned.len() > path.len() {
                    owned
                } else {
                    path
                };
                if value_at(current, longer) != value_at(config, longer) {
                    conflicts.push((entry.manager.clone(), dotted(longer)));
                }
            }
        }
    }
    conflicts.sort();
    conflicts.dedup();
    if !conflicts.is_empty() && !force {
        return Err(conflicts);
    }

    let mut merged = current.clone();
    let previously: BTreeSet<FieldPath> = entries
        .iter()
        .find(|e| e.is(manager, "Apply", scope))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    for entry in entries
        .iter_mut()
        .filter(|e| !e.is(manager, "Apply", scope))
    {
        if force {
            entry.fields.retain(|f| {
                !applied
                    .iter()
                    .any(|p| overlaps(p, f) && value_at(current, p) != value_at(config, p))
            });
        }
    }
    for dropped in previously
        .iter()
        .filter(|p| !applied.iter().any(|a| overlaps(a, p)))
    {
        let shared = entries
            .iter()
            .filter(|e| !e.is(manager, "Apply", scope))
            .any(|e| e.fields.iter().any(|f| overlaps(f, dropped)));
        if !shared {
            remove_at(&mut merged, dropped);
        }
    }
    merge_in_scope(&mut merged, config, scope, has_status);

    let api_version = meta::str_at(config, "/apiVersion").to_owned();
    let entry = upsert(&mut entries, manager, "Apply", scope, &api_version);
    if entry.fields != applied || entry.time.is_empty() {
        entry.time = meta::now();
    }
    entry.fields = applied;
    write_entries(&mut merged, entries);
    Ok(merged)
}

/// Merges the parts of `config` the applier may write into `target`: maps
/// recursively, anything else replaced.
fn merge_in_scope(target: &mut Value, config: &Value, scope: Scope, has_status: bool) {
    let Some(config) = config.as_object() else {
        return;
    };
    for (key, value) in config {
        let writable = match key.as_str() {
            "apiVersion" | "kind" => false,
            "metadata" => scope == Scope::Main,
            "status" => scope == Scope::Status || !has_status,
            _ => scope == Scope::Main || !has_status,
        };
        if !writable {
            continue;
        }
        if key == "metadata" {
            let metadata = meta::metadata_mut(target);
            for owned in ["labels", "annotations", "finalizers", "ownerReferences"] {
                if let Some(value) = value.get(owned) {
                    let slot = metadata.entry(owned.to_owned()).or_insert(Value::Null);
                    deep_merge(slot, value);
                }
            }
            continue;
        }
        if let Some(map) = target.as_object_mut() {
            deep_merge(map.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn deep_merge(target: &mut Value, value: &Value) {
    match (target.as_object_mut(), value.as_object()) {
        (Some(target_map), Some(value_map)) => {
            for (key, child) in value_map {
                deep_merge(target_map.entry(key.clone()).or_insert(Value::Null), child);
            }
        }
        _ => *target = value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(spec: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": spec})
    }

    #[test]
    fn apply_removes_fields_the_manager_stopped_setting() {
        let first = apply(
            &object(json!({})),
            &object(json!({"a": "1", "b": "2"})),
            "m",
            Scope::Main,
            false,
            false,
        )
        .expect("no conflict");
        let second = apply(
            &first,
            &object(json!({"a": "1"})),
            "m",
            Scope::Main,
            false,
            false,
        )
        .expect("no conflict");
        assert_eq!(second["data"], json!({"a": "1"}));
    }

    #[test]
    fn apply_conflicts_with_another_manager_unless_forced() {
        let first = apply(
            &object(json!({})),
            &object(json!({"a": "1"})),
            "one",
            Scope::Main,
            false,
            false,
        )
        .expect("no conflict");
        let conflicts = apply(
            &first,
            &object(json!({"a": "2"})),
            "two",
            Scope::Main,
            false,
            false,
        )
        .expect_err("conflict");
        assert_eq!(conflicts, vec![("one".to_owned(), ".data.a".to_owned())]);
        // Same value: shared ownership, no conflict.
        apply(
            &first,
            &object(json!({"a": "1"})),
            "two",
            Scope::Main,
            false,
            false,
        )
        .expect("shared");
        let forced = apply(
            &first,
            &object(json!({"a": "2"})),
            "two",
            Scope::Main,
            false,
            true,
        )
        .expect("forced");
        assert_eq!(forced["data"]["a"], "2");
        // "one" lost the field: dropping it from its config no longer removes it.
        let after = apply(
            &forced,
            &object(json!({})),
            "one",
            Scope::Main,
            false,
            false,
        )
        .expect("ok");
        assert_eq!(after["data"]["a"], "2");
    }

    #[test]
    fn managed_fields_round_trip() {
        let mut entries = vec![Entry {
            manager: "m".into(),
            operation: "Apply".into(),
            subresource: String::new(),
            api_version: "v1".into(),
            time: "t".into(),
            fields: [
                vec!["spec".to_owned(), "a".to_owned()],
                vec!["metadata".to_owned(), "labels".to_owned(), "x".to_owned()],
            ]
            .into_iter()
            .collect(),
        }];
        let mut target = json!({"metadata": {}});
        write_entries(&mut target, entries.clone());
        assert_eq!(
            target["metadata"]["managedFields"][0]["fieldsV1"],
            json!({"f:spec": {"f:a": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
        );
        entries[0].time = "t".into();
        assert_eq!(read_entries(&target), entries);
    }
}
