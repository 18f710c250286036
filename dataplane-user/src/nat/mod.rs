//! The NAT tables: validation of NatConfiguration specs ([`NatPlan`]), their
//! flattening into sorted disjoint ranges ([`ranges`]), their atomic
//! application to the pinned arrays the `strait_nat_*` programs search
//! ([`NatTables`]), and following NatConfiguration CRs ([`follow`]).
//!
//! Every mapping is a stateless bidirectional translation on the gateway's
//! interface toward the peer, so it fills two tables (see
//! strait_common::nat and [`TableId`]): its forward translation, keyed by
//! `from`, on the way out, and its reverse, keyed by `to`, on the way in.

pub mod follow;
mod ranges;
mod tables;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::MapError;
use strait_api::networking::{NatConfigurationSpec, NatDirection};
use strait_common::{nat::NAT_RANGES_PER_TABLE, Direction, NatField};

pub use ranges::TableRange;
use ranges::{address_bits, host_mask, numeric};
pub use tables::{NatApplied, NatTables};

/// Translations of one family and kind that a table always holds: nested
/// prefixes flatten to at most twice as many ranges as there are prefixes.
pub const MAX_TRANSLATIONS_PER_TABLE: usize = NAT_RANGES_PER_TABLE as usize / 2;

/// One of the four tables of a generation: the address (`field`) it
/// translates in packets going `direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableId {
    pub direction: Direction,
    pub field: NatField,
}

impl TableId {
    pub const ALL: [TableId; 4] = [
        TableId::new(Direction::Egress, NatField::Destination),
        TableId::new(Direction::Egress, NatField::Source),
        TableId::new(Direction::Ingress, NatField::Source),
        TableId::new(Direction::Ingress, NatField::Destination),
    ];

    pub const fn new(direction: Direction, field: NatField) -> Self {
        TableId { direction, field }
    }

    /// The mappings that fill the table, and whether with their reverse
    /// translation (keyed by `to`, giving `from`): a Destination mapping
    /// rewrites the destination going out and the source coming in, a
    /// Source mapping the source going out and the destination coming in.
    pub const fn filled_by(self) -> (MappingKind, bool) {
        match (self.direction, self.field) {
            (Direction::Egress, NatField::Destination) => (MappingKind::Destination, false),
            (Direction::Egress, NatField::Source) => (MappingKind::Source, false),
            (Direction::Ingress, NatField::Source) => (MappingKind::Destination, true),
            (Direction::Ingress, NatField::Destination) => (MappingKind::Source, true),
        }
    }
}

impl fmt::Display for TableId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.direction.as_str(), self.field.as_str())
    }
}

/// A mapping's kind ([`NatDirection`] of the API), ordered for lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MappingKind {
    /// Remaps a peer range: what this cluster sends to `from` goes to `to`.
    Destination,
    /// Exposes a local range: what leaves from `from` appears as `to`.
    Source,
}

impl MappingKind {
    pub const ALL: [MappingKind; 2] = [MappingKind::Destination, MappingKind::Source];

    pub const fn as_str(self) -> &'static str {
        match self {
            MappingKind::Destination => "Destination",
            MappingKind::Source => "Source",
        }
    }
}

impl From<NatDirection> for MappingKind {
    fn from(direction: NatDirection) -> Self {
        match direction {
            NatDirection::Destination => MappingKind::Destination,
            NatDirection::Source => MappingKind::Source,
        }
    }
}

