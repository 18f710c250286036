//! Service account tokens of offloaded pods. A pod that mounts its service
//! account token (the `kube-api-access-*` projected volume the API server
//! adds, or any projected `serviceAccountToken` source) gets, on the
//! provider, a token of its *consumer* service account: the virtual kubelet
//! asks the consumer for one (TokenRequest bound to the pod, with the
//! volume's audience and expiry), writes it with the consumer's CA and the
//! pod's namespace into a Secret of the remote namespace, owned by the
//! ShadowPod, and the reflected pod mounts that Secret where the projected
//! token was. The token is renewed at [`REFRESH_FRACTION`] of its lifetime
//! and the Secret deleted with the pod. The provider's own service account
//! token is never mounted (`automountServiceAccountToken: false`): it would
//! give the pod the provider's identity.
//!
//! With a consumer API address (the virtual kubelet's
//! `--consumer-api-address`), such a pod is also pointed at the consumer's
//! API server instead of the provider's: its containers' `KUBERNETES_SERVICE_*`
//! variables name `kubernetes.default.svc` on that port, and a host alias
//! resolves the name to that address, so the server's certificate (whose
//! names include `kubernetes.default.svc`) verifies against the delivered
//! consumer CA.

use std::{
    collections::{BTreeMap, HashMap},
    net::SocketAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use k8s_openapi::{
    api::{
        authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec},
        core::v1::{
            ConfigMap, Container, DownwardAPIProjection, EnvVar, HostAlias, KeyToPath, Pod,
            PodSpec, Secret, SecretProjection, ServiceAccount, VolumeProjection,
        },
    },
    jiff::Timestamp,
    ByteString,
};
use kube::{
    api::{DeleteParams, Patch, PatchParams, PostParams},
    Api, ResourceExt as _,
};
use serde_json::json;
use strait_api::offloading::ShadowPod;

use super::{generic::FIELD_MANAGER, Reflection};
use crate::{status::ignore_not_found, Error};

/// Type of the Secrets holding delivered tokens on the provider.
pub const SECRET_TYPE: &str = "offloading.strait.dev/service-account-token";
/// Label of those Secrets: the uid of the consumer pod the token is bound to.
pub const POD_UID_LABEL: &str = "offloading.strait.dev/token-pod-uid";
/// Share of a token's lifetime after which it is renewed (the kubelet's own rule).
pub const REFRESH_FRACTION: f64 = 0.8;
/// What the consumer's root CA ConfigMap is called in every namespace.
const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
/// The Secret keys client libraries' files are made from.
const CA_KEY: &str = "ca.crt";
const NAMESPACE_KEY: &str = "namespace";

/// The name offloaded pods reach the consumer's API server by: one of the
/// names its serving certificate is issued for.
pub const CONSUMER_API_HOST: &str = "kubernetes.default.svc";
/// The names the host alias of the consumer's API resolves.
const CONSUMER_API_ALIASES: [&str; 3] = [CONSUMER_API_HOST, "kubernetes.default", "kubernetes"];
/// The variables client libraries find their API server by.
const SERVICE_HOST_VAR: &str = "KUBERNETES_SERVICE_HOST";
const SERVICE_PORT_VARS: [&str; 2] = ["KUBERNETES_SERVICE_PORT", "KUBERNETES_SERVICE_PORT_HTTPS"];

/// A `--consumer-api-address` that is not `IP:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("the consumer API address must be IP:PORT with a non-zero port (for example 198.18.0.10:6443 or [fd00::10]:6443), not {0:?}")]
pub struct InvalidConsumerApiAddress(String);

/// Parses the address at which provider pods reach the consumer's API
/// server (`IP:PORT`: pods resolve no other names of the consumer).
pub fn parse_consumer_api_address(text: &str) -> Result<SocketAddr, InvalidConsumerApiAddress> {
    text.parse::<SocketAddr>()
        .ok()
        .filter(|address| address.port() != 0)
        .ok_or_else(|| InvalidConsumerApiAddress(text.to_owned()))
}

