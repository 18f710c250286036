//! Conformance of the test server to the Kubernetes API semantics that
//! controllers and clients rely on. Each test breaks when its semantic does.

mod common;

use std::collections::BTreeSet;

use common::{api_error, raw, watch_events, within};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use strait_testkit::{Options, TestCluster};

fn config_map(name: &str, labels: Value) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"},
    }))
    .expect("a ConfigMap")
}

async fn cluster(name: &str) -> TestCluster {
    within("start", TestCluster::start(name))
        .await
        .expect("cluster starts")
}

#[tokio::test]
async fn create_fills_server_fields_and_requires_the_namespace() {
    let cluster = cluster("create").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let generated: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "gen-"}})).expect("a ConfigMap");
    let created = within("create", api.create(&PostParams::default(), &generated))
        .await
        .expect("created");
    let meta = &created.metadata;
    let name = meta.name.as_deref().expect("a generated name");
    assert!(name.starts_with("gen-") && name.len() > 4, "{name}");
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert!(meta
        .resource_version
        .as_deref()
        .is_some_and(|rv| rv.parse::<u64>().is_ok()));

    let again = api_error(
        api.create(&PostParams::default(), &config_map(name, json!({})))
            .await,
    );
    assert_eq!((again.code, again.reason.as_str()), (409, "AlreadyExists"));

    let missing: Api<ConfigMap> = Api::namespaced(cluster.client(), "no-such-namespace");
    let refused = api_error(
        missing
            .create(&PostParams::default(), &config_map("a", json!({})))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn stale_update_is_a_conflict() {
    let cluster = cluster("stale").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let first = api
        .create(&PostParams::default(), &config_map("cm", json!({})))
        .await
        .expect("created");
    let mut fresh = first.clone();
    fresh.data = Some([("k".to_owned(), "new".to_owned())].into());
    let updated = api
        .replace("cm", &PostParams::default(), &fresh)
        .await
        .expect("fresh update");
    assert_ne!(
        updated.metadata.resource_version,
        first.metadata.resource_version
    );

    let mut stale = first.clone();
    stale.data = Some([("k".to_owned(), "lost".to_owned())].into());
    let conflict = api_error(api.replace("cm", &PostParams::default(), &stale).await);
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    let stored = api.get("cm").await.expect("stored");
    assert_eq!(stored.data.expect("data")["k"], "new");

    // A merge patch carrying a stale resourceVersion is refused too.
    let patch = json!({"metadata": {"resourceVersion": first.metadata.resource_version}, "data": {"k": "x"}});
    let conflict = api_error(
        api.patch("cm", &PatchParams::default(), &Patch::Merge(&patch))
            .await,
    );
    assert_eq!(conflict.code, 409);
}

fn foreign_cluster(name: &str, network: bool) -> Value {
    json!({
        "apiVersion": "core.strait.dev/v1beta1",
        "kind": "ForeignCluster",
        "metadata": {"name": name},
        "spec": {"clusterID": name, "modules": {"network": network, "authentication": false, "offloading": false}},
    })
}

#[tokio::test]
async fn status_subresource_is_separate_and_generation_tracks_spec() {
    use strait_api::core::ForeignCluster;
    let cluster = cluster("generation").await;
    let api: Api<ForeignCluster> = Api::all(cluster.client());
    let mut with_status = foreign_cluster("peer", true);
    with_status["status"] = json!({"role": "Provider"});
    let object: ForeignCluster = serde_json::from_value(with_status).expect("a ForeignCluster");
    let created = api
        .create(&PostParams::default(), &object)
        .await
        .expect("created");
    assert!(created.status.is_none(), "create must drop the status");

    let status = json!({"status": {"role": "Consumer"}});
    let after_status = api
        .patch_status("peer", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("status written");
    assert_eq!(
        after_status.metadata.generation,
        Some(1),
        "a status write must not bump generation"
    );
    assert!(after_status.spec.modules.network);

    // A main-resource write cannot change the status, and its spec change bumps generation.
    let both = json!({"spec": {"modules": {"network": false}}, "status": {"role": "Provider"}});
    let after_spec = api
        .patch("peer", &PatchParams::default(), &Patch::Merge(&both))
        .await
        .expect("spec written");
    assert_eq!(after_spec.metadata.generation, Some(2));
    assert_eq!(
        serde_json::to_value(&after_spec.status).expect("json")["role"],
        "Consumer"
    );

    // A status write cannot change the spec.
    let sneaky = json!({"spec": {"modules": {"network": true}}, "status": {"role": "Unknown"}});
    let after = api
        .patch_status("peer", &PatchParams::default(), &Patch::Merge(&sneaky))
        .await
        .expect("ok");
    assert!(!after.spec.modules.network);
    assert_eq!(after.metadata.generation, Some(2));

    // Labels are metadata: no generation bump; an identical write keeps the resourceVersion.
    let labels = json!({"metadata": {"labels": {"a": "b"}}});
    let labelled = api
        .patch("peer", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("ok");
    assert_eq!(labelled.metadata.generation, Some(2));
    let again = api
        .patch("peer", &PatchParams::default(), &Patch::Merge(&labels))
        .await
        .expect("ok");
    assert_eq!(
        again.metadata.resource_version,
        labelled.metadata.resource_version
    );
}

#[tokio::test]
async fn finalizers_block_removal_until_cleared() {
    let cluster = cluster("finalizers").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let mut held = config_map("held", json!({}));
    held.metadata.finalizers = Some(vec!["strait.dev/test".to_owned()]);
    api.create(&PostParams::default(), &held)
        .await
        .expect("created");
    api.delete("held", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let pending = api.get("held").await.expect("still there while finalized");
    assert!(pending.metadata.deletion_timestamp.is_some());

    let clear = json!({"metadata": {"finalizers": null}});
    api.patch("held", &PatchParams::default(), &Patch::Merge(&clear))
        .await
        .expect("cleared");
    let gone = api_error(api.get("held").await);
    assert_eq!((gone.code, gone.reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn label_and_field_selectors() {
    let cluster = cluster("selectors").await;
    let client = cluster.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let other: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "other"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &other)
        .await
        .expect("namespace");
    let default: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (name, labels) in [
        ("web", json!({"app": "web", "tier": "front"})),
        ("db", json!({"app": "db", "tier": "back"})),
        ("bare", json!({})),
    ] {
        default
            .create(&PostParams::default(), &config_map(name, labels))
            .await
            .expect("created");
    }
    Api::<ConfigMap>::namespaced(client.clone(), "other")
        .create(
            &PostParams::default(),
            &config_map("web", json!({"app": "web"})),
        )
        .await
        .expect("created");

    let cases: [(&str, &str, &[&str]); 10] = [
        ("app=web", "", &["default/web", "other/web"]),
        ("app!=web", "", &["default/bare", "default/db"]),
        (
            "app in (web,db)",
            "",
            &["default/db", "default/web", "other/web"],
        ),
        ("app notin (web)", "", &["default/bare", "default/db"]),
        ("tier", "", &["default/db", "default/web"]),
        ("!tier", "", &["default/bare", "other/web"]),
        ("app=web,tier=front", "", &["default/web"]),
        ("", "metadata.name=web", &["default/web", "other/web"]),
        ("", "metadata.namespace=other", &["other/web"]),
        ("app=web", "metadata.namespace!=other", &["default/web"]),
    ];
    let all: Api<ConfigMap> = Api::all(client);
    for (labels, fields, expected) in cases {
        let params = ListParams::default().labels(labels).fields(fields);
        let listed: BTreeSet<String> = all
            .list(&params)
            .await
            .expect("listed")
            .items
            .iter()
            .map(|c| {
                format!(
                    "{}/{}",
                    c.metadata.namespace.as_deref().unwrap_or(""),
                    c.metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect();
        let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(listed, expected, "labels {labels:?} fields {fields:?}");
    }
    let bad = api_error(all.list(&ListParams::default().labels("app in web")).await);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
}

#[tokio::test]
async fn watch_resumes_from_a_resource_version_and_expires_when_too_old() {
    let cluster = within(
        "start",
        TestCluster::start_with(
            "watch",
            Options {
                watch_history: 5,
                ..Options::default()
            },
        ),
    )
    .await
    .expect("started");
    let client = cluster.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let created = api
        .create(&PostParams::default(), &config_map("w", json!({})))
        .await
        .expect("created");
    let start = created.metadata.resource_version.expect("rv");
    for value in ["1", "2", "3"] {
        let patch = json!({"data": {"k": value}});
        api.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patched");
    }
    let path = format!(
        "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=1&resourceVersion={start}"
    );
    let events = watch_events(&client, &path).await;
    let seen: Vec<(String, String)> = events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap_or("").to_owned(),
                e["object"]["data"]["k"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(String, String)> = ["1", "2", "3"]
        .iter()
        .map(|v| ("MODIFIED".to_owned(), (*v).to_owned()))
        .collect();
    assert_eq!(
        seen, expected,
        "exactly the changes after {start}, in order"
    );

    // Without a resourceVersion a watch starts with the current state.
    let initial = watch_events(
        &client,
        "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=1",
    )
    .await;
    assert_eq!(initial.len(), 1);
    assert_eq!(
        (
            initial[0]["type"].as_str(),
            initial[0]["object"]["data"]["k"].as_str()
        ),
        (Some("ADDED"), Some("3"))
    );

    for value in 4..12 {
        let patch = json!({"data": {"k": value.to_string()}});
        api.patch("w", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patched");
    }
    let expired = watch_events(&client, &path).await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(expired[0]["type"], "ERROR");
    assert_eq!(expired[0]["object"]["code"], 410);
    assert_eq!(expired[0]["object"]["reason"], "Expired");
}

#[tokio::test]
async fn watch_streaming_list_ends_initial_events_with_a_bookmark() {
    let cluster = cluster("bookmarks").await;
    let client = cluster.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .expect("created");
    let path = "/api/v1/namespaces/default/configmaps?watch=true&timeoutSeconds=2&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true";
    let events = watch_events(&client, path).await;
    assert_eq!(events[0]["type"], "ADDED");
    assert_eq!(events[1]["type"], "BOOKMARK");
    assert_eq!(
        events[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    assert!(
        events.len() >= 3,
        "an idle watch with bookmarks allowed gets periodic bookmarks: {events:?}"
    );
}

#[tokio::test]
async fn patch_types_and_malformed_requests() {
    let cluster = cluster("patches").await;
    let client = cluster.client();
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &config_map("p", json!({})))
        .await
        .expect("created");
    let merged = api
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": null, "m": "1"}})),
        )
        .await
        .expect("merge patch");
    assert_eq!(
        merged.data.expect("data"),
        [("m".to_owned(), "1".to_owned())].into()
    );
    let ops: json_patch::Patch =
        serde_json::from_value(json!([{"op": "add", "path": "/data/n", "value": "2"}]))
            .expect("ops");
    let patched = api
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .expect("json patch");
    assert_eq!(patched.data.expect("data").len(), 2);

    let path = "/api/v1/namespaces/default/configmaps";
    /// method, path, content type, body, expected code and reason.
    type Case<'a> = (&'a str, &'a str, &'a str, &'a [u8], u16, &'a str);
    let item = "/api/v1/namespaces/default/configmaps/p";
    let cases: [Case; 14] = [
        (
            "POST",
            path,
            "application/json",
            br#"{"metadata": 5}"#,
            422,
            "Invalid",
        ),
        (
            "POST",
            path,
            "application/json",
            br#"{"kind": "Secret", "metadata": {"name": "s"}}"#,
            400,
            "BadRequest",
        ),
        (
            "PUT",
            item,
            "application/json",
            br#"{"metadata": {"name": "other"}}"#,
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            item,
            "application/apply-patch+yaml",
            b"data: [unclosed",
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            item,
            "application/merge-patch+json",
            b"[]",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=abc",
            "",
            b"",
            400,
            "BadRequest",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/configmaps?watch=1&timeoutSeconds=-1",
            "",
            b"",
            400,
            "BadRequest",
        ),
        (
            "DELETE",
            item,
            "application/json",
            b"{oops",
            400,
            "BadRequest",
        ),
        (
            "POST",
            path,
            "application/json",
            b"{not json",
            400,
            "BadRequest",
        ),
        (
            "POST",
            path,
            "application/json",
            b"[1, 2]",
            400,
            "BadRequest",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/p",
            "text/plain",
            b"{}",
            415,
            "UnsupportedMediaType",
        ),
        (
            "PATCH",
            "/api/v1/namespaces/default/configmaps/p",
            "application/json-patch+json",
            b"[{\"op\":\"test\",\"path\":\"/data/m\",\"value\":\"9\"}]",
            422,
            "Invalid",
        ),
        (
            "GET",
            "/api/v1/namespaces/default/widgets",
            "",
            b"",
            404,
            "NotFound",
        ),
        (
            "PUT",
            path,
            "application/json",
            b"{}",
            405,
            "MethodNotAllowed",
        ),
    ];
    for (method, path, content_type, body, code, reason) in cases {
        let (got, status) = raw(&client, method, path, content_type, body).await;
        assert_eq!(
            (got, status["kind"].as_str(), status["reason"].as_str()),
            (code, Some("Status"), Some(reason)),
            "{method} {path}"
        );
    }
}

#[tokio::test]
async fn server_side_apply_by_two_field_managers() {
    let cluster = cluster("apply").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let config = |data: Value| json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": data});
    let alpha = PatchParams::apply("alpha");
    let beta = PatchParams::apply("beta");
    api.patch(
        "ssa",
        &alpha,
        &Patch::Apply(config(json!({"a": "1", "x": "1"}))),
    )
    .await
    .expect("alpha creates");

    let conflict = api_error(
        api.patch("ssa", &beta, &Patch::Apply(config(json!({"a": "2"}))))
            .await,
    );
    assert_eq!((conflict.code, conflict.reason.as_str()), (409, "Conflict"));
    assert!(
        conflict.message.contains("alpha") && conflict.message.contains(".data.a"),
        "{}",
        conflict.message
    );

    let shared = api
        .patch("ssa", &beta, &Patch::Apply(config(json!({"b": "1"}))))
        .await
        .expect("beta adds its field");
    assert_eq!(shared.data.clone().expect("data").len(), 3);
    let managers: BTreeSet<String> = shared
        .metadata
        .managed_fields
        .unwrap_or_default()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["alpha".to_owned(), "beta".to_owned()].into());

    api.patch(
        "ssa",
        &beta.clone().force(),
        &Patch::Apply(config(json!({"a": "2", "b": "1"}))),
    )
    .await
    .expect("forced");
    // alpha drops both fields: "x" is removed, "a" now belongs to beta and stays.
    let after = api
        .patch("ssa", &alpha, &Patch::Apply(config(json!({}))))
        .await
        .expect("alpha shrinks");
    let data = after.data.expect("data");
    assert_eq!(data.get("a").map(String::as_str), Some("2"));
    assert_eq!(data.get("b").map(String::as_str), Some("1"));
    assert!(!data.contains_key("x"), "{data:?}");

    let missing_manager = raw(
        &cluster.client(),
        "PATCH",
        "/api/v1/namespaces/default/configmaps/ssa",
        "application/apply-patch+yaml",
        b"data: {}",
    )
    .await;
    assert_eq!(missing_manager.0, 400);
}

#[tokio::test]
async fn namespace_deletion_cascades_and_waits_for_finalizers() {
    let cluster = cluster("namespaces").await;
    let client = cluster.client();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns");
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    api.create(&PostParams::default(), &config_map("plain", json!({})))
        .await
        .expect("created");
    let mut held = config_map("held", json!({}));
    held.metadata.finalizers = Some(vec!["strait.dev/test".to_owned()]);
    api.create(&PostParams::default(), &held)
        .await
        .expect("created");

    namespaces
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete accepted");
    assert_eq!(api_error(api.get("plain").await).code, 404);
    let terminating = namespaces
        .get("doomed")
        .await
        .expect("waits for its content");
    assert_eq!(
        terminating.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    let refused = api_error(
        api.create(&PostParams::default(), &config_map("new", json!({})))
            .await,
    );
    assert_eq!(refused.code, 403);

    api.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": []}})),
    )
    .await
    .expect("finalizer cleared");
    assert_eq!(api_error(namespaces.get("doomed").await).code, 404);
}

#[tokio::test]
async fn owner_references_are_garbage_collected() {
    let cluster = cluster("gc").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    let owner = api
        .create(&PostParams::default(), &config_map("owner", json!({})))
        .await
        .expect("owner");
    let owned_by = |name: &str| {
        let mut child = config_map(name, json!({}));
        child.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
            "uid": owner.metadata.uid.clone().expect("uid"),
        }))
        .expect("owner reference")]);
        child
    };
    api.create(&PostParams::default(), &owned_by("child"))
        .await
        .expect("child");
    api.delete("owner", &DeleteParams::default())
        .await
        .expect("owner deleted");
    assert_eq!(
        api_error(api.get("child").await).code,
        404,
        "dependent collected"
    );

    let owner = api
        .create(&PostParams::default(), &config_map("owner", json!({})))
        .await
        .expect("owner again");
    let mut orphan = owned_by("orphan");
    if let Some(refs) = orphan.metadata.owner_references.as_mut() {
        refs[0].uid = owner.metadata.uid.clone().expect("uid");
    }
    api.create(&PostParams::default(), &orphan)
        .await
        .expect("orphan");
    api.delete("owner", &DeleteParams::orphan())
        .await
        .expect("deleted with orphan policy");
    let kept = api.get("orphan").await.expect("orphans stay");
    assert!(kept
        .metadata
        .owner_references
        .unwrap_or_default()
        .is_empty());
}

/// As the garbage collector does: a dependent written when none of its
/// owners exists (gone before, another namespace's, another cluster's uid)
/// is deleted; one with a live owner among dead ones stays.
#[tokio::test]
async fn a_dependent_written_without_a_live_owner_is_collected() {
    let cluster = cluster("gc-late").await;
    let client = cluster.client();
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "elsewhere"}})).expect("ns"),
        )
        .await
        .expect("namespace");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "elsewhere");
    let owner = api
        .create(&PostParams::default(), &config_map("owner", json!({})))
        .await
        .expect("owner");
    let uid = owner.metadata.uid.clone().expect("uid");
    let reference = |name: &str, uid: &str| json!({"apiVersion": "v1", "kind": "ConfigMap", "name": name, "uid": uid});
    let owned_by = |name: &str, owners: Vec<Value>| {
        let mut child = config_map(name, json!({}));
        child.metadata.owner_references =
            Some(serde_json::from_value(Value::Array(owners)).expect("owner references"));
        child
    };

    api.create(
        &PostParams::default(),
        &owned_by("live", vec![reference("owner", &uid)]),
    )
    .await
    .expect("created");
    api.get("live").await.expect("a live owner keeps it");

    for (name, owners) in [
        (
            "other-cluster",
            vec![reference("owner", "uid-of-another-cluster")],
        ),
        ("never-existed", vec![reference("nobody", "uid-1")]),
    ] {
        let created = api
            .create(&PostParams::default(), &owned_by(name, owners))
            .await
            .expect("the write itself succeeds");
        assert!(created.metadata.uid.is_some());
        assert_eq!(api_error(api.get(name).await).code, 404, "{name} collected");
    }
    // A namespaced owner is looked for in the dependent's own namespace.
    elsewhere
        .create(
            &PostParams::default(),
            &owned_by("cross-namespace", vec![reference("owner", &uid)]),
        )
        .await
        .expect("created");
    assert_eq!(
        api_error(elsewhere.get("cross-namespace").await).code,
        404,
        "an owner in another namespace is no owner"
    );
    // One live owner is enough.
    api.create(
        &PostParams::default(),
        &owned_by(
            "one-live",
            vec![reference("nobody", "uid-1"), reference("owner", &uid)],
        ),
    )
    .await
    .expect("created");
    api.get("one-live").await.expect("kept by its live owner");

    // Written after its owner went: collected too.
    api.delete("owner", &DeleteParams::default())
        .await
        .expect("owner deleted");
    api.create(
        &PostParams::default(),
        &owned_by("late", vec![reference("owner", &uid)]),
    )
    .await
    .expect("created");
    assert_eq!(api_error(api.get("late").await).code, 404, "late collected");
}

