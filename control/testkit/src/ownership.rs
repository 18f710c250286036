//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A simplified model of the API server's structured-merge-diff:
//! - A manager owns leaf fields. Maps (objects) are granular, down to single
//!   labels and annotations; scalars are leaves, and so are lists, except
//!   those the schema declares `x-kubernetes-list-type: map`: their items
//!   are addressed by their key fields (`k:{"type":"Ready"}`, as in
//!   `fieldsV1`) and merged by key, so managers can each own their items
//!   (a `status.conditions` entry per condition type, say). An item whose
//!   last owned field goes is removed.
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

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
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

/// The lists of a kind that merge by key (`x-kubernetes-list-type: map`):
/// their path of field names (items left out) and key fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListMaps(BTreeMap<Vec<String>, Vec<String>>);

impl ListMaps {
    /// The list-maps of the served version of a CRD's schema.
    pub fn from_crd(crd: &CustomResourceDefinition) -> Self {
        let mut lists = ListMaps::default();
        let schema = crd
            .spec
            .versions
            .iter()
            .find(|v| v.served)
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .and_then(|s| serde_json::to_value(s).ok());
        if let Some(schema) = schema {
            lists.walk(&schema, &mut Vec::new());
        }
        lists
    }

    /// `keys` identify the items of the list at `path` (field names only).
    #[cfg(test)]
    pub fn with(mut self, path: &[&str], keys: &[&str]) -> Self {
        self.0.insert(
            path.iter().map(|p| (*p).to_owned()).collect(),
            keys.iter().map(|k| (*k).to_owned()).collect(),
        );
        self
    }

    fn walk(&mut self, schema: &Value, names: &mut Vec<String>) {
        if schema.get("x-kubernetes-list-type").and_then(Value::as_str) == Some("map") {
            let keys: Vec<String> = schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|keys| {
                    keys.iter()
                        .filter_map(|k| k.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if !keys.is_empty() {
                self.0.insert(names.clone(), keys);
            }
        }
        if let Some(items) = schema.get("items") {
            self.walk(items, names);
        }
        if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
            for (name, child) in properties {
                names.push(name.clone());
                self.walk(child, names);
                names.pop();
            }
        }
    }

    /// The key fields of the list at `path`, if it is a list-map.
    fn keys(&self, path: &[String]) -> Option<&[String]> {
        let names: Vec<String> = path.iter().filter(|s| !is_item(s)).cloned().collect();
        self.0.get(&names).map(Vec::as_slice)
    }
}

/// A path segment naming a list-map item by its keys: `k:{"type":"Ready"}`.
fn is_item(segment: &str) -> bool {
    segment.starts_with("k:{")
}

/// The segment of `item` in a list keyed by `keys`, when it has them all.
fn item_segment(keys: &[String], item: &Value) -> Option<String> {
    let mut parts = Vec::new();
    for key in keys {
        let value = item.get(key)?;
        parts.push(format!("{}:{value}", Value::String(key.clone())));
    }
    Some(format!("k:{{{}}}", parts.join(",")))
}

/// The item of `list` that `segment` names.
fn find_item(list: &[Value], segment: &str) -> Option<usize> {
    let keys: Map<String, Value> = serde_json::from_str(segment.strip_prefix("k:")?).ok()?;
    list.iter()
        .position(|item| keys.iter().all(|(k, v)| item.get(k) == Some(v)))
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
pub fn owned_paths(
    object: &Value,
    scope: Scope,
    has_status: bool,
    lists: &ListMaps,
) -> BTreeSet<FieldPath> {
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
                        leaves(value, prefix, &mut paths, lists);
                    } else {
                        paths.insert(prefix);
                    }
                }
            }
            continue;
        }
        leaves(value, vec![key.clone()], &mut paths, lists);
    }
    paths
}

/// Empty maps own nothing: they are structure, not values. A list-map's
/// items are structure too (unless one lacks a key: then the list is atomic).
fn leaves(value: &Value, path: FieldPath, into: &mut BTreeSet<FieldPath>, lists: &ListMaps) {
    if let (Some(items), Some(keys)) = (value.as_array(), lists.keys(&path)) {
        let segments: Option<Vec<String>> =
            items.iter().map(|item| item_segment(keys, item)).collect();
        if let Some(segments) = segments {
            for (item, segment) in items.iter().zip(segments) {
                let mut item_path = path.clone();
                item_path.push(segment);
                leaves(item, item_path, into, lists);
            }
            return;
        }
    }
    match value.as_object() {
        Some(map) => {
            for (key, child) in map {
                let mut child_path = path.clone();
                child_path.push(key.clone());
                leaves(child, child_path, into, lists);
            }
        }
        _ => {
            into.insert(path);
        }
    }
}

