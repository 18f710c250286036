//! create, update, patch and server-side apply, all ending in `finish_write`
//! (status split, admission, generation, ownership, optimistic concurrency).

use serde_json::{json, Value};

use super::{Call, Reply};
use crate::error::ApiError;
use crate::meta;
use crate::ownership::{self, Scope};
use crate::patch::{self, PatchType};
use crate::store::{State, Store};

fn scope(call: &Call) -> Scope {
    if call.target.status {
        Scope::Status
    } else {
        Scope::Main
    }
}

pub fn create(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    if call.target.status {
        return Err(ApiError::method_not_allowed("POST", "a status subresource"));
    }
    let body = call.json_body()?;
    store.transact(|state| {
        let object = prepare_create(state, call, body)?;
        let mut object = object;
        ownership::record_update(
            None,
            &mut object,
            &call.manager,
            Scope::Main,
            call.resource.has_status,
            &call.resource.list_maps,
        );
        commit_create(state, call, object).map(|o| Reply::Json(201, o))
    })
}

/// Checks identity and namespace, fills the server-owned metadata, drops a
/// status that only the status subresource may write, and admits the object.
fn prepare_create(state: &State, call: &Call, mut object: Value) -> Result<Value, ApiError> {
    let resource = call.resource;
    check_type(call, &object)?;
    object["apiVersion"] = Value::String(resource.api_version());
    object["kind"] = Value::String(resource.kind.clone());
    let body_namespace = meta::namespace(&object).to_owned();
    if resource.namespaced {
        if !body_namespace.is_empty() && body_namespace != call.namespace() {
            return Err(ApiError::bad_request(format!(
                "the namespace of the object ({body_namespace}) does not match the namespace of the request ({})",
                call.namespace()
            )));
        }
        meta::set_meta(
            &mut object,
            "namespace",
            Value::String(call.namespace().to_owned()),
        );
        check_namespace_accepts_content(state, call.namespace())?;
    } else {
        meta::metadata_mut(&mut object).remove("namespace");
    }
    if meta::name(&object).is_empty() {
        let prefix = meta::str_at(&object, "/metadata/generateName").to_owned();
        if prefix.is_empty() {
            return Err(ApiError::invalid(
                &resource.group,
                &resource.kind,
                "",
                &["metadata.name: Required value: name or generateName is required".to_owned()],
            ));
        }
        let suffix: String = uuid::Uuid::new_v4()
            .simple()
            .to_string()
            .chars()
            .take(5)
            .collect();
        meta::set_meta(
            &mut object,
            "name",
            Value::String(format!("{prefix}{suffix}")),
        );
    }
    if let Some(name) = call.target.name.as_deref() {
        if name != meta::name(&object) {
            return Err(ApiError::bad_request(
                "the name of the object does not match the name in the URL",
            ));
        }
    }
    let metadata = meta::metadata_mut(&mut object);
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "managedFields",
        "selfLink",
    ] {
        metadata.remove(server_owned);
    }
    metadata.insert(
        "uid".into(),
        Value::String(uuid::Uuid::new_v4().to_string()),
    );
    metadata.insert("creationTimestamp".into(), Value::String(meta::now()));
    metadata.insert("generation".into(), json!(1));
    if resource.has_status {
        if let Some(map) = object.as_object_mut() {
            map.remove("status");
        }
    }
    if resource.is_namespace() {
        object["status"] = json!({"phase": "Active"});
    }
    admit(call, &object, None)
}

fn commit_create(state: &mut State, call: &Call, object: Value) -> Result<Value, ApiError> {
    let name = meta::name(&object).to_owned();
    if state
        .get(call.target.type_id, call.namespace(), &name)
        .is_some()
    {
        return Err(ApiError::already_exists(
            &call.resource.group,
            &call.resource.plural,
            &call.resource.group_resource(),
            &name,
        ));
    }
    if call.query.dry_run() {
        return Ok(object);
    }
    Ok(state.commit(call.target.type_id, object))
}

