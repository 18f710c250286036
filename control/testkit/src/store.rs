//! The in-memory object store: one table per resource type, one global
//! resourceVersion counter, and a bounded history of change events that
//! watches replay from. Every mutation happens under one mutex so that a
//! read-modify-write (update, patch, apply, delete with cascades) is atomic.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::Value;
use tokio::sync::watch;

use crate::meta;
use crate::registry::{Registry, TypeId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Added => "ADDED",
            Self::Modified => "MODIFIED",
            Self::Deleted => "DELETED",
        }
    }
}

/// One change, as watches replay it. `previous` lets a watch with a selector
/// turn a modification into ADDED or DELETED when the object starts or stops matching.
#[derive(Debug, Clone)]
pub struct Event {
    pub resource_version: u64,
    pub type_id: TypeId,
    pub event_type: EventType,
    pub object: Arc<Value>,
    pub previous: Option<Arc<Value>>,
}

/// `(namespace, name)`; the namespace is "" for cluster-scoped kinds.
pub type ObjectKey = (String, String);

/// How dependents of a removed object are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    /// Delete dependents whose owners are all gone. Foreground deletion is
    /// treated the same way (the owner does not wait for its dependents).
    Background,
    /// Leave dependents, dropping their reference to the removed owner.
    Orphan,
}

pub struct State {
    resource_version: u64,
    tables: Vec<BTreeMap<ObjectKey, Value>>,
    history: VecDeque<Event>,
    history_capacity: usize,
    /// The highest resourceVersion evicted from `history`: a watch from an
    /// older version cannot be served and gets 410 Expired.
    compacted: u64,
    registry: Arc<Registry>,
}

pub struct Store {
    state: Mutex<State>,
    /// Carries the latest resourceVersion so idle watches wake on any change.
    latest: watch::Sender<u64>,
}

impl Store {
    pub fn new(registry: Arc<Registry>, history_capacity: usize) -> Self {
        let tables = vec![BTreeMap::new(); registry.types.len()];
        Self {
            state: Mutex::new(State {
                resource_version: 1,
                tables,
                history: VecDeque::new(),
                history_capacity: history_capacity.max(1),
                compacted: 0,
                registry,
            }),
            latest: watch::channel(1).0,
        }
    }

    /// Runs `change` with exclusive access, then wakes watches if it wrote anything.
    pub fn transact<T>(&self, change: impl FnOnce(&mut State) -> T) -> T {
        let mut state = self.lock();
        let before = state.resource_version;
        let result = change(&mut state);
        let after = state.resource_version;
        drop(state);
        if after != before {
            self.latest.send_replace(after);
        }
        result
    }

    pub fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock can only come from a bug in this
        // crate; the state is still consistent enough for a test server.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }
}

impl State {
    pub fn resource_version(&self) -> u64 {
        self.resource_version
    }

    pub fn compacted(&self) -> u64 {
        self.compacted
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn get(&self, type_id: TypeId, namespace: &str, name: &str) -> Option<&Value> {
        self.tables[type_id].get(&(namespace.to_owned(), name.to_owned()))
    }

    /// Objects of a type, in one namespace or (with `None`) all of them.
    pub fn list<'a>(
        &'a self,
        type_id: TypeId,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Value> + 'a {
        self.tables[type_id]
            .iter()
            .filter(move |((ns, _), _)| namespace.is_none_or(|wanted| wanted == ns))
            .map(|(_, object)| object)
    }

    /// Events after `resource_version`, oldest first.
    pub fn events_after(&self, resource_version: u64) -> impl Iterator<Item = &Event> {
        let start = self
            .history
            .partition_point(|e| e.resource_version <= resource_version);
        self.history.range(start..)
    }

