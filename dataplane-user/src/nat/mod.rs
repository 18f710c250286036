//! The NAT tables: validation of a NatConfiguration spec ([`NatPlan`]), its
//! flattening into sorted disjoint ranges ([`ranges`]) and its atomic
//! application to the pinned arrays the `strait_nat_*` programs search
//! ([`NatTables`]).

mod ranges;
mod tables;

use std::{
    collections::BTreeMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::MapError;
use strait_api::networking::{NatConfigurationSpec, NatDirection};
use strait_common::{nat::NAT_RANGES_PER_TABLE, NatSide};

pub use ranges::TableRange;
pub use tables::{NatApplied, NatTables};

/// Translations of one family on one side that a table always holds: nested
/// prefixes flatten to at most twice as many ranges as there are prefixes.
pub const MAX_TRANSLATIONS_PER_TABLE: usize = NAT_RANGES_PER_TABLE as usize / 2;

/// Why a spec cannot be applied, naming the offending entry
/// (`prefixes[2]`, `addresses[0]`).
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
    #[error("{entry}: {prefix} is already translated on the {side} side by {first}")]
    Duplicate {
        entry: String,
        first: String,
        side: &'static str,
        prefix: String,
    },
    #[error("{count} {family} translations on the {side} side exceed the {max} a table holds")]
    TooManyEntries {
        family: &'static str,
        side: &'static str,
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

/// One validated translation of a prefix on one side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    pub side: NatSide,
    /// The network packets carry before translation (host bits zero).
    pub from: IpAddr,
    /// The network they carry after, same family and prefix length.
    pub to: IpAddr,
    pub prefix_len: u8,
}

impl fmt::Display for Translation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}/{} -> {}/{}",
            self.side.as_str(),
            self.from,
            self.prefix_len,
            self.to,
            self.prefix_len
        )
    }
}

/// A validated NatConfiguration: every translation the tables will hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NatPlan {
    translations: Vec<Translation>,
}

impl NatPlan {
    /// Validates `spec`: CIDR and address syntax, host bits, families and
    /// prefix lengths, and that no prefix is translated twice on one side.
    /// An address mapping becomes two /32 (/128) translations: destination
    /// `remapped → local` and source `local → remapped`.
    pub fn from_spec(spec: &NatConfigurationSpec) -> Result<Self, NatError> {
        let mut translations = Vec::with_capacity(spec.prefixes.len() + 2 * spec.addresses.len());
        // (side, network, len) → the entry that claimed it, for duplicate errors.
        let mut claimed: BTreeMap<(NatSide, IpAddr, u8), String> = BTreeMap::new();
        let mut push = |entry: &str, t: Translation| -> Result<(), NatError> {
            if let Some(first) = claimed.insert((t.side, t.from, t.prefix_len), entry.to_owned()) {
                return Err(NatError::Duplicate {
                    entry: entry.to_owned(),
                    first,
                    side: t.side.as_str(),
                    prefix: format!("{}/{}", t.from, t.prefix_len),
                });
            }
            translations.push(t);
            Ok(())
        };
        for (i, mapping) in spec.prefixes.iter().enumerate() {
            let entry = format!("prefixes[{i}]");
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
            let side = match mapping.direction {
                NatDirection::Destination => NatSide::Destination,
                NatDirection::Source => NatSide::Source,
            };
            push(
                &entry,
                Translation {
                    side,
                    from,
                    to,
                    prefix_len: from_len,
                },
            )?;
        }
        for (i, mapping) in spec.addresses.iter().enumerate() {
            let entry = format!("addresses[{i}]");
            let remapped = parse_address(&entry, "remapped", &mapping.remapped)?;
            let local = parse_address(&entry, "local", &mapping.local)?;
            if remapped.is_ipv4() != local.is_ipv4() {
                return Err(NatError::FamilyMismatch {
                    entry,
                    from: mapping.remapped.clone(),
                    to: mapping.local.clone(),
                });
            }
            let prefix_len = max_prefix_len(remapped);
            push(
                &entry,
                Translation {
                    side: NatSide::Destination,
                    from: remapped,
                    to: local,
                    prefix_len,
                },
            )?;
            push(
                &entry,
                Translation {
                    side: NatSide::Source,
                    from: local,
                    to: remapped,
                    prefix_len,
                },
            )?;
        }
        for side in NatSide::ALL {
            for (family, ipv6) in [("IPv4", false), ("IPv6", true)] {
                let count = translations
                    .iter()
                    .filter(|t| t.side == side && t.from.is_ipv6() == ipv6)
                    .count();
                if count > MAX_TRANSLATIONS_PER_TABLE {
                    return Err(NatError::TooManyEntries {
                        family,
                        side: side.as_str(),
                        count,
                        max: MAX_TRANSLATIONS_PER_TABLE,
                    });
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
    fn a_valid_spec_becomes_one_translation_per_prefix_and_two_per_address() {
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
                "destination 198.19.10.0/24 -> 198.18.10.0/24",
                "source fd00:18::/64 -> fd00:19::/64",
                "destination 198.19.99.1/32 -> 198.18.0.5/32",
                "source 198.18.0.5/32 -> 198.19.99.1/32",
            ]
        );
    }

    #[test]
    fn each_invalid_entry_is_refused_with_its_name_and_problem() {
        let d = NatDirection::Destination;
        let cases: Vec<(NatConfigurationSpec, &str)> = vec![
            (
                spec(vec![prefix(d, "198.19.10.0/24", "198.18.10.0/24"), prefix(d, "198.19.10.0", "198.18.10.0/24")], vec![]),
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
                "addresses[0]: fd00::1 and 198.18.0.1 are not of the same address family",
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
                    vec![prefix(d, "198.19.0.1/32", "198.18.0.9/32")],
                    vec![AddressMapping {
                        remapped: "198.19.0.1".into(),
                        local: "198.18.0.1".into(),
                    }],
                ),
                "addresses[0]: 198.19.0.1/32 is already translated on the destination side by prefixes[0]",
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