fn check_type(call: &Call, object: &Value) -> Result<(), ApiError> {
    let api_version = meta::str_at(object, "/apiVersion");
    let kind = meta::str_at(object, "/kind");
    if (!api_version.is_empty() && api_version != call.resource.api_version())
        || (!kind.is_empty() && kind != call.resource.kind)
    {
        return Err(ApiError::bad_request(format!(
            "the object is {api_version}/{kind}, but the request is for {}/{}",
            call.resource.api_version(),
            call.resource.kind
        )));
    }
    Ok(())
}

fn check_namespace_accepts_content(state: &State, namespace: &str) -> Result<(), ApiError> {
    let ns_type = state.registry().namespace_type();
    match state.get(ns_type, "", namespace) {
        None => Err(ApiError::not_found(
            "",
            "namespaces",
            "namespaces",
            namespace,
        )),
        Some(ns) if meta::is_deleting(ns) => Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {namespace} because it is being terminated"
        ))),
        Some(_) => Ok(()),
    }
}

/// Strait kinds go through the same admission as in a real cluster.
fn admit(call: &Call, object: &Value, old: Option<&Value>) -> Result<Value, ApiError> {
    let Some(crd) = call.resource.crd.as_deref() else {
        return Ok(object.clone());
    };
    let admitted = match call.resource.crd_schema.as_deref() {
        Some(schema) => strait_api::admission::admit_with_schema(crd, schema, object, old),
        None => strait_api::admission::admit(crd, object, old),
    };
    admitted.map_err(|rejected| {
        tracing::debug!(kind = %call.resource.kind, name = %rejected.name, problems = ?rejected.problems, "admission refused");
        ApiError::invalid(&call.resource.group, &call.resource.kind, &rejected.name, &rejected.problems)
    })
}

pub fn update(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    let body = call.json_body()?;
    check_type(call, &body)?;
    if meta::name(&body) != call.name() {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name in the URL",
        ));
    }
    store.transact(|state| {
        let old = state
            .get(call.target.type_id, call.namespace(), call.name())
            .cloned()
            .ok_or_else(|| call.not_found(call.name()))?;
        let requested = meta::resource_version(&body);
        // An empty resourceVersion is an unconditional update.
        if !requested.is_empty() && requested != meta::resource_version(&old) {
            return Err(call.stale());
        }
        finish_write(state, call, &old, body, false).map(|o| Reply::Json(200, o))
    })
}

pub fn patch(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    let patch_type = PatchType::from_content_type(call.content_type)?;
    if patch_type == PatchType::Apply {
        return apply(store, call);
    }
    store.transact(|state| {
        let old = state
            .get(call.target.type_id, call.namespace(), call.name())
            .cloned()
            .ok_or_else(|| call.not_found(call.name()))?;
        let patched = patch::apply(patch_type, &old, call.body)?;
        // A patch that carries a resourceVersion is a precondition on it.
        if meta::resource_version(&patched) != meta::resource_version(&old) {
            return Err(call.stale());
        }
        finish_write(state, call, &old, patched, false).map(|o| Reply::Json(200, o))
    })
}