    fn next_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, event: Event) {
        if self.history.len() >= self.history_capacity {
            if let Some(evicted) = self.history.pop_front() {
                self.compacted = evicted.resource_version;
            }
        }
        self.history.push_back(event);
    }

    /// Stores `object` under a new resourceVersion (ADDED or MODIFIED), or
    /// removes it when it is being deleted and no finalizer is left.
    pub fn commit(&mut self, type_id: TypeId, mut object: Value) -> Value {
        if meta::is_deleting(&object) && !meta::has_finalizers(&object) {
            return self.remove(type_id, object, Propagation::Background);
        }
        let rv = self.next_version();
        meta::set_meta(
            &mut object,
            "resourceVersion",
            Value::String(rv.to_string()),
        );
        let key = key_of(&object);
        let previous = self.tables[type_id].insert(key, object.clone());
        let stored = Arc::new(object.clone());
        self.record(Event {
            resource_version: rv,
            type_id,
            event_type: if previous.is_some() {
                EventType::Modified
            } else {
                EventType::Added
            },
            object: stored,
            previous: previous.map(Arc::new),
        });
        if !meta::is_deleting(&object) && self.all_owners_absent(&object) {
            // The garbage collector deletes a dependent whose owners are all
            // gone, also one written after they went (or that names owners
            // that never existed here): soon after the write, here at once.
            tracing::debug!(
                kind = %self.registry.get(type_id).kind,
                namespace = meta::namespace(&object),
                name = meta::name(&object),
                owners = ?meta::owner_uids(&object),
                "garbage-collecting an object written with no live owner"
            );
            if let Some(removed) = self.delete(type_id, object.clone()) {
                self.cascade(removed, Propagation::Background);
            }
        }
        object
    }

    /// Whether `object` has owner references and none of them resolves to a
    /// live object, as the garbage collector resolves them: by group and
    /// kind, a namespaced owner in the dependent's own namespace (a
    /// cluster-scoped dependent cannot have one), and the same uid. An
    /// owner of a kind this server does not serve is assumed live.
    fn all_owners_absent(&self, object: &Value) -> bool {
        let Some(owners) = object
            .pointer("/metadata/ownerReferences")
            .and_then(Value::as_array)
            .filter(|refs| !refs.is_empty())
        else {
            return false;
        };
        let namespace = meta::namespace(object);
        owners.iter().all(|owner| {
            let text = |key: &str| owner.get(key).and_then(Value::as_str).unwrap_or_default();
            let group = text("apiVersion")
                .rsplit_once('/')
                .map(|(group, _)| group)
                .unwrap_or("");
            let Some(owner_type) = self
                .registry
                .types
                .iter()
                .position(|t| t.group == group && t.kind == text("kind"))
            else {
                return false;
            };
            let owner_namespace = if self.registry.get(owner_type).namespaced {
                if namespace.is_empty() {
                    return true;
                }
                namespace
            } else {
                ""
            };
            self.get(owner_type, owner_namespace, text("name"))
                .is_none_or(|live| meta::uid(live) != text("uid"))
        })
    }

    /// Removes an object for good, then lets the cascades it starts run:
    /// dependents whose owners are all gone, and a terminating namespace that
    /// became empty. Returns the removed object with its final resourceVersion.
    pub fn remove(&mut self, type_id: TypeId, object: Value, propagation: Propagation) -> Value {
        let removed = self.remove_one(type_id, &object);
        self.cascade(removed.clone(), propagation);
        removed
    }

    /// Runs what the removal of `gone` sets off, transitively: its dependents
    /// (owner-reference garbage collection) and, if it was the last object of
    /// a terminating namespace, that namespace.
    fn cascade(&mut self, gone: Value, propagation: Propagation) {
        let mut pending = vec![(gone, propagation)];
        while let Some((gone, propagation)) = pending.pop() {
            let namespace = meta::namespace(&gone).to_owned();
            if !namespace.is_empty() {
                if let Some(removed) = self.finish_namespace_if_empty(&namespace) {
                    pending.push((removed, Propagation::Background));
                }
            }
            let gone_uid = meta::uid(&gone).to_owned();
            if gone_uid.is_empty() {
                continue;
            }
            match propagation {
                Propagation::Orphan => self.drop_owner_reference(&gone_uid),
                Propagation::Background => {
                    for (dependent_type, dependent) in self.orphaned_dependents(&gone_uid) {
                        if let Some(removed) = self.delete(dependent_type, dependent) {
                            pending.push((removed, Propagation::Background));
                        }
                    }
                }
            }
        }
    }

    fn remove_one(&mut self, type_id: TypeId, object: &Value) -> Value {
        let key = key_of(object);
        let mut removed = self.tables[type_id]
            .remove(&key)
            .unwrap_or_else(|| object.clone());
        let rv = self.next_version();
        meta::set_meta(
            &mut removed,
            "resourceVersion",
            Value::String(rv.to_string()),
        );
        self.record(Event {
            resource_version: rv,
            type_id,
            event_type: EventType::Deleted,
            object: Arc::new(removed.clone()),
            previous: None,
        });
        removed
    }

    /// Starts deleting `object` as a client's DELETE does: with finalizers it
    /// only gets a deletionTimestamp (returns `None`), without it is removed
    /// (returns the removed object; cascades are the caller's job).
    fn delete(&mut self, type_id: TypeId, mut object: Value) -> Option<Value> {
        if meta::has_finalizers(&object) {
            if !meta::is_deleting(&object) {
                meta::set_meta(&mut object, "deletionTimestamp", Value::String(meta::now()));
                self.commit(type_id, object);
            }
            return None;
        }
        Some(self.remove_one(type_id, &object))
    }

    /// A client's DELETE of a stored object, with every cascade it starts.
    pub fn delete_with_cascade(
        &mut self,
        type_id: TypeId,
        object: Value,
        propagation: Propagation,
    ) -> Value {
        let is_namespace = self.registry.get(type_id).is_namespace();
        if is_namespace {
            return self.delete_namespace(type_id, object);
        }
        if meta::has_finalizers(&object) {
            if meta::is_deleting(&object) {
                return object;
            }
            let mut deleting = object;
            meta::set_meta(
                &mut deleting,
                "deletionTimestamp",
                Value::String(meta::now()),
            );
            return self.commit(type_id, deleting);
        }
        self.remove(type_id, object, propagation)
    }

    /// Marks the namespace Terminating, deletes everything in it, and removes
    /// it once it is empty and has no finalizers (possibly right away).
    fn delete_namespace(&mut self, type_id: TypeId, mut namespace: Value) -> Value {
        let name = meta::name(&namespace).to_owned();
        if !meta::is_deleting(&namespace) {
            meta::set_meta(
                &mut namespace,
                "deletionTimestamp",
                Value::String(meta::now()),
            );
            namespace["status"] = serde_json::json!({"phase": "Terminating"});
            namespace = self.commit_keeping_deleting(type_id, namespace);
        }
        let namespaced: Vec<TypeId> = (0..self.tables.len())
            .filter(|&t| self.registry.get(t).namespaced)
            .collect();
        for content_type in namespaced {
            let contents: Vec<Value> = self.list(content_type, Some(&name)).cloned().collect();
            for object in contents {
                if let Some(removed) = self.delete(content_type, object) {
                    self.cascade(removed, Propagation::Background);
                }
            }
        }
        let ns_type = self.registry.namespace_type();
        if let Some(removed) = self.finish_namespace_if_empty(&name) {
            return removed;
        }
        self.get(ns_type, "", &name).cloned().unwrap_or(namespace)
    }

    /// Like `commit`, but never removes: a namespace waits for its contents.
    fn commit_keeping_deleting(&mut self, type_id: TypeId, mut object: Value) -> Value {
        let rv = self.next_version();
        meta::set_meta(
            &mut object,
            "resourceVersion",
            Value::String(rv.to_string()),
        );
        let previous = self.tables[type_id].insert(key_of(&object), object.clone());
        self.record(Event {
            resource_version: rv,
            type_id,
            event_type: EventType::Modified,
            object: Arc::new(object.clone()),
            previous: previous.map(Arc::new),
        });
        object
    }

    /// Removes a terminating namespace with no contents and no finalizers.
    fn finish_namespace_if_empty(&mut self, name: &str) -> Option<Value> {
        let ns_type = self.registry.namespace_type();
        let namespace = self.get(ns_type, "", name)?;
        if !meta::is_deleting(namespace) || meta::has_finalizers(namespace) {
            return None;
        }
        let empty = (0..self.tables.len())
            .filter(|&t| self.registry.get(t).namespaced)
            .all(|t| self.list(t, Some(name)).next().is_none());
        if !empty {
            return None;
        }
        let namespace = namespace.clone();
        Some(self.remove_one(ns_type, &namespace))
    }

    /// Objects that name `owner_uid` as an owner and have no other owner left.
    fn orphaned_dependents(&self, owner_uid: &str) -> Vec<(TypeId, Value)> {
        let live: HashSet<&str> = self
            .tables
            .iter()
            .flat_map(|t| t.values())
            .map(meta::uid)
            .collect();
        let mut dependents = Vec::new();
        for (type_id, table) in self.tables.iter().enumerate() {
            for object in table.values() {
                let owners = meta::owner_uids(object);
                if owners.iter().any(|o| o == owner_uid)
                    && owners.iter().all(|o| !live.contains(o.as_str()))
                {
                    dependents.push((type_id, object.clone()));
                }
            }
        }
        dependents
    }

    fn drop_owner_reference(&mut self, owner_uid: &str) {
        let mut orphans = Vec::new();
        for (type_id, table) in self.tables.iter().enumerate() {
            for object in table.values() {
                if meta::owner_uids(object).iter().any(|o| o == owner_uid) {
                    orphans.push((type_id, object.clone()));
                }
            }
        }
        for (type_id, mut object) in orphans {
            if let Some(refs) = object
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner_uid));
            }
            self.commit(type_id, object);
        }
    }

    /// Seeds an object at startup (default namespaces, CRDs) without an event.
    pub fn seed(&mut self, type_id: TypeId, mut object: Value) {
        let rv = self.next_version();
        meta::set_meta(
            &mut object,
            "resourceVersion",
            Value::String(rv.to_string()),
        );
        self.tables[type_id].insert(key_of(&object), object);
    }
}

fn key_of(object: &Value) -> ObjectKey {
    (
        meta::namespace(object).to_owned(),
        meta::name(object).to_owned(),
    )
}
