//! Resource amounts as integers (thousandths of a unit), so capacity and
//! quota checks are exact sums and comparisons.

use std::collections::BTreeMap;

use k8s_openapi::{
    api::core::v1::{Container, PodSpec},
    apimachinery::pkg::api::resource::Quantity,
};
use strait_api::authentication::ResourceList;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not a resource quantity (expected forms such as 2, 500m, 1.5, 8Gi or 1e3)")]
pub struct QuantityError(pub String);

/// Parses a Kubernetes quantity into thousandths of its unit (1 → 1000,
/// 250m → 250, 1Ki → 1,024,000). Fractions below a thousandth round up, as
/// the API server rounds requests.
pub fn parse_milli(text: &str) -> Result<i128, QuantityError> {
    let error = || QuantityError(text.to_owned());
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let (scale_num, scale_den): (i128, i128) = match suffix {
        "" => (1000, 1),
        "m" => (1, 1),
        "k" => (1_000_000, 1),
        "M" => (1_000_000_000, 1),
        "G" => (1_000_000_000_000, 1),
        "T" => (1_000_000_000_000_000, 1),
        "P" => (1_000_000_000_000_000_000, 1),
        "E" => (1_000_000_000_000_000_000_000, 1),
        "Ki" => (1000 << 10, 1),
        "Mi" => (1000 << 20, 1),
        "Gi" => (1000 << 30, 1),
        "Ti" => (1000 << 40, 1),
        "Pi" => (1000 << 50, 1),
        "Ei" => (1000 << 60, 1),
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: u32 = exponent[1..].parse().map_err(|_| error())?;
            if power > 18 {
                return Err(error());
            }
            (1000 * 10i128.pow(power), 1)
        }
        _ => return Err(error()),
    };
    let negative = number.starts_with('-');
    let digits = number.trim_start_matches(['+', '-']);
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if whole.is_empty() && fraction.is_empty() || fraction.len() > 18 {
        return Err(error());
    }
    let parse = |s: &str| -> Result<i128, QuantityError> {
        if s.is_empty() {
            Ok(0)
        } else {
            s.parse::<i128>().map_err(|_| error())
        }
    };
    let whole = parse(whole)?;
    let fraction_den = 10i128.pow(fraction.len() as u32);
    let fraction = parse(fraction)?;
    let numerator = (whole * fraction_den + fraction) * scale_num;
    let denominator = fraction_den * scale_den;
    let magnitude = (numerator + denominator - 1) / denominator;
    Ok(if negative { -magnitude } else { magnitude })
}

/// Amounts by resource name, in thousandths.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources(pub BTreeMap<String, i128>);