/// What a pod's spec needs on the provider to talk to the consumer: its
/// token volumes read the Secret `secret` ([`redirect_token_volumes`]),
/// and, when it has any and the consumer's API address is known, it is
/// pointed there ([`point_at_consumer_api`]). Returns the tokens to request.
pub fn redirect_to_consumer(
    spec: &mut PodSpec,
    secret: &str,
    consumer_api_address: Option<SocketAddr>,
) -> Vec<TokenNeed> {
    let needs = redirect_token_volumes(spec, secret);
    if let Some(address) = consumer_api_address.filter(|_| !needs.is_empty()) {
        point_at_consumer_api(spec, address);
    }
    needs
}

/// Points the containers of `spec` (a pod whose token volumes were
/// redirected) at the consumer's API server at `address`: explicit
/// `KUBERNETES_SERVICE_*` variables, which win over the ones the provider's
/// kubelet injects, and a host alias of the API server's names.
pub fn point_at_consumer_api(spec: &mut PodSpec, address: SocketAddr) {
    let port = address.port().to_string();
    let ours = std::iter::once((SERVICE_HOST_VAR, CONSUMER_API_HOST.to_owned()))
        .chain(SERVICE_PORT_VARS.map(|name| (name, port.clone())));
    let service_vars: Vec<EnvVar> = ours
        .map(|(name, value)| EnvVar {
            name: name.to_owned(),
            value: Some(value),
            value_from: None,
        })
        .collect();
    let containers = spec
        .containers
        .iter_mut()
        .chain(spec.init_containers.iter_mut().flatten());
    for container in containers {
        set_service_vars(container, &service_vars);
    }
    let alias = HostAlias {
        ip: address.ip().to_string(),
        hostnames: Some(CONSUMER_API_ALIASES.map(str::to_owned).to_vec()),
    };
    let aliases = spec.host_aliases.get_or_insert_with(Vec::new);
    aliases.retain(|existing| *existing != alias);
    aliases.push(alias);
}

/// Replaces `container`'s entries of the service variables by `vars`,
/// first, so that later entries may refer to them.
fn set_service_vars(container: &mut Container, vars: &[EnvVar]) {
    let env = container.env.get_or_insert_with(Vec::new);
    env.retain(|existing| !vars.iter().any(|var| var.name == existing.name));
    env.splice(0..0, vars.iter().cloned());
}

/// One token a pod's volumes need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenNeed {
    /// The Secret key holding it.
    pub key: String,
    pub audience: Option<String>,
    pub expiration_seconds: Option<i64>,
}

/// The Secret on the provider holding the tokens of local pod `pod`.
pub fn secret_name(pod: &str) -> String {
    let name = format!("strait-token-{pod}");
    if name.len() <= 253 {
        return name;
    }
    // Too long for an object name: a stable digest keeps it unique.
    let digest = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{}-{digest:016x}", &name[..236])
}