fn apply(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    let Some(manager) = call.query.get("fieldManager").filter(|m| !m.is_empty()) else {
        return Err(ApiError::bad_request(
            "fieldManager is required for apply requests",
        ));
    };
    let config: Value = serde_norway::from_slice(call.body).map_err(|e| {
        ApiError::bad_request(format!("the apply configuration is not valid YAML: {e}"))
    })?;
    if !config.is_object() {
        return Err(ApiError::bad_request(
            "the apply configuration must be an object",
        ));
    }
    check_type(call, &config)?;
    let body_name = meta::name(&config);
    if !body_name.is_empty() && body_name != call.name() {
        return Err(ApiError::bad_request(
            "the name of the object does not match the name in the URL",
        ));
    }
    let force = call.query.flag("force").unwrap_or(false);
    let has_status = call.resource.has_status;
    let lists = &call.resource.list_maps;
    let conflict = |conflicts| {
        ApiError::apply_conflict(
            &call.resource.group,
            &call.resource.plural,
            call.name(),
            conflicts,
        )
    };
    store.transact(|state| {
        let existing = state
            .get(call.target.type_id, call.namespace(), call.name())
            .cloned();
        match existing {
            Some(old) => {
                let merged = ownership::apply(
                    &old,
                    &config,
                    manager,
                    scope(call),
                    has_status,
                    lists,
                    force,
                )
                .map_err(conflict)?;
                finish_write(state, call, &old, merged, true).map(|o| Reply::Json(200, o))
            }
            None if call.target.status => Err(call.not_found(call.name())),
            None => {
                let mut skeleton = json!({
                    "apiVersion": call.resource.api_version(),
                    "kind": call.resource.kind,
                    "metadata": {"name": call.name()},
                });
                if call.resource.namespaced {
                    meta::set_meta(
                        &mut skeleton,
                        "namespace",
                        Value::String(call.namespace().to_owned()),
                    );
                }
                let merged = ownership::apply(
                    &skeleton,
                    &config,
                    manager,
                    Scope::Main,
                    has_status,
                    lists,
                    force,
                )
                .map_err(conflict)?;
                let managed = merged.pointer("/metadata/managedFields").cloned();
                let mut object = prepare_create(state, call, merged)?;
                if let Some(managed) = managed {
                    meta::set_meta(&mut object, "managedFields", managed);
                }
                commit_create(state, call, object).map(|o| Reply::Json(201, o))
            }
        }
    })
}

/// The common end of every write to an existing object. `new` is the
/// client's intended object; `applied` says its managedFields were already
/// computed by server-side apply.
fn finish_write(
    state: &mut State,
    call: &Call,
    old: &Value,
    new: Value,
    applied: bool,
) -> Result<Value, ApiError> {
    let resource = call.resource;
    let mut new = if call.target.status {
        // A status write changes the status and nothing else.
        let mut kept = old.clone();
        match new.get("status") {
            Some(status) => kept["status"] = status.clone(),
            None => {
                if let Some(map) = kept.as_object_mut() {
                    map.remove("status");
                }
            }
        }
        meta::copy_meta(&new, &mut kept, "managedFields");
        kept
    } else {
        let mut new = new;
        if resource.has_status {
            match old.get("status") {
                Some(status) => new["status"] = status.clone(),
                None => {
                    if let Some(map) = new.as_object_mut() {
                        map.remove("status");
                    }
                }
            }
        }
        new
    };
    new["apiVersion"] = Value::String(resource.api_version());
    new["kind"] = Value::String(resource.kind.clone());
    for server_owned in [
        "name",
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "generation",
        "resourceVersion",
    ] {
        meta::copy_meta(old, &mut new, server_owned);
    }
    if !applied {
        meta::copy_meta(old, &mut new, "managedFields");
    }
    let mut new = admit(call, &new, Some(old))?;
    if spec_part(&new, resource.has_status) != spec_part(old, resource.has_status) {
        let generation = old
            .pointer("/metadata/generation")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        meta::set_meta(&mut new, "generation", json!(generation + 1));
    }
    if !applied {
        ownership::record_update(
            Some(old),
            &mut new,
            &call.manager,
            scope(call),
            resource.has_status,
            &resource.list_maps,
        );
    }
    if without_bookkeeping(&new) == without_bookkeeping(old) {
        // As in Kubernetes, a write that changes nothing keeps the resourceVersion
        // and wakes no watch, so controllers that rewrite their status settle.
        return Ok(old.clone());
    }
    if call.query.dry_run() {
        return Ok(new);
    }
    Ok(state.commit(call.target.type_id, new))
}

/// What `metadata.generation` tracks: everything but metadata, and but status
/// when the status is a subresource.
fn spec_part(object: &Value, has_status: bool) -> Value {
    let mut part = object.clone();
    if let Some(map) = part.as_object_mut() {
        map.remove("metadata");
        if has_status {
            map.remove("status");
        }
    }
    part
}

fn without_bookkeeping(object: &Value) -> Value {
    let mut copy = object.clone();
    let metadata = meta::metadata_mut(&mut copy);
    metadata.remove("managedFields");
    metadata.remove("resourceVersion");
    copy
}
