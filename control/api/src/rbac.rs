//! RBAC rules one module needs another to grant: the only place where the
//! rights a module's calls need are written down for the module that
//! grants them (modules meet only through CRs and this contract).

use serde_json::{json, Value};

use crate::names::group;

/// One RBAC policy rule, as a constant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
    /// Only these objects; empty for all.
    pub resource_names: &'static [&'static str],
}

impl Rule {
    /// The rule as `rbac.authorization.k8s.io/v1` writes it.
    pub fn to_policy_rule(&self) -> Value {
        let mut rule = json!({"apiGroups": [self.api_group], "resources": self.resources, "verbs": self.verbs});
        if !self.resource_names.is_empty() {
            rule["resourceNames"] = json!(self.resource_names);
        }
        rule
    }
}

/// What the offloading module does through a consumer's Identity (control
/// plane or ResourceSlice) in the consumer's tenant namespace on the
/// provider: apply its NamespaceMap (server-side apply that may create it:
/// create and patch) and read it back when a VirtualNode is drained. The
/// namespaces it gets are granted by the provider's offloading module.
pub const OFFLOADING_IN_TENANT_NAMESPACE: &[Rule] = &[Rule {
    api_group: group::OFFLOADING,
    resources: &["namespacemaps"],
    verbs: &["get", "create", "patch"],
    resource_names: &[],
}];

/// What the network module does through a consumer's control-plane Identity
/// in the consumer's tenant namespace on the provider
/// (control/network/src/gateway/{key_exchange,peering_gateways}.rs): create,
/// follow and remove the provider's GatewayServer for the peering, find a
/// hand-made gateway there, read the provider's key, write (and remove) its
/// own as `remote-<gateway>`.
pub const NETWORK_IN_TENANT_NAMESPACE: &[Rule] = &[
    Rule {
        api_group: group::NETWORKING,
        resources: &["gatewayservers"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
    },
    Rule {
        api_group: group::NETWORKING,
        resources: &["gatewayclients"],
        verbs: &["get", "list", "watch"],
        resource_names: &[],
    },
    Rule {
        api_group: group::NETWORKING,
        resources: &["publickeys"],
        verbs: &[
            "get", "list", "watch", "create", "update", "patch", "delete",
        ],
        resource_names: &[],
    },
];

/// `rules` as a Role's `rules`.
pub fn policy_rules(rules: &[Rule]) -> Vec<Value> {
    rules.iter().map(Rule::to_policy_rule).collect()
}