#[tokio::test]
async fn admission_refuses_invalid_strait_objects() {
    use strait_api::ipam::Network;
    let cluster = cluster("admission").await;
    let api: Api<Network> = Api::namespaced(cluster.client(), "default");
    let network = |cidrs: Value| -> Network {
        serde_json::from_value(json!({
            "apiVersion": "ipam.strait.dev/v1beta1", "kind": "Network",
            "metadata": {"name": "pods"}, "spec": {"cidrs": cidrs},
        }))
        .expect("a Network")
    };
    let refused = api_error(
        api.create(&PostParams::default(), &network(json!(["10.0.0.0/33"])))
            .await,
    );
    assert_eq!((refused.code, refused.reason.as_str()), (422, "Invalid"));
    assert!(
        refused
            .message
            .contains("cidrs must list CIDRs such as 10.0.0.0/16"),
        "{}",
        refused.message
    );

    let created = api
        .create(&PostParams::default(), &network(json!(["10.0.0.0/16"])))
        .await
        .expect("valid");
    assert_eq!(created.spec.pre_allocated, 0, "schema defaults applied");
    // Transition rule: the CIDRs are immutable, checked against the stored object.
    let change = json!({"spec": {"cidrs": ["10.1.0.0/16"]}});
    let immutable = api_error(
        api.patch("pods", &PatchParams::default(), &Patch::Merge(&change))
            .await,
    );
    assert_eq!(immutable.code, 422);
    assert!(
        immutable.message.contains("immutable"),
        "{}",
        immutable.message
    );
    // Status writes are admitted too.
    let status = json!({"status": {"cidrs": ["not-a-cidr"]}});
    let bad_status = api_error(
        api.patch_status("pods", &PatchParams::default(), &Patch::Merge(&status))
            .await,
    );
    assert_eq!(bad_status.code, 422);
    // Unknown fields are refused (so nothing needs pruning).
    let unknown = json!({"spec": {"surprise": true}});
    assert_eq!(
        api_error(
            api.patch("pods", &PatchParams::default(), &Patch::Merge(&unknown))
                .await
        )
        .code,
        422
    );
}

