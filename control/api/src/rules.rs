//! CEL rules used by more than one kind, with messages a person understands.
//!
//! The API server evaluates them at admission; the tests evaluate the same
//! strings with a CEL interpreter, so a rule that ships is a rule that ran.

use kube::core::{Message, Rule};

/// Cluster IDs: a DNS label, because they name namespaces and labels.
pub const CLUSTER_ID_PATTERN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";

/// A field that can be set once and never changed afterwards.
pub fn immutable(what: &str) -> Rule {
    Rule::new("self == oldSelf").message(Message::Message(format!("{what} is immutable once set")))
}

/// A list that may start empty (an allocation not made yet) but never changes
/// once it has entries.
pub fn immutable_once_set(what: &str) -> Rule {
    Rule::new("size(oldSelf) == 0 || self == oldSelf")
        .message(Message::Message(format!("{what} is immutable once set")))
}

/// A list of CIDRs, each valid, at most one per IP family (dual-stack).
pub fn cidr_list(what: &str) -> Rule {
    Rule::new("self.all(c, isCIDR(c)) && self.all(c, self.exists_one(d, cidr(d).ip().family() == cidr(c).ip().family()))")
        .message(Message::Message(format!(
            "{what} must list CIDRs such as 10.0.0.0/16 or fd00::/64, at most one IPv4 and one IPv6"
        )))
}

/// A list of IP addresses, each valid, at most one per IP family.
pub fn ip_list(what: &str) -> Rule {
    Rule::new(
        "self.all(a, isIP(a)) && self.all(a, self.exists_one(b, ip(b).family() == ip(a).family()))",
    )
    .message(Message::Message(format!(
        "{what} must list IP addresses such as 10.0.0.1 or fd00::1, at most one IPv4 and one IPv6"
    )))
}

/// An optional https:// URL.
pub fn url(what: &str) -> Rule {
    Rule::new("isURL(self) && url(self).getScheme() in ['https', 'http']").message(
        Message::Message(format!(
            "{what} must be an http(s) URL such as https://10.0.0.1:6443"
        )),
    )
}

/// Resource quantities that must not be negative.
pub fn non_negative_quantities(what: &str) -> Rule {
    Rule::new("self.all(k, isQuantity(self[k]) && quantity(self[k]).sign() >= 0)").message(
        Message::Message(format!(
            "every amount in {what} must be a quantity of zero or more, such as 4, 500m or 8Gi"
        )),
    )
}

/// Conditions are a map keyed by type, so server-side apply merges them per type.
pub fn conditions_merge() -> kube::core::ListMerge {
    kube::core::ListMerge::Map(vec!["type".into()])
}

/// One CIDR.
pub fn cidr(what: &str) -> Rule {
    Rule::new("isCIDR(self)").message(Message::Message(format!(
        "{what} must be a CIDR such as 10.0.0.0/16 or fd00::/64"
    )))
}

/// One IP address.
pub fn ip(what: &str) -> Rule {
    Rule::new("isIP(self)").message(Message::Message(format!(
        "{what} must be an IP address such as 10.0.0.1 or fd00::1"
    )))
}

/// Hosts: IP addresses or DNS names.
pub fn hosts(what: &str) -> Rule {
    Rule::new(r"self.all(h, isIP(h) || h.matches('^([a-z0-9]([-a-z0-9]*[a-z0-9])?\\.)*[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))")
        .message(Message::Message(format!("every entry of {what} must be an IP address or a DNS name")))
}

/// A Go-style duration such as 1.5ms.
pub fn duration(what: &str) -> Rule {
    Rule::new(r"self.matches('^([0-9]+(\\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$')").message(
        Message::Message(format!("{what} must be a duration such as 850us or 1.2ms")),
    )
}

/// nodePort is only meaningful for NodePort services.
pub fn node_port_needs_node_port_service() -> Rule {
    Rule::new("!has(self.nodePort) || self.serviceType == 'NodePort'")
        .message("nodePort can only be set when serviceType is NodePort")
}

/// A Connection belongs to a gateway.
pub fn gateway_kind() -> Rule {
    Rule::new("self.kind in ['GatewayServer', 'GatewayClient']")
        .message("gatewayRef must point to a GatewayServer or a GatewayClient")
}

/// No destination CIDR appears in two routes.
pub fn unique_destinations() -> Rule {
    Rule::new("self.all(r, r.destinations.all(d, self.exists_one(o, d in o.destinations)))")
        .message("a destination CIDR may appear in one route only")
}

/// Prefix remapping keeps host bits, so both sides have the same length and family.
pub fn same_prefix_length() -> Rule {
    Rule::new("!isCIDR(self.from) || !isCIDR(self.to) || (cidr(self.from).prefixLength() == cidr(self.to).prefixLength() && cidr(self.from).ip().family() == cidr(self.to).ip().family())")
        .message("from and to must have the same IP family and prefix length (a /16 remaps to a /16)")
}

/// Single-address remapping stays within one family.
pub fn same_ip_family() -> Rule {
    Rule::new("!isIP(self.remapped) || !isIP(self.local) || ip(self.remapped).family() == ip(self.local).family()")
        .message("remapped and local must be of the same IP family")
}

/// An IP is allocated from a Network.
pub fn network_kind() -> Rule {
    Rule::new("self.kind == 'Network'").message("networkRef must point to a Network")
}

/// remoteNamespaceName goes with SelectedName, and only with it.
pub fn selected_name_needs_name() -> Rule {
    Rule::new("(self.namespaceMappingStrategy == 'SelectedName') == has(self.remoteNamespaceName)")
        .message("remoteNamespaceName is required with namespaceMappingStrategy SelectedName and not allowed otherwise")
}

/// A namespace has one NamespaceOffloading.
pub fn singleton_offloading() -> Rule {
    Rule::new("self.metadata.name == 'offloading'")
        .message("a namespace has a single NamespaceOffloading and it must be named offloading")
}