/// Rewrites the projected volumes of `spec` that carry a service account
/// token to read the token, the CA and the namespace from the Secret
/// `secret` instead; returns the tokens to request (none: nothing to do).
pub fn redirect_token_volumes(spec: &mut PodSpec, secret: &str) -> Vec<TokenNeed> {
    let mut needs: Vec<TokenNeed> = Vec::new();
    for volume in spec.volumes.iter_mut().flatten() {
        let Some(sources) = volume.projected.as_mut().and_then(|p| p.sources.as_mut()) else {
            continue;
        };
        if !sources.iter().any(|s| s.service_account_token.is_some()) {
            continue;
        }
        let mut items: Vec<KeyToPath> = Vec::new();
        let mut kept: Vec<VolumeProjection> = Vec::new();
        for source in sources.drain(..) {
            if let Some(token) = &source.service_account_token {
                let key = match needs.iter().find(|n| {
                    n.audience == token.audience && n.expiration_seconds == token.expiration_seconds
                }) {
                    Some(need) => need.key.clone(),
                    None => {
                        let key = match needs.len() {
                            0 => "token".to_owned(),
                            n => format!("token-{n}"),
                        };
                        needs.push(TokenNeed {
                            key: key.clone(),
                            audience: token.audience.clone(),
                            expiration_seconds: token.expiration_seconds,
                        });
                        key
                    }
                };
                items.push(KeyToPath {
                    key,
                    path: token.path.clone(),
                    mode: None,
                });
            } else if let Some(config_map) = source
                .config_map
                .as_ref()
                .filter(|c| c.name == ROOT_CA_CONFIGMAP)
            {
                // The provider's kube-root-ca.crt holds the provider's CA;
                // the token is for the consumer's API.
                let paths: Vec<KeyToPath> = match &config_map.items {
                    Some(listed) => listed
                        .iter()
                        .map(|item| KeyToPath {
                            key: CA_KEY.to_owned(),
                            path: item.path.clone(),
                            mode: item.mode,
                        })
                        .collect(),
                    None => vec![KeyToPath {
                        key: CA_KEY.to_owned(),
                        path: CA_KEY.to_owned(),
                        mode: None,
                    }],
                };
                items.extend(paths);
            } else if let Some(downward) = &source.downward_api {
                // The namespace the token belongs to is the consumer's.
                let (namespace, others): (Vec<_>, Vec<_>) =
                    downward.items.iter().flatten().cloned().partition(|item| {
                        item.field_ref
                            .as_ref()
                            .is_some_and(|f| f.field_path == "metadata.namespace")
                    });
                items.extend(namespace.into_iter().map(|item| KeyToPath {
                    key: NAMESPACE_KEY.to_owned(),
                    path: item.path,
                    mode: item.mode,
                }));
                if !others.is_empty() {
                    kept.push(VolumeProjection {
                        downward_api: Some(DownwardAPIProjection {
                            items: Some(others),
                        }),
                        ..VolumeProjection::default()
                    });
                }
            } else {
                kept.push(source);
            }
        }
        kept.insert(
            0,
            VolumeProjection {
                secret: Some(SecretProjection {
                    name: secret.to_owned(),
                    items: Some(items),
                    optional: None,
                }),
                ..VolumeProjection::default()
            },
        );
        *sources = kept;
    }
    needs
}

/// Tokens delivered, by local pod (namespace, name): when to renew them.
#[derive(Default)]
pub struct Deliveries(Mutex<HashMap<(String, String), Delivery>>);

#[derive(Debug, Clone)]
struct Delivery {
    pod_uid: String,
    refresh_at: Instant,
}

impl Deliveries {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Delivery>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether the pod `uid` needs a (new) token now.
    pub fn due(&self, key: &(String, String), uid: &str) -> bool {
        self.lock()
            .get(key)
            .is_none_or(|d| d.pod_uid != uid || Instant::now() >= d.refresh_at)
    }

    /// Whether a token was delivered for `key` (and must be removed with it).
    pub fn has(&self, key: &(String, String)) -> bool {
        self.lock().contains_key(key)
    }

    pub fn forget(&self, key: &(String, String)) {
        self.lock().remove(key);
    }

    /// Pods whose tokens are due for renewal.
    pub fn renewals_due(&self) -> Vec<(String, String)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, d)| now >= d.refresh_at)
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn remember(&self, key: (String, String), pod_uid: String, refresh_at: Instant) {
        self.lock().insert(
            key,
            Delivery {
                pod_uid,
                refresh_at,
            },
        );
    }
}