/// Why a spec cannot be applied, naming the offending entry
/// (`prefixes[2]`, `addresses[0]`, prefixed by the CR when several are merged).
#[derive(Debug, thiserror::Error)]
pub enum NatError {
    #[error("{entry}.{field}: {value:?} is not a CIDR such as 198.18.0.0/16 or fd00::/64")]
    InvalidCidr {
        entry: String,
        field: &'static str,
        value: String,
    },
    #[error("{entry}.{field}: {value:?} is not an IP address such as 198.18.0.1 or fd00::1")]
    InvalidAddress {
        entry: String,
        field: &'static str,
        value: String,
    },
    #[error("{entry}.{field}: {value} has host bits set; the prefix is {network}")]
    HostBitsSet {
        entry: String,
        field: &'static str,
        value: String,
        network: String,
    },
    #[error("{entry}: {from} and {to} are not of the same address family")]
    FamilyMismatch {
        entry: String,
        from: String,
        to: String,
    },
    #[error("{entry}: {from} and {to} have different prefix lengths")]
    PrefixLengthMismatch {
        entry: String,
        from: String,
        to: String,
    },
    #[error("{entry}: {prefix} already has a {kind} mapping, in {first}")]
    Duplicate {
        entry: String,
        first: String,
        kind: &'static str,
        prefix: String,
    },
    #[error(transparent)]
    AmbiguousReverse(Box<Ambiguity>),
    #[error("{count} {family} {kind} mappings exceed the {max} a table holds")]
    TooManyEntries {
        family: &'static str,
        kind: &'static str,
        count: usize,
        max: usize,
    },
    #[error("map {name} was pinned by another version of Strait: {problem}; detach and remove the pin directory, then attach again")]
    IncompatibleMap { name: &'static str, problem: String },
    #[error("mapping map {name} into memory")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("map {name}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("the active NAT generation is {0}, which no program would read")]
    CorruptGeneration(u32),
    #[error("locking {path} against concurrent applies")]
    Lock {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Two mappings of one kind whose `to` ranges overlap.
#[derive(Debug, thiserror::Error)]
#[error(
    "{entry}: its `to` {to} overlaps {other_to}, the `to` of {other}: a packet arriving from \
     the peer with its {field} address in both would translate back two ways; {kind} \
     mappings (addresses count as Source) need disjoint `to` ranges"
)]
pub struct Ambiguity {
    pub entry: String,
    pub to: String,
    pub other: String,
    pub other_to: String,
    pub field: &'static str,
    pub kind: &'static str,
}

/// Why a configuration file cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum NatConfigError {
    #[error("not a YAML document")]
    Yaml(#[source] serde_norway::Error),
    #[error(transparent)]
    Rejected(#[from] strait_api::admission::Rejected),
    #[error("not a NatConfiguration spec")]
    Spec(#[source] serde_json::Error),
    #[error("strait-api defines no NatConfiguration CRD")]
    MissingCrd,
}

/// Reads a NatConfiguration from YAML: either a whole object (`apiVersion`,
/// `kind`, `metadata`, `spec`), admitted exactly as the API server would
/// admit it (schema and CEL rules), or a bare spec (`prefixes`, `addresses`).
pub fn parse_config(yaml: &str) -> Result<NatConfigurationSpec, NatConfigError> {
    let doc: serde_json::Value = serde_norway::from_str(yaml).map_err(NatConfigError::Yaml)?;
    let spec = if doc.get("kind").is_some() || doc.get("apiVersion").is_some() {
        let crd = strait_api::crds()
            .into_iter()
            .find(|c| c.spec.names.kind == "NatConfiguration")
            .ok_or(NatConfigError::MissingCrd)?;
        let admitted = strait_api::admission::admit(&crd, &doc, None)?;
        admitted
            .get("spec")
            .cloned()
            .unwrap_or_else(|| serde_json::Value::Object(Default::default()))
    } else {
        doc
    };
    serde_json::from_value(spec).map_err(NatConfigError::Spec)
}

/// One validated mapping of a prefix (an address mapping is a Source
/// mapping of a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub kind: MappingKind,
    /// The network packets carry on this side of the gateway (host bits zero).
    pub from: IpAddr,
    /// The network they carry on the peer's side, same family and prefix length.
    pub to: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} <-> {}/{}",
            self.kind.as_str(),
            self.from,
            self.prefix_len,
            self.to,
            self.prefix_len
        )
    }
}

