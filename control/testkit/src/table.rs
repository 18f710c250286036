//! `meta.k8s.io/v1` Table responses, which kubectl asks for to print `get`:
//! Name and Age for built-in kinds, the CRD's printer columns for Strait kinds.

use serde_json::{json, Value};

use crate::meta;
use crate::registry::ResourceType;

/// Whether the client asked for a Table (kubectl's human-readable `get`).
pub fn wanted(accept: &str) -> bool {
    accept.split(',').any(|media| {
        let params: Vec<&str> = media.split(';').map(str::trim).collect();
        params.contains(&"as=Table")
            && params.contains(&"g=meta.k8s.io")
            && params.contains(&"v=v1")
    })
}

struct Column {
    name: String,
    kind: String,
    priority: i32,
    /// A simple JSONPath (`.spec.cidrs`); `None` for Name.
    path: Option<String>,
}

fn columns(resource: &ResourceType) -> Vec<Column> {
    let name = Column {
        name: "Name".into(),
        kind: "string".into(),
        priority: 0,
        path: None,
    };
    let printer_columns = resource
        .crd
        .as_deref()
        .and_then(|crd| {
            crd.spec
                .versions
                .iter()
                .find(|v| v.name == resource.version)
        })
        .and_then(|v| v.additional_printer_columns.clone());
    let mut columns = vec![name];
    match printer_columns {
        Some(defined) => columns.extend(defined.into_iter().map(|c| Column {
            name: c.name,
            kind: c.type_,
            priority: c.priority.unwrap_or(0),
            path: Some(c.json_path),
        })),
        None => columns.push(Column {
            name: "Age".into(),
            kind: "date".into(),
            priority: 0,
            path: Some(".metadata.creationTimestamp".into()),
        }),
    }
    columns
}

pub fn render(resource: &ResourceType, objects: &[Value], resource_version: u64) -> Value {
    let columns = columns(resource);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": if c.kind == "date" { "string" } else { c.kind.as_str() },
                "format": if c.path.is_none() { "name" } else { "" },
                "description": "",
                "priority": c.priority,
            })
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|object| {
            let cells: Vec<Value> = columns.iter().map(|c| cell(c, object)).collect();
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": object.get("metadata").cloned().unwrap_or(Value::Null),
                },
            })
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version.to_string()},
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

fn cell(column: &Column, object: &Value) -> Value {
    let Some(path) = &column.path else {
        return Value::String(meta::name(object).to_owned());
    };
    let value = path
        .trim_start_matches('.')
        .split('.')
        .try_fold(object, |current, key| current.get(key));
    match (value, column.kind.as_str()) {
        (None | Some(Value::Null), _) => Value::String("<none>".into()),
        (Some(Value::String(time)), "date") => Value::String(age(time)),
        (Some(Value::String(s)), _) => Value::String(s.clone()),
        (Some(other), "integer" | "number" | "boolean") => other.clone(),
        (Some(other), _) => Value::String(other.to_string()),
    }
}

/// How long ago an RFC 3339 time was, as kubectl prints ages.
fn age(time: &str) -> String {
    let Ok(then) = time.parse::<k8s_openapi::jiff::Timestamp>() else {
        return "<invalid>".into();
    };
    let seconds = (k8s_openapi::jiff::Timestamp::now().as_second() - then.as_second()).max(0);
    match seconds {
        s if s < 120 => format!("{s}s"),
        s if s < 7200 => format!("{}m", s / 60),
        s if s < 172_800 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_headers() {
        assert!(wanted(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wanted("application/json"));
        assert!(!wanted("application/json;as=Table;v=v1beta1;g=meta.k8s.io"));
    }
}
