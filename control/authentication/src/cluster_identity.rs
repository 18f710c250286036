//! This cluster's identity: a stable cluster ID and an Ed25519 key pair,
//! created once (ConfigMap `strait-cluster-identity` with the ID and the
//! public key, Secret `strait-cluster-key` with the private key, both in the
//! `strait` namespace) and read back on every start.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use strait_api::names::{identity, label, SYSTEM_NAMESPACE};

use crate::handshake::{encode_public_key, generate_key_pkcs8};
use crate::{is_status, Error};

const PRIVATE_KEY_KEY: &str = "privateKey";

/// Who this cluster is.
pub struct ClusterIdentity {
    pub cluster_id: String,
    /// The public key as peers see it (base64 SubjectPublicKeyInfo).
    pub public_key: String,
    key: Ed25519KeyPair,
}

impl std::fmt::Debug for ClusterIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterIdentity")
            .field("cluster_id", &self.cluster_id)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl ClusterIdentity {
    pub fn from_pkcs8(cluster_id: &str, pkcs8: &[u8]) -> Result<Self, Error> {
        let key = Ed25519KeyPair::from_pkcs8(pkcs8)
            .map_err(|e| Error::Identity(format!("the stored private key is unusable: {e}")))?;
        Ok(Self {
            cluster_id: cluster_id.to_owned(),
            public_key: encode_public_key(key.public_key().as_ref()),
            key,
        })
    }

    /// A new identity with a fresh key (what `ensure` stores on first start).
    pub fn generate(cluster_id: &str) -> Result<Self, Error> {
        Self::from_pkcs8(cluster_id, &generate_key_pkcs8()?)
    }

    pub fn key(&self) -> &Ed25519KeyPair {
        &self.key
    }
}

fn is_dns_label(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 63
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

/// Reads this cluster's identity, creating it on first start. A stored ID
/// wins over nothing; a different `wanted` ID is an error (an ID never changes).
pub async fn ensure(client: &Client, wanted: Option<&str>) -> Result<ClusterIdentity, Error> {
    if let Some(id) = wanted.filter(|id| !is_dns_label(id)) {
        return Err(Error::Identity(format!(
            "cluster ID {id:?} is not a DNS label (lowercase letters, digits, '-', at most 63)"
        )));
    }
    ensure_namespace(client, SYSTEM_NAMESPACE, BTreeMap::new()).await?;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SYSTEM_NAMESPACE);
    let stored = config_maps
        .get_opt(identity::CLUSTER_IDENTITY_CONFIGMAP)
        .await?;
    let stored_id = stored
        .as_ref()
        .and_then(|cm| cm.data.as_ref())
        .and_then(|d| d.get(identity::CLUSTER_ID_KEY))
        .cloned();
    let cluster_id = match (stored_id, wanted) {
        (Some(stored), Some(wanted)) if stored != wanted => {
            return Err(Error::Identity(format!(
                "this cluster's ID is {stored:?} (ConfigMap {SYSTEM_NAMESPACE}/{}), not {wanted:?}: a cluster ID never changes",
                identity::CLUSTER_IDENTITY_CONFIGMAP
            )))
        }
        (Some(stored), _) => stored,
        (None, Some(wanted)) => wanted.to_owned(),
        (None, None) => derived_cluster_id(client).await?,
    };
    if let Some(secret) = secrets.get_opt(identity::CLUSTER_KEY_SECRET).await? {
        let pkcs8 = secret
            .data
            .as_ref()
            .and_then(|d| d.get(PRIVATE_KEY_KEY))
            .ok_or_else(|| {
                Error::Identity(format!(
                    "Secret {SYSTEM_NAMESPACE}/{} has no {PRIVATE_KEY_KEY}",
                    identity::CLUSTER_KEY_SECRET
                ))
            })?;
        let identity = ClusterIdentity::from_pkcs8(&cluster_id, &pkcs8.0)?;
        publish(&config_maps, stored.is_none(), &identity).await?;
        return Ok(identity);
    }
    let pkcs8 = generate_key_pkcs8()?;
    let identity = ClusterIdentity::from_pkcs8(&cluster_id, &pkcs8)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(identity::CLUSTER_KEY_SECRET.to_owned()),
            labels: Some(managed_labels()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            PRIVATE_KEY_KEY.to_owned(),
            ByteString(pkcs8),
        )])),
        ..Default::default()
    };
    match secrets.create(&PostParams::default(), &secret).await {
        Ok(_) => {}
        // Another replica won the race: use its key.
        Err(e) if is_status(&e, 409) => return Box::pin(ensure(client, Some(&cluster_id))).await,
        Err(e) => return Err(e.into()),
    }
    publish(&config_maps, true, &identity).await?;
    Ok(identity)
}

async fn publish(
    config_maps: &Api<ConfigMap>,
    missing: bool,
    identity: &ClusterIdentity,
) -> Result<(), Error> {
    if !missing {
        return Ok(());
    }
    let config_map = ConfigMap {
        metadata: ObjectMeta {
            name: Some(identity::CLUSTER_IDENTITY_CONFIGMAP.to_owned()),
            labels: Some(managed_labels()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([
            (
                identity::CLUSTER_ID_KEY.to_owned(),
                identity.cluster_id.clone(),
            ),
            (
                identity::PUBLIC_KEY_KEY.to_owned(),
                identity.public_key.clone(),
            ),
        ])),
        ..Default::default()
    };
    match config_maps
        .create(&PostParams::default(), &config_map)
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// A cluster ID from the kube-system namespace's uid, stable for the
/// cluster's life.
async fn derived_cluster_id(client: &Client) -> Result<String, Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let uid = namespaces
        .get("kube-system")
        .await?
        .metadata
        .uid
        .ok_or_else(|| Error::Identity("kube-system has no uid; pass a cluster ID".into()))?;
    let short: String = uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(12)
        .collect();
    Ok(format!("cluster-{}", short.to_ascii_lowercase()))
}

pub(crate) fn managed_labels() -> BTreeMap<String, String> {
    BTreeMap::from([(
        label::MANAGED_BY.to_owned(),
        label::MANAGED_BY_VALUE.to_owned(),
    )])
}

/// Creates a namespace if it does not exist.
pub(crate) async fn ensure_namespace(
    client: &Client,
    name: &str,
    labels: BTreeMap<String, String>,
) -> Result<(), Error> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    if namespaces.get_opt(name).await?.is_some() {
        return Ok(());
    }
    let mut all_labels = managed_labels();
    all_labels.extend(labels);
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            labels: Some(all_labels),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(e) if is_status(&e, 409) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