/// Requests the tokens `needs` of `pod` from the consumer and writes them
/// (with the consumer's CA and the pod's namespace) into the pod's Secret
/// in `remote_namespace`, owned by `shadow`.
pub async fn deliver(
    reflection: &Reflection,
    deliveries: &Deliveries,
    pod: &Pod,
    needs: &[TokenNeed],
    remote_namespace: &str,
    shadow: &ShadowPod,
) -> Result<(), Error> {
    let namespace = pod.namespace().ok_or(Error::Unnamed("Pod"))?;
    let name = pod.name_any();
    let uid = pod.uid().ok_or(Error::Unnamed("Pod"))?;
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|a| !a.is_empty())
        .unwrap_or_else(|| "default".to_owned());
    let ca = Api::<ConfigMap>::namespaced(reflection.local.clone(), &namespace)
        .get_opt(ROOT_CA_CONFIGMAP)
        .await?
        .and_then(|c| c.data?.get(CA_KEY).cloned())
        .ok_or_else(|| {
            Error::Waiting(format!(
                "ConfigMap {namespace}/{ROOT_CA_CONFIGMAP} has no {CA_KEY}: the token of pod {name} needs the consumer's CA"
            ))
        })?;
    let accounts = Api::<ServiceAccount>::namespaced(reflection.local.clone(), &namespace);
    let mut data = BTreeMap::from([
        (CA_KEY.to_owned(), ByteString(ca.into_bytes())),
        (
            NAMESPACE_KEY.to_owned(),
            ByteString(namespace.clone().into_bytes()),
        ),
    ]);
    let issued = Instant::now();
    let mut shortest: Option<Duration> = None;
    for need in needs {
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: need.audience.iter().cloned().collect(),
                expiration_seconds: need.expiration_seconds,
                bound_object_ref: Some(BoundObjectReference {
                    api_version: Some("v1".into()),
                    kind: Some("Pod".into()),
                    name: Some(name.clone()),
                    uid: Some(uid.clone()),
                }),
            },
            ..TokenRequest::default()
        };
        let answer = accounts
            .create_token_request(&account, &PostParams::default(), &request)
            .await?;
        let status = answer.status.ok_or_else(|| {
            Error::Waiting(format!(
                "the consumer answered the TokenRequest of {namespace}/{account} without a token"
            ))
        })?;
        let lifetime = Duration::from_secs(
            (status.expiration_timestamp.0.as_second() - Timestamp::now().as_second())
                .max(1)
                .unsigned_abs(),
        );
        shortest = Some(shortest.map_or(lifetime, |s| s.min(lifetime)));
        data.insert(need.key.clone(), ByteString(status.token.into_bytes()));
    }
    let mut labels = reflection.origin_labels();
    labels.insert(POD_UID_LABEL.to_owned(), uid.clone());
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": secret_name(&name),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": "offloading.strait.dev/v1beta1", "kind": "ShadowPod",
                "name": shadow.name_any(), "uid": shadow.uid().unwrap_or_default(),
            }],
        },
        "type": SECRET_TYPE,
        "data": data,
    });
    Api::<Secret>::namespaced(reflection.remote.clone(), remote_namespace)
        .patch(
            &secret_name(&name),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&secret),
        )
        .await?;
    let lifetime = shortest.unwrap_or_default();
    let refresh_at = issued + lifetime.mul_f64(REFRESH_FRACTION);
    tracing::debug!(pod = %name, %namespace, ?lifetime, "service account token delivered");
    deliveries.remember((namespace, name), uid, refresh_at);
    Ok(())
}