/// A validated set of NatConfiguration specs: every translation the tables
/// will hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatPlan {
    translations: Vec<Translation>,
}

/// A `to` range already claimed, for the ambiguity check.
struct ClaimedTarget {
    /// Position of the entry in the specs.
    order: usize,
    first: u128,
    last: u128,
    entry: String,
    cidr: String,
}

impl NatPlan {
    /// Validates one spec; see [`NatPlan::from_specs`].
    pub fn from_spec(spec: &NatConfigurationSpec) -> Result<Self, NatError> {
        Self::from_specs([("", spec)])
    }

    /// Validates specs as one table, merged in the order given: CIDR and
    /// address syntax, host bits, families and prefix lengths, no prefix
    /// mapped twice by mappings of one kind, and no two `to` ranges of one
    /// kind overlapping (their reverse translation would be ambiguous).
    /// Errors name the entry, after the spec's label when it has one.
    pub fn from_specs<'a>(
        specs: impl IntoIterator<Item = (&'a str, &'a NatConfigurationSpec)>,
    ) -> Result<Self, NatError> {
        let mut translations = Vec::new();
        // (kind, network, len) → the entry that claimed it, for duplicate errors.
        let mut claimed: BTreeMap<(MappingKind, IpAddr, u8), String> = BTreeMap::new();
        let mut targets: BTreeMap<(MappingKind, bool), Vec<ClaimedTarget>> = BTreeMap::new();
        let mut push = |entry: String, t: Translation| -> Result<(), NatError> {
            if let Some(first) = claimed.insert((t.kind, t.from, t.prefix_len), entry.clone()) {
                return Err(NatError::Duplicate {
                    entry,
                    first,
                    kind: t.kind.as_str(),
                    prefix: format!("{}/{}", t.from, t.prefix_len),
                });
            }
            let first = numeric(t.to);
            targets
                .entry((t.kind, t.to.is_ipv6()))
                .or_default()
                .push(ClaimedTarget {
                    order: translations.len(),
                    first,
                    last: first | host_mask(address_bits(t.to) - u32::from(t.prefix_len)),
                    entry,
                    cidr: format!("{}/{}", t.to, t.prefix_len),
                });
            translations.push(t);
            Ok(())
        };
        for (label, spec) in specs {
            let name = |entry: String| {
                if label.is_empty() {
                    entry
                } else {
                    format!("{label} {entry}")
                }
            };
            for (i, mapping) in spec.prefixes.iter().enumerate() {
                let entry = name(format!("prefixes[{i}]"));
                let (from, from_len) = parse_cidr(&entry, "from", &mapping.from)?;
                let (to, to_len) = parse_cidr(&entry, "to", &mapping.to)?;
                if from.is_ipv4() != to.is_ipv4() {
                    return Err(NatError::FamilyMismatch {
                        entry,
                        from: mapping.from.clone(),
                        to: mapping.to.clone(),
                    });
                }
                if from_len != to_len {
                    return Err(NatError::PrefixLengthMismatch {
                        entry,
                        from: mapping.from.clone(),
                        to: mapping.to.clone(),
                    });
                }
                push(
                    entry,
                    Translation {
                        kind: mapping.direction.into(),
                        from,
                        to,
                        prefix_len: from_len,
                    },
                )?;
            }
            for (i, mapping) in spec.addresses.iter().enumerate() {
                let entry = name(format!("addresses[{i}]"));
                let local = parse_address(&entry, "local", &mapping.local)?;
                let remapped = parse_address(&entry, "remapped", &mapping.remapped)?;
                if remapped.is_ipv4() != local.is_ipv4() {
                    return Err(NatError::FamilyMismatch {
                        entry,
                        from: mapping.local.clone(),
                        to: mapping.remapped.clone(),
                    });
                }
                push(
                    entry,
                    Translation {
                        kind: MappingKind::Source,
                        from: local,
                        to: remapped,
                        prefix_len: max_prefix_len(local),
                    },
                )?;
            }
        }
        for ((kind, ipv6), mut ranges) in targets {
            let family = if ipv6 { "IPv6" } else { "IPv4" };
            if ranges.len() > MAX_TRANSLATIONS_PER_TABLE {
                return Err(NatError::TooManyEntries {
                    family,
                    kind: kind.as_str(),
                    count: ranges.len(),
                    max: MAX_TRANSLATIONS_PER_TABLE,
                });
            }
            // Sorted by start, each range must begin after every earlier
            // one ends; the one reaching furthest is the one to report.
            ranges.sort_by(|a, b| a.first.cmp(&b.first).then(b.last.cmp(&a.last)));
            let mut widest: Option<&ClaimedTarget> = None;
            for range in &ranges {
                if let Some(earlier) = widest.filter(|w| range.first <= w.last) {
                    // Name the entry that comes later in the specs.
                    let (entry, other) = if range.order > earlier.order {
                        (range, earlier)
                    } else {
                        (earlier, range)
                    };
                    return Err(NatError::AmbiguousReverse(Box::new(Ambiguity {
                        entry: entry.entry.clone(),
                        to: entry.cidr.clone(),
                        other: other.entry.clone(),
                        other_to: other.cidr.clone(),
                        field: match kind {
                            MappingKind::Destination => "source",
                            MappingKind::Source => "destination",
                        },
                        kind: kind.as_str(),
                    })));
                }
                if widest.is_none_or(|w| range.last > w.last) {
                    widest = Some(range);
                }
            }
        }
        Ok(NatPlan { translations })
    }

    pub fn translations(&self) -> &[Translation] {
        &self.translations
    }
}

const fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn parse_address(entry: &str, field: &'static str, value: &str) -> Result<IpAddr, NatError> {
    value.parse().map_err(|_| NatError::InvalidAddress {
        entry: entry.to_owned(),
        field,
        value: value.to_owned(),
    })
}

/// Parses `addr/len`, refusing host bits: `198.18.10.7/24` is most likely a
/// typo, and translating it as 198.18.10.0/24 would hide that.
fn parse_cidr(entry: &str, field: &'static str, value: &str) -> Result<(IpAddr, u8), NatError> {
    let invalid = || NatError::InvalidCidr {
        entry: entry.to_owned(),
        field,
        value: value.to_owned(),
    };
    let (addr, len) = value.split_once('/').ok_or_else(invalid)?;
    let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
    if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid());
    }
    let len: u8 = len.parse().map_err(|_| invalid())?;
    if len > max_prefix_len(addr) {
        return Err(invalid());
    }
    let network = mask(addr, len);
    if network != addr {
        return Err(NatError::HostBitsSet {
            entry: entry.to_owned(),
            field,
            value: value.to_owned(),
            network: format!("{network}/{len}"),
        });
    }
    Ok((addr, len))
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

#[cfg(test)]
mod tests {
    use strait_api::networking::{AddressMapping, PrefixMapping};

    use super::*;

    fn prefix(direction: NatDirection, from: &str, to: &str) -> PrefixMapping {
        PrefixMapping {
            direction,
            from: from.into(),
            to: to.into(),
        }
    }

    fn spec(prefixes: Vec<PrefixMapping>, addresses: Vec<AddressMapping>) -> NatConfigurationSpec {
        NatConfigurationSpec {
            prefixes,
            addresses,
        }
    }