impl Resources {
    pub fn from_list(list: &ResourceList) -> Result<Self, QuantityError> {
        list.iter()
            .map(|(name, q)| Ok((name.clone(), parse_milli(&q.0)?)))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    pub fn add(&mut self, other: &Resources) {
        for (name, amount) in &other.0 {
            *self.0.entry(name.clone()).or_default() += amount;
        }
    }

    /// The resources of `self` that `other` does not fit in, with what is
    /// missing; resources `self` does not name are unlimited.
    pub fn shortfall(&self, other: &Resources) -> Vec<(String, i128, i128)> {
        other
            .0
            .iter()
            .filter_map(|(name, wanted)| {
                let limit = *self.0.get(name)?;
                (*wanted > limit).then(|| (name.clone(), *wanted, limit))
            })
            .collect()
    }

    /// `self - used`, never below zero, for every resource `self` names.
    pub fn minus(&self, used: &Resources) -> Resources {
        Resources(
            self.0
                .iter()
                .map(|(name, total)| {
                    let left = total - used.0.get(name).copied().unwrap_or(0);
                    (name.clone(), left.max(0))
                })
                .collect(),
        )
    }

    pub fn to_list(&self) -> BTreeMap<String, Quantity> {
        self.0
            .iter()
            .map(|(name, milli)| (name.clone(), format_milli(*milli)))
            .collect()
    }
}

/// The shortest exact quantity: `2`, `1500m`.
pub fn format_milli(milli: i128) -> Quantity {
    if milli % 1000 == 0 {
        Quantity((milli / 1000).to_string())
    } else {
        Quantity(format!("{milli}m"))
    }
}

/// What a pod asks for, as the scheduler counts it: the sum of its
/// containers' requests (a limit stands in for a missing request, as the
/// API server defaults it), at least the largest init container's, plus one
/// `pods`.
pub fn pod_requests(spec: &PodSpec) -> Result<Resources, QuantityError> {
    let of = |container: &Container| -> Result<Resources, QuantityError> {
        let resources = container.resources.as_ref();
        let mut total = Resources::default();
        if let Some(limits) = resources.and_then(|r| r.limits.as_ref()) {
            total = Resources::from_list(limits)?;
        }
        if let Some(requests) = resources.and_then(|r| r.requests.as_ref()) {
            total.0.extend(Resources::from_list(requests)?.0);
        }
        Ok(total)
    };
    let mut sum = Resources::default();
    for container in &spec.containers {
        sum.add(&of(container)?);
    }
    for init in spec.init_containers.iter().flatten() {
        for (name, amount) in of(init)?.0 {
            let entry = sum.0.entry(name).or_default();
            *entry = (*entry).max(amount);
        }
    }
    *sum.0.entry("pods".to_owned()).or_default() += 1000;
    Ok(sum)
}

/// "cpu 2 (1.5 left)" style text for messages.
pub fn describe_shortfall(shortfall: &[(String, i128, i128)]) -> String {
    shortfall
        .iter()
        .map(|(name, wanted, left)| {
            format!(
                "{name}: needs {} but {} left",
                format_milli(*wanted).0,
                format_milli(*left).0
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse_exactly() {
        let cases = [
            ("2", 2000),
            ("250m", 250),
            ("1.5", 1500),
            ("0.1", 100),
            ("1Ki", 1_024_000),
            ("8Gi", 8 * 1000 * (1 << 30)),
            ("1k", 1_000_000),
            ("1e3", 1_000_000),
            ("0.0001", 1),
            ("-1", -1000),
        ];
        for (text, milli) in cases {
            assert_eq!(parse_milli(text), Ok(milli), "{text}");
        }
        for bad in ["", "abc", "1x", "1.2.3", "Gi", "1e99"] {
            assert!(parse_milli(bad).is_err(), "{bad} must be refused");
        }
    }

    #[test]
    fn pod_requests_sum_containers_and_count_the_pod() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({
            "containers": [
                {"name": "a", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}},
                {"name": "b", "resources": {"limits": {"cpu": "1"}}},
            ],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "2"}}}],
        }))
        .expect("spec");
        let requests = pod_requests(&spec).expect("valid");
        assert_eq!(requests.0["cpu"], 2000, "the init container's 2 > 1.5");
        assert_eq!(requests.0["memory"], 1000 << 30);
        assert_eq!(requests.0["pods"], 1000);
    }

    #[test]
    fn shortfall_names_what_does_not_fit() {
        let limit = Resources::from_list(&[("cpu".to_owned(), Quantity("2".into()))].into())
            .expect("valid");
        let mut wanted = Resources::default();
        wanted.0.insert("cpu".into(), 2500);
        wanted.0.insert("memory".into(), 5);
        assert_eq!(limit.shortfall(&wanted), vec![("cpu".into(), 2500, 2000)]);
        assert_eq!(limit.minus(&wanted).to_list()["cpu"], Quantity("0".into()));
        wanted.0.insert("cpu".into(), 1500);
        assert!(limit.shortfall(&wanted).is_empty());
        assert_eq!(
            limit.minus(&wanted).to_list()["cpu"],
            Quantity("500m".into())
        );
    }
}
