//! TLS with client-certificate authentication and RBAC authorization.

mod common;

use std::time::Duration;

use common::{api_error, within};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use strait_api::ipam::Network;
use strait_testkit::{Error, Options, TestCluster};

async fn tls_cluster(name: &str) -> TestCluster {
    let options = Options {
        tls: true,
        ..Options::default()
    };
    within("start", TestCluster::start_with(name, options))
        .await
        .expect("TLS cluster starts")
}

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid object")
}

#[tokio::test]
async fn roles_and_bindings_decide_what_a_certificate_user_may_do() {
    let cluster = tls_cluster("rbac").await;
    let admin = cluster.client();
    let cm: ConfigMap = object(json!({"metadata": {"name": "settings"}, "data": {"k": "v"}}));
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &cm)
        .await
        .expect("the superuser may do anything");

    let alice = within("alice", cluster.client_as("alice", &[]))
        .await
        .expect("alice");
    let alice_default: Api<ConfigMap> = Api::namespaced(alice.clone(), "default");
    let refused = api_error(alice_default.list(&ListParams::default()).await);
    assert_eq!((refused.code, refused.reason.as_str()), (403, "Forbidden"));
    assert!(
        refused
            .message
            .contains(r#"User "alice" cannot list resource "configmaps""#),
        "{}",
        refused.message
    );

    let role: Role = object(json!({
        "metadata": {"name": "config-reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}],
    }));
    Api::<Role>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = object(json!({
        "metadata": {"name": "alice-reads", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "config-reader"},
        "subjects": [{"kind": "User", "name": "alice", "apiGroup": "rbac.authorization.k8s.io"}],
    }));
    Api::<RoleBinding>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");

    assert_eq!(
        alice_default
            .list(&ListParams::default())
            .await
            .expect("allowed now")
            .items
            .len(),
        1
    );
    assert!(alice_default.get("settings").await.is_ok());
    let elsewhere: Api<ConfigMap> = Api::namespaced(alice.clone(), "kube-system");
    assert_eq!(
        api_error(elsewhere.list(&ListParams::default()).await).code,
        403,
        "a Role binds in its namespace only"
    );
    let write = api_error(
        alice_default
            .create(
                &PostParams::default(),
                &object(json!({"metadata": {"name": "new"}})),
            )
            .await,
    );
    assert_eq!(write.code, 403, "read-only role");

    // A ClusterRole bound to a group, for a Strait kind but not its status.
    let cluster_role: ClusterRole = object(json!({
        "metadata": {"name": "network-editor"},
        "rules": [{"apiGroups": ["ipam.strait.dev"], "resources": ["networks"], "verbs": ["*"]}],
    }));
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &cluster_role)
        .await
        .expect("cluster role");
    let cluster_binding: ClusterRoleBinding = object(json!({
        "metadata": {"name": "network-editors"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "network-editor"},
        "subjects": [{"kind": "Group", "name": "network-admins", "apiGroup": "rbac.authorization.k8s.io"}],
    }));
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &cluster_binding)
        .await
        .expect("binding");

    let bob = within("bob", cluster.client_as("bob", &["network-admins"]))
        .await
        .expect("bob");
    let networks: Api<Network> = Api::namespaced(bob.clone(), "default");
    let network: Network = object(json!({
        "apiVersion": "ipam.strait.dev/v1beta1", "kind": "Network",
        "metadata": {"name": "pods"}, "spec": {"cidrs": ["10.0.0.0/16"]},
    }));
    networks
        .create(&PostParams::default(), &network)
        .await
        .expect("the group may create networks");
    let status = json!({"status": {"cidrs": ["10.0.0.0/16"]}});
    let refused = api_error(
        networks
            .patch_status("pods", &PatchParams::default(), &Patch::Merge(&status))
            .await,
    );
    assert_eq!(
        refused.code, 403,
        "networks/status is a separate resource for RBAC"
    );
    assert_eq!(
        api_error(
            Api::<ConfigMap>::namespaced(bob, "default")
                .list(&ListParams::default())
                .await
        )
        .code,
        403
    );
}

