//! Watch streams: newline-delimited `{"type": ..., "object": ...}` events
//! over a chunked response, with the API server's resourceVersion semantics.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Frame;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::error::ApiError;
use crate::registry::{ResourceType, TypeId};
use crate::selectors::Selectors;
use crate::store::{EventType, Store};

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// resourceVersion absent or "0": ADDED for every current object first;
    /// with `sendInitialEvents=true` a bookmark marks the end of that state.
    CurrentState { end_bookmark: bool },
    /// Every change after this resourceVersion (410 Expired if no longer in the history).
    After(u64),
}

#[derive(Debug, Clone)]
pub struct WatchRequest {
    pub type_id: TypeId,
    pub resource: ResourceType,
    pub namespace: Option<String>,
    pub selectors: Selectors,
    pub start: Start,
    pub bookmarks: bool,
    pub timeout: Option<Duration>,
}

pub type Chunk = Result<Frame<Bytes>, Infallible>;

/// How often an idle watch that allows bookmarks gets one.
const BOOKMARK_INTERVAL: Duration = Duration::from_secs(1);

/// Starts the task that feeds one watch; it ends when the client goes away,
/// the timeout passes, the server shuts down, or the watch expires.
pub fn spawn(
    store: Arc<Store>,
    request: WatchRequest,
    shutdown: watch::Receiver<bool>,
) -> mpsc::Receiver<Chunk> {
    let (sender, receiver) = mpsc::channel(64);
    tokio::spawn(async move {
        let outcome = run(&store, &request, &sender, shutdown).await;
        tracing::debug!(resource = %request.resource.group_resource(), ?outcome, "watch ended");
    });
    receiver
}

#[derive(Debug)]
enum Ended {
    ClientGone,
    TimedOut,
    Shutdown,
    Expired,
}

async fn run(
    store: &Store,
    request: &WatchRequest,
    sender: &mpsc::Sender<Chunk>,
    mut shutdown: watch::Receiver<bool>,
) -> Ended {
    let deadline = request.timeout.map(|t| Instant::now() + t);
    let mut changes = store.subscribe();
    changes.borrow_and_update();
    let namespace = request.namespace.as_deref();

    let mut seen = match request.start {
        Start::CurrentState { end_bookmark } => {
            let (objects, rv) = {
                let state = store.lock();
                let objects: Vec<Value> = state
                    .list(request.type_id, namespace)
                    .filter(|o| request.selectors.matches(o))
                    .cloned()
                    .collect();
                (objects, state.resource_version())
            };
            for object in objects {
                if send(sender, "ADDED", &object).await.is_err() {
                    return Ended::ClientGone;
                }
            }
            if end_bookmark && send_bookmark(sender, request, rv, true).await.is_err() {
                return Ended::ClientGone;
            }
            rv
        }
        Start::After(rv) => rv,
    };

    let mut bookmark_timer = tokio::time::interval(BOOKMARK_INTERVAL);
    bookmark_timer.tick().await;
    loop {
        let batch = {
            let state = store.lock();
            if seen < state.compacted() {
                None
            } else {
                let events: Vec<(EventType, Arc<Value>, Option<Arc<Value>>)> = state
                    .events_after(seen)
                    .filter(|e| e.type_id == request.type_id)
                    .map(|e| (e.event_type, e.object.clone(), e.previous.clone()))
                    .collect();
                Some((events, state.resource_version()))
            }
        };
        let Some((events, latest)) = batch else {
            let status = ApiError::expired(format!(
                "too old resource version: {seen} (the watch history no longer holds it)"
            ))
            .to_status();
            let _ = send(sender, "ERROR", &status).await;
            return Ended::Expired;
        };
        for (event_type, object, previous) in events {
            let Some(visible) = visible_as(request, event_type, &object, previous.as_deref())
            else {
                continue;
            };
            if send(sender, visible, &object).await.is_err() {
                return Ended::ClientGone;
            }
        }
        seen = latest;

        let expiry = async {
            match deadline {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ended::Shutdown;
                }
                changes.borrow_and_update();
            }
            _ = sender.closed() => return Ended::ClientGone,
            _ = shutdown.changed() => return Ended::Shutdown,
            _ = expiry => return Ended::TimedOut,
            _ = bookmark_timer.tick(), if request.bookmarks => {
                if send_bookmark(sender, request, seen, false).await.is_err() {
                    return Ended::ClientGone;
                }
            }
        }
    }
}

/// What a watcher filtered by namespace and selectors sees of an event: a
/// modification becomes ADDED or DELETED when the object enters or leaves
/// the selection, and is hidden when it was never in it.
fn visible_as(
    request: &WatchRequest,
    event_type: EventType,
    object: &Value,
    previous: Option<&Value>,
) -> Option<&'static str> {
    let in_scope = |o: &Value| {
        request
            .namespace
            .as_deref()
            .is_none_or(|ns| crate::meta::namespace(o) == ns)
            && request.selectors.matches(o)
    };
    let now = in_scope(object);
    match event_type {
        EventType::Modified => match (previous.map(in_scope).unwrap_or(false), now) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        other => now.then_some(other.as_str()),
    }
}

async fn send(sender: &mpsc::Sender<Chunk>, event_type: &str, object: &Value) -> Result<(), ()> {
    let mut line =
        serde_json::to_vec(&json!({"type": event_type, "object": object})).map_err(|_| ())?;
    line.push(b'\n');
    sender
        .send(Ok(Frame::data(Bytes::from(line))))
        .await
        .map_err(|_| ())
}

async fn send_bookmark(
    sender: &mpsc::Sender<Chunk>,
    request: &WatchRequest,
    resource_version: u64,
    initial_events_end: bool,
) -> Result<(), ()> {
    let mut metadata = json!({"resourceVersion": resource_version.to_string()});
    if initial_events_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    let bookmark = json!({
        "apiVersion": request.resource.api_version(),
        "kind": request.resource.kind,
        "metadata": metadata,
    });
    send(sender, "BOOKMARK", &bookmark).await
}