    #[test]
    fn a_valid_spec_becomes_one_translation_per_entry() {
        let plan = NatPlan::from_spec(&spec(
            vec![
                prefix(
                    NatDirection::Destination,
                    "198.19.10.0/24",
                    "198.18.10.0/24",
                ),
                prefix(NatDirection::Source, "fd00:18::/64", "fd00:19::/64"),
            ],
            vec![AddressMapping {
                remapped: "198.19.99.1".into(),
                local: "198.18.0.5".into(),
            }],
        ))
        .expect("valid spec");
        let shown: Vec<String> = plan.translations().iter().map(|t| t.to_string()).collect();
        assert_eq!(
            shown,
            [
                "Destination 198.19.10.0/24 <-> 198.18.10.0/24",
                "Source fd00:18::/64 <-> fd00:19::/64",
                "Source 198.18.0.5/32 <-> 198.19.99.1/32",
            ]
        );
    }

    #[test]
    fn each_invalid_entry_is_refused_with_its_name_and_problem() {
        let d = NatDirection::Destination;
        let cases: Vec<(NatConfigurationSpec, &str)> = vec![
            (
                spec(
                    vec![
                        prefix(d, "198.19.10.0/24", "198.18.10.0/24"),
                        prefix(d, "198.19.10.0", "198.18.10.0/24"),
                    ],
                    vec![],
                ),
                "prefixes[1].from: \"198.19.10.0\" is not a CIDR",
            ),
            (
                spec(vec![prefix(d, "198.19.10.0/33", "198.18.10.0/24")], vec![]),
                "prefixes[0].from: \"198.19.10.0/33\" is not a CIDR",
            ),
            (
                spec(vec![prefix(d, "198.19.10.0/24", "198.18.10.7/24")], vec![]),
                "prefixes[0].to: 198.18.10.7/24 has host bits set; the prefix is 198.18.10.0/24",
            ),
            (
                spec(vec![prefix(d, "198.19.10.0/24", "fd00::/24")], vec![]),
                "prefixes[0]: 198.19.10.0/24 and fd00::/24 are not of the same address family",
            ),
            (
                spec(vec![prefix(d, "198.19.10.0/24", "198.18.0.0/16")], vec![]),
                "prefixes[0]: 198.19.10.0/24 and 198.18.0.0/16 have different prefix lengths",
            ),
            (
                spec(
                    vec![],
                    vec![AddressMapping {
                        remapped: "fd00::1".into(),
                        local: "198.18.0.1".into(),
                    }],
                ),
                "addresses[0]: 198.18.0.1 and fd00::1 are not of the same address family",
            ),
            (
                spec(
                    vec![],
                    vec![AddressMapping {
                        remapped: "198.19.0.1/32".into(),
                        local: "198.18.0.1".into(),
                    }],
                ),
                "addresses[0].remapped: \"198.19.0.1/32\" is not an IP address",
            ),
            (
                spec(
                    vec![
                        prefix(d, "198.19.0.1/32", "198.18.0.9/32"),
                        prefix(NatDirection::Source, "198.18.0.1/32", "198.19.0.9/32"),
                    ],
                    vec![AddressMapping {
                        remapped: "198.19.0.1".into(),
                        local: "198.18.0.1".into(),
                    }],
                ),
                "addresses[0]: 198.18.0.1/32 already has a Source mapping, in prefixes[1]",
            ),
        ];
        for (spec, expected) in cases {
            let err = NatPlan::from_spec(&spec).expect_err(expected);
            assert!(
                err.to_string().starts_with(expected),
                "expected {expected:?}, got {err}"
            );
        }
    }