fn child<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Array(list) if is_item(key) => list.get(find_item(list, key)?),
        _ => value.get(key),
    }
}

fn value_at<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter()
        .try_fold(object, |current, key| child(current, key))
}

/// Removes the field at `path`; a list-map item left empty goes with it.
fn remove_at(object: &mut Value, path: &[String]) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if is_item(first) {
        let Some(list) = object.as_array_mut() else {
            return;
        };
        let Some(index) = find_item(list, first) else {
            return;
        };
        remove_at(&mut list[index], rest);
        if rest.is_empty() || list[index].as_object().is_some_and(Map::is_empty) {
            list.remove(index);
        }
        return;
    }
    if rest.is_empty() {
        if let Some(map) = object.as_object_mut() {
            map.remove(first);
        }
        return;
    }
    if let Some(next) = object.get_mut(first.as_str()) {
        remove_at(next, rest);
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
    let children: Vec<(&String, &Value)> = map
        .iter()
        .filter(|(k, _)| k.starts_with("f:") || is_item(k))
        .collect();
    if children.is_empty() {
        if !path.is_empty() {
            into.insert(path);
        }
        return;
    }
    for (key, child) in children {
        let mut child_path = path.clone();
        child_path.push(if is_item(key) {
            key.clone()
        } else {
            key[2..].to_owned()
        });
        tree_to_paths(child, child_path, into);
    }
}

fn paths_to_tree(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut current = &mut root;
        for key in path {
            let segment = if is_item(key) {
                key.clone()
            } else {
                format!("f:{key}")
            };
            let child = current
                .entry(segment)
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
    lists: &ListMaps,
) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let now_paths = owned_paths(new, scope, has_status, lists);
    let before = old
        .map(|o| owned_paths(o, scope, has_status, lists))
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
    lists: &ListMaps,
    force: bool,
) -> Result<Value, Vec<Conflict>> {
    let mut entries = read_entries(current);
    let applied = owned_paths(config, scope, has_status, lists);

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
    merge_in_scope(&mut merged, config, scope, has_status, lists);

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
/// recursively, list-maps item by item, anything else replaced.
fn merge_in_scope(
    target: &mut Value,
    config: &Value,
    scope: Scope,
    has_status: bool,
    lists: &ListMaps,
) {
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
                    deep_merge(
                        slot,
                        value,
                        &mut vec!["metadata".into(), owned.into()],
                        lists,
                    );
                }
            }
            continue;
        }
        if let Some(map) = target.as_object_mut() {
            let slot = map.entry(key.clone()).or_insert(Value::Null);
            deep_merge(slot, value, &mut vec![key.clone()], lists);
        }
    }
}