#[tokio::test]
async fn discovery_lists_core_kinds_and_every_strait_crd() {
    let cluster = cluster("discovery").await;
    let discovery = within(
        "discovery",
        kube::discovery::Discovery::new(cluster.client()).run(),
    )
    .await
    .expect("discovery runs");
    let kinds: BTreeSet<String> = discovery
        .groups()
        .flat_map(|g| g.recommended_resources().into_iter().map(|(r, _)| r.kind))
        .collect();
    for kind in [
        "Namespace",
        "Secret",
        "ConfigMap",
        "Pod",
        "Service",
        "Node",
        "Lease",
        "Event",
        "ServiceAccount",
        "EndpointSlice",
    ] {
        assert!(kinds.contains(kind), "{kind} missing from {kinds:?}");
    }
    for crd in strait_api::crds() {
        assert!(
            kinds.contains(&crd.spec.names.kind),
            "{} missing",
            crd.spec.names.kind
        );
    }
    let version = within("version", cluster.client().apiserver_version())
        .await
        .expect("version");
    assert_eq!(version.major, "1");
}

#[tokio::test]
async fn delete_collection_by_selector_and_dry_run_writes_nothing() {
    let cluster = cluster("collection").await;
    let api: Api<ConfigMap> = Api::namespaced(cluster.client(), "default");
    for (name, labels) in [
        ("a", json!({"batch": "1"})),
        ("b", json!({"batch": "1"})),
        ("c", json!({"batch": "2"})),
    ] {
        api.create(&PostParams::default(), &config_map(name, labels))
            .await
            .expect("created");
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("batch=1"),
    )
    .await
    .expect("collection deleted");
    let left: Vec<String> = api
        .list(&ListParams::default())
        .await
        .expect("listed")
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    assert_eq!(left, vec!["c".to_owned()]);

    let dry = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let returned = api
        .create(&dry, &config_map("dry", json!({})))
        .await
        .expect("dry run accepted");
    assert_eq!(returned.metadata.name.as_deref(), Some("dry"));
    assert_eq!(
        api_error(api.get("dry").await).code,
        404,
        "dry run stores nothing"
    );
    api.delete(
        "c",
        &DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        },
    )
    .await
    .expect("dry-run delete accepted");
    assert!(api.get("c").await.is_ok(), "dry-run delete removes nothing");
}
