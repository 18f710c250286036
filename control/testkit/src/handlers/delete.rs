//! delete and deletecollection.

use serde_json::{json, Value};

use super::{Call, Reply};
use crate::error::ApiError;
use crate::meta;
use crate::store::{Propagation, Store};

/// The parts of `DeleteOptions` the server honours.
struct DeleteOptions {
    propagation: Propagation,
    uid: Option<String>,
    resource_version: Option<String>,
    dry_run: bool,
}

fn options(call: &Call) -> Result<DeleteOptions, ApiError> {
    let body: Value = if call.body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(call.body).map_err(|e| {
            ApiError::bad_request(format!("the DeleteOptions are not valid JSON: {e}"))
        })?
    };
    let policy = body
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .or_else(|| call.query.get("propagationPolicy"))
        .unwrap_or("Background");
    let propagation = match policy {
        "Orphan" => Propagation::Orphan,
        "Background" | "Foreground" => Propagation::Background,
        other => {
            return Err(ApiError::bad_request(format!(
                "propagationPolicy {other:?} is not one of Orphan, Background, Foreground"
            )))
        }
    };
    let precondition = |key: &str| {
        body.pointer(&format!("/preconditions/{key}"))
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    // kube-rs and kubectl send dryRun in the DeleteOptions body, others in the query.
    let dry_run_in_body = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|modes| modes.iter().any(|m| m == "All"));
    Ok(DeleteOptions {
        dry_run: dry_run_in_body || call.query.dry_run(),
        propagation,
        uid: precondition("uid"),
        resource_version: precondition("resourceVersion"),
    })
}

/// Returns the object: with a deletionTimestamp while finalizers hold it, or
/// as it was removed.
pub fn delete(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    if call.target.status {
        return Err(ApiError::method_not_allowed(
            "DELETE",
            "a status subresource",
        ));
    }
    let options = options(call)?;
    store.transact(|state| {
        let object = state
            .get(call.target.type_id, call.namespace(), call.name())
            .cloned()
            .ok_or_else(|| call.not_found(call.name()))?;
        let uid_mismatch = options
            .uid
            .as_deref()
            .is_some_and(|u| u != meta::uid(&object));
        let rv_mismatch = options
            .resource_version
            .as_deref()
            .is_some_and(|rv| rv != meta::resource_version(&object));
        if uid_mismatch || rv_mismatch {
            return Err(call.stale());
        }
        if options.dry_run {
            return Ok(Reply::Json(200, object));
        }
        let result = state.delete_with_cascade(call.target.type_id, object, options.propagation);
        Ok(Reply::Json(200, result))
    })
}

pub fn delete_collection(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    let options = options(call)?;
    let selectors = call.query.selectors()?;
    store.transact(|state| {
        let chosen: Vec<Value> = state
            .list(call.target.type_id, call.target.namespace.as_deref())
            .filter(|o| selectors.matches(o))
            .cloned()
            .collect();
        let mut items = Vec::new();
        for object in chosen {
            // An earlier deletion's cascade may have removed it already.
            let current = state
                .get(
                    call.target.type_id,
                    meta::namespace(&object),
                    meta::name(&object),
                )
                .cloned();
            let Some(object) = current else {
                continue;
            };
            if options.dry_run {
                items.push(object);
            } else {
                items.push(state.delete_with_cascade(
                    call.target.type_id,
                    object,
                    options.propagation,
                ));
            }
        }
        Ok(Reply::Json(
            200,
            json!({
                "kind": format!("{}List", call.resource.kind),
                "apiVersion": call.resource.api_version(),
                "metadata": {"resourceVersion": state.resource_version().to_string()},
                "items": items,
            }),
        ))
    })
}