    #[test]
    fn overlapping_to_ranges_of_one_kind_are_refused_as_ambiguous() {
        let d = NatDirection::Destination;
        let s = NatDirection::Source;
        // Two peer ranges remapped onto one real range: a packet from
        // 198.18.0.7 would come back as 198.19.10.7 or as 198.19.20.7.
        let same_target = spec(
            vec![
                prefix(d, "198.19.10.0/24", "198.18.0.0/24"),
                prefix(d, "198.19.20.0/24", "198.18.0.0/24"),
            ],
            vec![],
        );
        let err = NatPlan::from_spec(&same_target).expect_err("ambiguous");
        assert!(
            err.to_string().starts_with(
                "prefixes[1]: its `to` 198.18.0.0/24 overlaps 198.18.0.0/24, the `to` of prefixes[0]: \
                 a packet arriving from the peer with its source address in both"
            ),
            "{err}"
        );
        // An exposed address inside an exposed range.
        let nested = spec(
            vec![prefix(s, "fd00:18::/64", "fd00:19::/64")],
            vec![AddressMapping {
                remapped: "fd00:19::9".into(),
                local: "fd00:30::5".into(),
            }],
        );
        let err = NatPlan::from_spec(&nested).expect_err("ambiguous");
        assert!(
            matches!(&err, NatError::AmbiguousReverse(a)
                if a.entry == "addresses[0]" && a.other == "prefixes[0]" && a.field == "destination"),
            "{err}"
        );
        // Across merged specs, entries are named with their spec.
        let a = spec(vec![prefix(d, "198.19.10.0/24", "198.18.10.0/24")], vec![]);
        let b = spec(vec![prefix(d, "198.19.0.0/16", "198.18.0.0/16")], vec![]);
        let err = NatPlan::from_specs([("strait/peer-a", &a), ("strait/peer-b", &b)])
            .expect_err("ambiguous");
        assert!(
            err.to_string().starts_with(
                "strait/peer-b prefixes[0]: its `to` 198.18.0.0/16 overlaps 198.18.10.0/24, the `to` of strait/peer-a prefixes[0]"
            ),
            "{err}"
        );
        // The same `to` for a Destination and a Source mapping is no
        // ambiguity: they are reversed on different addresses.
        let both = spec(
            vec![
                prefix(d, "198.19.10.0/24", "198.18.10.0/24"),
                prefix(s, "198.18.20.0/24", "198.18.10.0/24"),
            ],
            vec![],
        );
        assert_eq!(
            NatPlan::from_spec(&both)
                .expect("valid")
                .translations()
                .len(),
            2
        );
        // Nested `from` prefixes stay allowed (longest prefix wins).
        let nested_from = spec(
            vec![
                prefix(d, "198.19.0.0/17", "198.18.0.0/17"),
                prefix(d, "198.19.10.7/32", "198.18.200.1/32"),
            ],
            vec![],
        );
        assert!(NatPlan::from_spec(&nested_from).is_ok());
    }

    #[test]
    fn configs_are_read_as_admitted_objects_or_bare_specs() {
        let object = r#"
apiVersion: networking.strait.dev/v1beta1
kind: NatConfiguration
metadata: {name: peer-a, namespace: strait}
spec:
  prefixes:
    - {direction: Destination, from: 198.19.10.0/24, to: 198.18.10.0/24}
"#;
        let spec = parse_config(object).expect("a valid object");
        assert_eq!(spec.prefixes.len(), 1);
        let bare = "addresses: [{remapped: 198.19.0.1, local: 198.18.0.1}]\n";
        assert_eq!(parse_config(bare).expect("a bare spec").addresses.len(), 1);
        let refused = object.replace("198.18.10.0/24", "198.18.0.0/16");
        let err = parse_config(&refused).expect_err("prefix lengths differ");
        assert!(matches!(err, NatConfigError::Rejected(_)), "{err}");
        assert!(matches!(
            parse_config("prefixes: 7"),
            Err(NatConfigError::Spec(_))
        ));
    }

    #[test]
    fn more_entries_than_a_generation_holds_are_refused() {
        let addresses = (0..=MAX_TRANSLATIONS_PER_TABLE)
            .map(|i| AddressMapping {
                remapped: Ipv4Addr::from(0xc613_0000 + i as u32).to_string(),
                local: Ipv4Addr::from(0xc612_0000 + i as u32).to_string(),
            })
            .collect();
        let err = NatPlan::from_spec(&spec(vec![], addresses)).expect_err("too many");
        assert!(
            matches!(err, NatError::TooManyEntries { family: "IPv4", .. }),
            "{err}"
        );
    }
}