#[tokio::test]
async fn kubectl_over_tls_and_clients_without_a_certificate() {
    let cluster = tls_cluster("tls-kubectl").await;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let admin_config = dir.path().join("admin");
    cluster.write_kubeconfig(&admin_config).expect("kubeconfig");
    assert!(cluster.url().starts_with("https://127.0.0.1:"));

    let run = |config: std::path::PathBuf| async move {
        let output = tokio::time::timeout(
            Duration::from_secs(30),
            tokio::process::Command::new("kubectl")
                .arg("--kubeconfig")
                .arg(&config)
                .arg("--cache-dir")
                .arg(config.with_extension("cache"))
                .args(["--request-timeout=10s", "get", "namespaces", "-o", "name"])
                .kill_on_drop(true)
                .output(),
        )
        .await
        .expect("kubectl in time")
        .expect("kubectl runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(admin_config.clone()).await;
    assert!(ok && out.contains("namespace/default"), "{out}{err}");

    // The same kubeconfig with a bearer token instead of the client
    // certificate (without any credentials kubectl would prompt for a
    // password): only certificates authenticate, so it is refused.
    let mut anonymous: serde_json::Value =
        serde_norway::from_str(&cluster.kubeconfig_yaml().expect("kubeconfig")).expect("YAML");
    anonymous["users"][0]["user"] = json!({"token": "not-a-credential-here"});
    let anonymous_config = dir.path().join("anonymous");
    std::fs::write(
        &anonymous_config,
        serde_norway::to_string(&anonymous).expect("YAML"),
    )
    .expect("written");
    let (ok, _, err) = run(anonymous_config).await;
    // kubectl words a 401 either way, depending on where it meets it.
    let unauthorized =
        err.contains("Unauthorized") || err.contains("asked for the client to provide credentials");
    assert!(!ok && unauthorized, "{err}");

    let plain = within("start", TestCluster::start("plain"))
        .await
        .expect("plain");
    assert!(matches!(
        plain.client_as("alice", &[]).await,
        Err(Error::NotTls(_))
    ));
}

#[tokio::test]
async fn pod_logs_are_what_the_test_set_and_need_the_pods_log_right() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::LogParams;
    let cluster = tls_cluster("logs").await;
    let admin = cluster.client();
    let pod: Pod = object(json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"containers": [{"name": "app", "image": "x"}, {"name": "sidecar", "image": "y"}]},
    }));
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    cluster.set_pod_log("default", "web", "app", "line one\nline two\n");
    let for_app = LogParams {
        container: Some("app".into()),
        ..LogParams::default()
    };
    let text = pods.logs("web", &for_app).await.expect("log of app");
    assert_eq!(text, "line one\nline two\n");
    let sidecar = LogParams {
        container: Some("sidecar".into()),
        ..LogParams::default()
    };
    assert_eq!(pods.logs("web", &sidecar).await.expect("empty log"), "");
    let unnamed = api_error(pods.logs("web", &LogParams::default()).await);
    assert!(
        unnamed
            .message
            .contains("a container name must be specified"),
        "{}",
        unnamed.message
    );
    assert_eq!(api_error(pods.logs("nope", &for_app).await).code, 404);

    let bob = within("bob", cluster.client_as("bob", &[]))
        .await
        .expect("bob");
    let bob_pods: Api<Pod> = Api::namespaced(bob, "default");
    let refused = api_error(bob_pods.logs("web", &for_app).await);
    assert_eq!(refused.code, 403);
    let role: Role = object(json!({
        "metadata": {"name": "log-reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}],
    }));
    Api::<Role>::namespaced(admin.clone(), "default")
        .create(&PostParams::default(), &role)
        .await
        .expect("role");
    let binding: RoleBinding = object(json!({
        "metadata": {"name": "bob-logs", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "log-reader"},
        "subjects": [{"kind": "User", "name": "bob"}],
    }));
    Api::<RoleBinding>::namespaced(admin, "default")
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    assert_eq!(
        bob_pods
            .logs("web", &for_app)
            .await
            .expect("bob may read logs now"),
        "line one\nline two\n"
    );
}
