//! get, list and watch.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch as signal;

use super::{Call, Reply};
use crate::error::ApiError;
use crate::store::Store;
use crate::table;
use crate::watch::{self, Start, WatchRequest};

pub fn get(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    let state = store.lock();
    let object = state
        .get(call.target.type_id, call.namespace(), call.name())
        .ok_or_else(|| call.not_found(call.name()))?;
    if table::wanted(call.accept) {
        let rendered = table::render(
            call.resource,
            std::slice::from_ref(object),
            state.resource_version(),
        );
        return Ok(Reply::Json(200, rendered));
    }
    Ok(Reply::Json(200, object.clone()))
}

/// The whole selection in one page: `limit` is ignored and no `continue` token
/// is ever returned, which clients (kube-rs' pager, kubectl) accept.
pub fn list(store: &Store, call: &Call) -> Result<Reply, ApiError> {
    let selectors = call.query.selectors()?;
    let state = store.lock();
    let items: Vec<Value> = state
        .list(call.target.type_id, call.target.namespace.as_deref())
        .filter(|o| selectors.matches(o))
        .cloned()
        .collect();
    if table::wanted(call.accept) {
        let rendered = table::render(call.resource, &items, state.resource_version());
        return Ok(Reply::Json(200, rendered));
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
}

pub fn watch(
    store: &Arc<Store>,
    call: &Call,
    shutdown: signal::Receiver<bool>,
) -> Result<Reply, ApiError> {
    let query = call.query;
    let requested = query.get("resourceVersion").unwrap_or("");
    let start = match (requested, query.flag("sendInitialEvents")) {
        (_, Some(true)) => Start::CurrentState { end_bookmark: true },
        ("" | "0", Some(false)) => Start::After(store.lock().resource_version()),
        ("" | "0", None) => Start::CurrentState {
            end_bookmark: false,
        },
        (rv, _) => Start::After(rv.parse().map_err(|_| {
            ApiError::bad_request(format!("resourceVersion {rv:?} is not a resource version"))
        })?),
    };
    let timeout = match query.get("timeoutSeconds") {
        Some(seconds) => Some(Duration::from_secs(seconds.parse().map_err(|_| {
            ApiError::bad_request(format!("timeoutSeconds {seconds:?} is not a number"))
        })?)),
        None => None,
    };
    let request = WatchRequest {
        type_id: call.target.type_id,
        resource: call.resource.clone(),
        namespace: call.target.namespace.clone(),
        selectors: query.selectors()?,
        start,
        bookmarks: query.flag("allowWatchBookmarks").unwrap_or(false),
        timeout,
    };
    Ok(Reply::Watch(watch::spawn(store.clone(), request, shutdown)))
}
