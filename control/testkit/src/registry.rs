//! The kinds the test server serves: a fixed set of built-in kinds that
//! controllers touch, plus every Strait CRD (admitted with `strait_api::admission`).

use std::sync::Arc;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use crate::ownership::ListMaps;

/// One served resource type (a plural under a group/version).
#[derive(Debug, Clone)]
pub struct ResourceType {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    /// Whether `/status` is a separate subresource: then writes to the main
    /// resource keep the stored status and status writes keep everything else.
    pub has_status: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Set for Strait kinds: every write is admitted against it.
    pub crd: Option<Arc<CustomResourceDefinition>>,
    /// The lists its schema merges by key in server-side apply.
    pub list_maps: ListMaps,
    /// The CRD's schema as JSON, made once: admission reads it on every write.
    pub crd_schema: Option<Arc<serde_json::Value>>,
}

impl ResourceType {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// `plural.group`, as the API server names a resource in messages.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn is_namespace(&self) -> bool {
        self.group.is_empty() && self.plural == "namespaces"
    }

    fn builtin(group: &str, kind: &str, plural: &str, namespaced: bool, has_status: bool) -> Self {
        Self {
            group: group.to_owned(),
            version: "v1".to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            singular: kind.to_ascii_lowercase(),
            namespaced,
            has_status,
            short_names: Vec::new(),
            categories: Vec::new(),
            crd: None,
            list_maps: ListMaps::default(),
            crd_schema: None,
        }
    }

    fn from_crd(crd: CustomResourceDefinition) -> Option<Self> {
        let version = crd.spec.versions.iter().find(|v| v.served)?;
        let names = &crd.spec.names;
        Some(Self {
            group: crd.spec.group.clone(),
            version: version.name.clone(),
            kind: names.kind.clone(),
            plural: names.plural.clone(),
            singular: names
                .singular
                .clone()
                .unwrap_or_else(|| names.kind.to_ascii_lowercase()),
            namespaced: crd.spec.scope == "Namespaced",
            has_status: version
                .subresources
                .as_ref()
                .is_some_and(|s| s.status.is_some()),
            short_names: names.short_names.clone().unwrap_or_default(),
            categories: names.categories.clone().unwrap_or_default(),
            list_maps: ListMaps::from_crd(&crd),
            crd_schema: Some(Arc::new(strait_api::admission::schema_of(&crd))),
            crd: Some(Arc::new(crd)),
        })
    }
}

/// Index into `Registry::types`; the store keeps one table per type.
pub type TypeId = usize;

#[derive(Debug, Clone)]
pub struct Registry {
    pub types: Vec<ResourceType>,
}

impl Registry {
    /// The built-in kinds Strait's controllers and the demo use, then every Strait CRD.
    pub fn standard() -> Self {
        let mut types = vec![
            ResourceType::builtin("", "Namespace", "namespaces", false, true),
            ResourceType::builtin("", "Secret", "secrets", true, false),
            ResourceType::builtin("", "ConfigMap", "configmaps", true, false),
            ResourceType::builtin("", "Pod", "pods", true, true),
            ResourceType::builtin("", "Service", "services", true, true),
            ResourceType::builtin("", "Node", "nodes", false, true),
            ResourceType::builtin("", "Event", "events", true, false),
            ResourceType::builtin("", "ServiceAccount", "serviceaccounts", true, false),
            ResourceType::builtin(
                "",
                "PersistentVolumeClaim",
                "persistentvolumeclaims",
                true,
                true,
            ),
            ResourceType::builtin("coordination.k8s.io", "Lease", "leases", true, false),
            ResourceType::builtin("apps", "Deployment", "deployments", true, true),
            ResourceType::builtin(
                "discovery.k8s.io",
                "EndpointSlice",
                "endpointslices",
                true,
                false,
            ),
            ResourceType::builtin("events.k8s.io", "Event", "events", true, false),
            ResourceType::builtin("rbac.authorization.k8s.io", "Role", "roles", true, false),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "RoleBinding",
                "rolebindings",
                true,
                false,
            ),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "ClusterRole",
                "clusterroles",
                false,
                false,
            ),
            ResourceType::builtin(
                "rbac.authorization.k8s.io",
                "ClusterRoleBinding",
                "clusterrolebindings",
                false,
                false,
            ),
            ResourceType::builtin(
                "certificates.k8s.io",
                "CertificateSigningRequest",
                "certificatesigningrequests",
                false,
                true,
            ),
            ResourceType::builtin(
                "apiextensions.k8s.io",
                "CustomResourceDefinition",
                "customresourcedefinitions",
                false,
                true,
            ),
        ];
        types.extend(
            strait_api::crds()
                .into_iter()
                .filter_map(ResourceType::from_crd),
        );
        Self { types }
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<TypeId> {
        self.types
            .iter()
            .position(|t| t.group == group && t.version == version && t.plural == plural)
    }

    pub fn get(&self, id: TypeId) -> &ResourceType {
        &self.types[id]
    }

    pub fn namespace_type(&self) -> TypeId {
        self.find("", "v1", "namespaces").unwrap_or_default()
    }

    pub fn crd_type(&self) -> Option<TypeId> {
        self.find("apiextensions.k8s.io", "v1", "customresourcedefinitions")
    }

    /// Groups in registration order, each with its one served version.
    pub fn groups(&self) -> Vec<(String, String)> {
        let mut groups: Vec<(String, String)> = Vec::new();
        for t in self.types.iter().filter(|t| !t.group.is_empty()) {
            if !groups.iter().any(|(g, v)| *g == t.group && *v == t.version) {
                groups.push((t.group.clone(), t.version.clone()));
            }
        }
        groups
    }
}
