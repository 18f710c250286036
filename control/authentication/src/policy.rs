//! How a provider answers a ResourceSlice: a pluggable `Policy`, by default
//! `FractionOfFree` (grant what was asked, up to a fraction of what is free).

use std::collections::BTreeMap;

/// Amounts by resource name, in milli-units.
pub type Amounts = BTreeMap<String, i128>;

/// A policy's answer to one slice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// What is granted, per asked resource (possibly less than asked, or 0).
    pub granted: Amounts,
    /// `Granted`, `PartiallyGranted` or `NoCapacity`: the condition reason.
    pub reason: &'static str,
    pub message: String,
}

impl Decision {
    pub fn accepted(&self) -> bool {
        self.reason != "NoCapacity"
    }
}

/// Decides grants from what was asked and what the provider has free (its
/// Nodes' allocatable minus its Pods' requests minus other slices' grants).
pub trait Policy: Send + Sync {
    fn decide(&self, asked: &Amounts, free: &Amounts) -> Decision;
}

/// Grants each resource up to `fraction` of what is free.
#[derive(Debug, Clone, Copy)]
pub struct FractionOfFree {
    fraction: f64,
}

impl FractionOfFree {
    /// `fraction` is clamped into (0, 1].
    pub fn new(fraction: f64) -> Self {
        let fraction = if fraction.is_finite() && fraction > 0.0 {
            fraction.min(1.0)
        } else {
            1.0
        };
        Self { fraction }
    }
}

impl Policy for FractionOfFree {
    fn decide(&self, asked: &Amounts, free: &Amounts) -> Decision {
        let mut granted = Amounts::new();
        let mut short = Vec::new();
        for (name, &want) in asked {
            let share =
                (free.get(name).copied().unwrap_or(0).max(0) as f64 * self.fraction) as i128;
            let give = want.min(share).max(0);
            if give < want {
                short.push(name.as_str());
            }
            granted.insert(name.clone(), give);
        }
        let nothing = !asked.is_empty() && asked.iter().all(|(n, &w)| w > 0 && granted[n] == 0);
        let percent = (self.fraction * 100.0).round();
        let (reason, message) = if nothing {
            (
                "NoCapacity",
                format!("nothing asked for is free on the provider (policy: up to {percent}% of free capacity); ask for less or free capacity there"),
            )
        } else if short.is_empty() {
            ("Granted", "granted as asked".to_owned())
        } else {
            (
                "PartiallyGranted",
                format!(
                    "granted less than asked for {} (policy: up to {percent}% of free capacity)",
                    short.join(", ")
                ),
            )
        };
        Decision {
            granted,
            reason,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amounts(items: &[(&str, i128)]) -> Amounts {
        items.iter().map(|(n, v)| ((*n).to_owned(), *v)).collect()
    }

    #[test]
    fn grants_up_to_the_fraction_of_free() {
        let policy = FractionOfFree::new(0.5);
        let free = amounts(&[("cpu", 8000), ("memory", 16_000)]);
        let all = policy.decide(&amounts(&[("cpu", 2000)]), &free);
        assert_eq!((all.reason, all.granted["cpu"]), ("Granted", 2000));
        let some = policy.decide(&amounts(&[("cpu", 6000), ("memory", 1000)]), &free);
        assert_eq!(some.reason, "PartiallyGranted");
        assert_eq!(some.granted, amounts(&[("cpu", 4000), ("memory", 1000)]));
        let none = policy.decide(&amounts(&[("nvidia.com/gpu", 1000)]), &free);
        assert_eq!((none.reason, none.accepted()), ("NoCapacity", false));
    }
}