/// Deletes the token Secret of local pod `name` on the provider.
pub async fn withdraw(
    reflection: &Reflection,
    deliveries: &Deliveries,
    key: &(String, String),
    remote_namespace: &str,
) -> Result<(), Error> {
    ignore_not_found(
        Api::<Secret>::namespaced(reflection.remote.clone(), remote_namespace)
            .delete(&secret_name(&key.1), &DeleteParams::default())
            .await,
    )?;
    deliveries.forget(key);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(value: serde_json::Value) -> PodSpec {
        serde_json::from_value(value).expect("pod spec")
    }

    #[test]
    fn the_api_access_volume_reads_token_ca_and_namespace_from_the_secret() {
        let mut pod = spec(json!({
            "containers": [{"name": "app", "volumeMounts": [{"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
            "volumes": [
                {"name": "kube-api-access-x", "projected": {"defaultMode": 420, "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
                ]}},
                {"name": "data", "configMap": {"name": "settings"}},
            ],
        }));
        let needs = redirect_token_volumes(&mut pod, "strait-token-p");
        assert_eq!(
            needs,
            vec![TokenNeed {
                key: "token".into(),
                audience: None,
                expiration_seconds: Some(3607)
            }]
        );
        let volumes = serde_json::to_value(&pod.volumes).expect("json");
        assert_eq!(
            volumes[0]["projected"]["sources"],
            json!([{"secret": {"name": "strait-token-p", "items": [
                {"key": "token", "path": "token"},
                {"key": "ca.crt", "path": "ca.crt"},
                {"key": "namespace", "path": "namespace"},
            ]}}])
        );
        assert_eq!(volumes[0]["projected"]["defaultMode"], 420);
        assert_eq!(
            volumes[1],
            json!({"name": "data", "configMap": {"name": "settings"}})
        );
    }

    #[test]
    fn other_projections_stay_and_audiences_get_their_own_tokens() {
        let mut pod = spec(json!({
            "containers": [{"name": "app"}],
            "volumes": [{"name": "mixed", "projected": {"sources": [
                {"serviceAccountToken": {"audience": "vault", "path": "vault-token"}},
                {"serviceAccountToken": {"path": "token"}},
                {"downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
                {"configMap": {"name": "settings"}},
            ]}}],
        }));
        let needs = redirect_token_volumes(&mut pod, "s");
        let keys: Vec<_> = needs
            .iter()
            .map(|n| (n.key.as_str(), n.audience.as_deref()))
            .collect();
        assert_eq!(keys, vec![("token", Some("vault")), ("token-1", None)]);
        let sources =
            serde_json::to_value(&pod.volumes).expect("json")[0]["projected"]["sources"].clone();
        assert_eq!(sources.as_array().map(Vec::len), Some(3), "{sources}");
        assert_eq!(sources[1]["downwardAPI"]["items"][0]["path"], "labels");
        assert_eq!(sources[2]["configMap"]["name"], "settings");
    }

    #[test]
    fn a_pod_without_a_token_volume_is_left_alone() {
        let original = spec(json!({
            "containers": [{"name": "app"}],
            "volumes": [{"name": "p", "projected": {"sources": [{"configMap": {"name": "kube-root-ca.crt"}}]}}],
        }));
        let mut pod = original.clone();
        assert!(redirect_token_volumes(&mut pod, "s").is_empty());
        assert_eq!(pod, original);
    }

    fn env_of(container: &serde_json::Value) -> Vec<(String, String)> {
        container["env"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|var| {
                (
                    var["name"].as_str().unwrap_or_default().to_owned(),
                    var["value"].as_str().unwrap_or("<from>").to_owned(),
                )
            })
            .collect()
    }

    fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn pointing_at_the_consumer_api_replaces_the_service_variables_everywhere() {
        let mut pod = spec(json!({
            "initContainers": [{"name": "wait"}],
            "containers": [
                {"name": "app", "env": [
                    {"name": "MODE", "value": "prod"},
                    {"name": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"},
                    {"name": "KUBERNETES_SERVICE_PORT", "value": "443"},
                    {"name": "API", "value": "https://$(KUBERNETES_SERVICE_HOST)"},
                ]},
                {"name": "sidecar"},
            ],
            "hostAliases": [{"ip": "198.18.0.99", "hostnames": ["cache"]}],
        }));
        let address = parse_consumer_api_address("198.18.0.10:6443").expect("address");
        point_at_consumer_api(&mut pod, address);
        // Twice gives the same: nothing piles up.
        point_at_consumer_api(&mut pod, address);
        let pod = serde_json::to_value(&pod).expect("json");
        let ours = [
            ("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc"),
            ("KUBERNETES_SERVICE_PORT", "6443"),
            ("KUBERNETES_SERVICE_PORT_HTTPS", "6443"),
        ];
        let mut app = ours.to_vec();
        app.extend([
            ("MODE", "prod"),
            ("API", "https://$(KUBERNETES_SERVICE_HOST)"),
        ]);
        assert_eq!(env_of(&pod["containers"][0]), owned(&app));
        assert_eq!(env_of(&pod["containers"][1]), owned(&ours));
        assert_eq!(env_of(&pod["initContainers"][0]), owned(&ours));
        assert_eq!(
            pod["hostAliases"],
            json!([
                {"ip": "198.18.0.99", "hostnames": ["cache"]},
                {"ip": "198.18.0.10", "hostnames": ["kubernetes.default.svc", "kubernetes.default", "kubernetes"]},
            ])
        );
    }

    #[test]
    fn only_pods_with_a_consumer_token_are_pointed_at_the_consumer_api_and_only_when_known() {
        let with_token = spec(json!({
            "containers": [{"name": "app", "env": [{"name": "KUBERNETES_SERVICE_HOST", "value": "10.96.0.1"}]}],
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}},
            ]}}],
        }));
        let without_token = spec(json!({
            "containers": [{"name": "app"}],
            "volumes": [{"name": "data", "configMap": {"name": "settings"}}],
        }));
        let address = parse_consumer_api_address("198.18.0.10:6443").ok();

        let mut pointed = with_token.clone();
        assert_eq!(redirect_to_consumer(&mut pointed, "s", address).len(), 1);
        let pointed = serde_json::to_value(&pointed).expect("json");
        assert_eq!(
            env_of(&pointed["containers"][0])[0],
            owned(&[("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")])[0]
        );
        assert_eq!(pointed["hostAliases"][0]["ip"], "198.18.0.10");

        // Without the address: the volumes only, as before.
        let mut volumes_only = with_token.clone();
        let mut expected = with_token;
        redirect_token_volumes(&mut expected, "s");
        assert_eq!(redirect_to_consumer(&mut volumes_only, "s", None).len(), 1);
        assert_eq!(volumes_only, expected);

        // No token: the pod talks to no API of ours and stays as it is.
        let mut untouched = without_token.clone();
        assert!(redirect_to_consumer(&mut untouched, "s", address).is_empty());
        assert_eq!(untouched, without_token);
    }

    #[test]
    fn an_ipv6_consumer_api_is_aliased_by_its_bare_address() {
        let mut pod = spec(json!({"containers": [{"name": "app"}]}));
        point_at_consumer_api(
            &mut pod,
            parse_consumer_api_address("[fd00::10]:443").expect("address"),
        );
        let pod = serde_json::to_value(&pod).expect("json");
        assert_eq!(pod["hostAliases"][0]["ip"], "fd00::10");
        assert_eq!(pod["containers"][0]["env"][1]["value"], "443");
    }

    #[test]
    fn a_consumer_api_address_must_be_ip_and_port() {
        for bad in [
            "kubernetes.default.svc:443",
            "198.18.0.10",
            "198.18.0.10:0",
            "198.18.0.10:https",
            "fd00::10:443",
            "",
        ] {
            let error = parse_consumer_api_address(bad).expect_err(bad);
            assert!(error.to_string().contains("IP:PORT"), "{error}");
        }
    }

    #[test]
    fn secret_names_stay_valid_for_long_pod_names() {
        assert_eq!(secret_name("web-0"), "strait-token-web-0");
        let long = "a".repeat(253);
        let name = secret_name(&long);
        assert!(name.len() <= 253, "{}", name.len());
        assert_ne!(name, secret_name(&"a".repeat(252)));
    }
}