fn deep_merge(target: &mut Value, value: &Value, path: &mut Vec<String>, lists: &ListMaps) {
    if let (Some(keys), Value::Array(items), Some(configured)) =
        (lists.keys(path), &mut *target, value.as_array())
    {
        let keys = keys.to_vec();
        if configured.iter().all(|i| item_segment(&keys, i).is_some()) {
            for item in configured {
                let Some(segment) = item_segment(&keys, item) else {
                    continue;
                };
                match find_item(items, &segment) {
                    Some(index) => deep_merge(&mut items[index], item, path, lists),
                    None => items.push(item.clone()),
                }
            }
            return;
        }
    }
    match (target.as_object_mut(), value.as_object()) {
        (Some(target_map), Some(value_map)) => {
            for (key, child) in value_map {
                path.push(key.clone());
                deep_merge(
                    target_map.entry(key.clone()).or_insert(Value::Null),
                    child,
                    path,
                    lists,
                );
                path.pop();
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
            &ListMaps::default(),
            false,
        )
        .expect("no conflict");
        let second = apply(
            &first,
            &object(json!({"a": "1"})),
            "m",
            Scope::Main,
            false,
            &ListMaps::default(),
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
            &ListMaps::default(),
            false,
        )
        .expect("no conflict");
        let conflicts = apply(
            &first,
            &object(json!({"a": "2"})),
            "two",
            Scope::Main,
            false,
            &ListMaps::default(),
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
            &ListMaps::default(),
            false,
        )
        .expect("shared");
        let forced = apply(
            &first,
            &object(json!({"a": "2"})),
            "two",
            Scope::Main,
            false,
            &ListMaps::default(),
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
            &ListMaps::default(),
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

    fn with_conditions(conditions: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "x"},
               "status": {"conditions": conditions}})
    }

    fn condition(type_: &str, status: &str) -> Value {
        json!({"type": type_, "status": status, "reason": format!("{type_}{status}")})
    }

    fn conditions_of(object: &Value) -> Vec<(String, String)> {
        object["status"]["conditions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|c| {
                        (
                            c["type"].as_str().unwrap_or("").to_owned(),
                            c["status"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    #[test]
    fn list_map_items_belong_to_their_appliers() {
        let lists = ListMaps::default().with(&["status", "conditions"], &["type"]);
        let status_apply = |current: &Value, conditions: Value, manager: &str| {
            apply(
                current,
                &with_conditions(conditions),
                manager,
                Scope::Status,
                true,
                &lists,
                true,
            )
            .expect("forced")
        };
        let empty = json!({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "x"}});
        let one = status_apply(
            &empty,
            json!([condition("Ready", "False")]),
            "configuration",
        );
        let both = status_apply(&one, json!([condition("RoutesReady", "True")]), "routes");
        assert_eq!(
            conditions_of(&both),
            [
                ("Ready".into(), "False".into()),
                ("RoutesReady".into(), "True".into())
            ],
            "the second manager's item joins the first's"
        );
        // Each rewrites its own item, several times: the other's stays.
        let mut object = both;
        for status in ["True", "False", "True"] {
            object = status_apply(
                &object,
                json!([condition("Ready", status)]),
                "configuration",
            );
            object = status_apply(&object, json!([condition("RoutesReady", status)]), "routes");
        }
        assert_eq!(
            conditions_of(&object),
            [
                ("Ready".into(), "True".into()),
                ("RoutesReady".into(), "True".into())
            ]
        );
        let fields = &object["metadata"]["managedFields"];
        let routes = fields
            .as_array()
            .and_then(|l| l.iter().find(|e| e["manager"] == "routes"))
            .expect("an entry for routes");
        assert_eq!(
            routes["fieldsV1"]["f:status"]["f:conditions"],
            json!({"k:{\"type\":\"RoutesReady\"}": {"f:reason": {}, "f:status": {}, "f:type": {}}}),
            "items are recorded by key, as the API server does"
        );
        // Ownership survives the round trip through managedFields: an
        // applier that stops setting its item removes that item only.
        let dropped = status_apply(&object, json!([]), "routes");
        assert_eq!(conditions_of(&dropped), [("Ready".into(), "True".into())]);
        // An item taken over by force leaves the old owner; one still
        // shared by another manager stays when one of them drops it.
        let shared = status_apply(&object, json!([condition("Ready", "True")]), "routes");
        let after = status_apply(&shared, json!([]), "configuration");
        assert_eq!(
            conditions_of(&after),
            [("Ready".into(), "True".into())],
            "routes co-owns Ready now (same value): it stays"
        );
    }

    #[test]
    fn without_the_schema_a_list_is_one_atomic_field() {
        let none = ListMaps::default();
        let empty = json!({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "x"}});
        let one = apply(
            &empty,
            &with_conditions(json!([condition("Ready", "True")])),
            "a",
            Scope::Status,
            true,
            &none,
            true,
        )
        .expect("forced");
        let two = apply(
            &one,
            &with_conditions(json!([condition("RoutesReady", "True")])),
            "b",
            Scope::Status,
            true,
            &none,
            true,
        )
        .expect("forced");
        assert_eq!(conditions_of(&two), [("RoutesReady".into(), "True".into())]);
    }

    #[test]
    fn conflicts_inside_list_map_items_name_the_item() {
        let lists = ListMaps::default().with(&["status", "conditions"], &["type"]);
        let empty = json!({"apiVersion": "v1", "kind": "Thing", "metadata": {"name": "x"}});
        let one = apply(
            &empty,
            &with_conditions(json!([condition("Ready", "True")])),
            "a",
            Scope::Status,
            true,
            &lists,
            false,
        )
        .expect("first");
        let conflicts = apply(
            &one,
            &with_conditions(json!([condition("Ready", "False")])),
            "b",
            Scope::Status,
            true,
            &lists,
            false,
        )
        .expect_err("b changes a's item");
        assert!(
            conflicts.contains(&(
                "a".to_owned(),
                ".status.conditions.k:{\"type\":\"Ready\"}.status".to_owned()
            )),
            "{conflicts:?}"
        );
        apply(
            &one,
            &with_conditions(json!([condition("Other", "False")])),
            "b",
            Scope::Status,
            true,
            &lists,
            false,
        )
        .expect("another item is no conflict");
    }

    #[test]
    fn strait_crds_declare_conditions_as_list_maps() {
        let configuration = strait_api::crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "Configuration")
            .expect("the Configuration CRD");
        let lists = ListMaps::from_crd(&configuration);
        assert_eq!(
            lists.keys(&["status".to_owned(), "conditions".to_owned()]),
            Some(&["type".to_owned()][..])
        );
        assert_eq!(lists.keys(&["spec".to_owned(), "remote".to_owned()]), None);
    }
}
