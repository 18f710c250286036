//! The condition every Strait status carries, and the one way to update it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Whether a condition holds.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One aspect of an object's current state, in the Kubernetes convention
/// (`kubectl wait --for=condition=<type>` works on it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// What the condition is about, in CamelCase (for example `NetworkReady`).
    #[serde(rename = "type")]
    pub type_: String,
    /// Whether the condition holds: True, False or Unknown.
    pub status: ConditionStatus,
    /// Why the condition is in its status, as a CamelCase word that tools can match on.
    pub reason: String,
    /// Details for a person: what is wrong and, when possible, how to fix it.
    #[serde(default)]
    pub message: String,
    /// When the status last changed (not when the condition was last written).
    pub last_transition_time: Time,
    /// The metadata.generation of the object this condition was computed from;
    /// older than the current generation means the controller has not caught up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// A condition as a reconciler computes it, before it is merged into a status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    pub type_: &'a str,
    pub status: ConditionStatus,
    pub reason: &'a str,
    pub message: String,
}

/// Merges `update` into `conditions`. The transition time moves only when the
/// status changes, so it says how long the current state has lasted. Returns
/// whether anything changed, so callers can skip a no-op status write.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    observed_generation: Option<i64>,
    now: &Time,
) -> bool {
    let new = |last_transition_time: Time| Condition {
        type_: update.type_.to_owned(),
        status: update.status,
        reason: update.reason.to_owned(),
        message: update.message.clone(),
        last_transition_time,
        observed_generation,
    };
    match conditions.iter_mut().find(|c| c.type_ == update.type_) {
        Some(existing) => {
            let since = if existing.status == update.status {
                existing.last_transition_time.clone()
            } else {
                now.clone()
            };
            let merged = new(since);
            let changed = *existing != merged;
            *existing = merged;
            changed
        }
        None => {
            conditions.push(new(now.clone()));
            true
        }
    }
}

/// What one writer applies of a `status.conditions` list that merges by
/// `type` under server-side apply (several controllers share it, each with
/// its own field manager): the writer's existing conditions of the updated
/// types with `updates` merged in, and nothing of the other writers', which
/// a stale copy would otherwise overwrite. A type the writer stops applying
/// is removed by the API server. Also returns whether anything changed.
pub fn owned_conditions<'a>(
    existing: &[Condition],
    updates: impl IntoIterator<Item = ConditionUpdate<'a>>,
    observed_generation: Option<i64>,
    now: &Time,
) -> (Vec<Condition>, bool) {
    let mut owned = Vec::new();
    let mut changed = false;
    for update in updates {
        if let Some(current) = find_condition(existing, update.type_) {
            owned.push(current.clone());
        }
        changed |= set_condition(&mut owned, update, observed_generation, now);
    }
    (owned, changed)
}

/// The condition of `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and True.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_writer_applies_only_its_own_types_and_keeps_their_transition_times() {
        let mut existing = Vec::new();
        for type_ in ["NetworkReady", "AuthenticationReady"] {
            set_condition(
                &mut existing,
                typed(type_, ConditionStatus::False),
                None,
                &at(1),
            );
        }
        let (owned, changed) = owned_conditions(
            &existing,
            [typed("NetworkReady", ConditionStatus::False)],
            None,
            &at(5),
        );
        assert!(!changed);
        assert_eq!(owned, existing[..1]);
        let (owned, changed) = owned_conditions(
            &existing,
            [
                typed("NetworkReady", ConditionStatus::True),
                typed("GatewayKeysExchanged", ConditionStatus::True),
            ],
            Some(2),
            &at(7),
        );
        assert!(changed);
        let types: Vec<_> = owned.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["NetworkReady", "GatewayKeysExchanged"]);
        assert!(owned.iter().all(|c| c.last_transition_time == at(7)));
    }

    fn at(seconds: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(seconds).expect("valid timestamp"))
    }

    fn typed(type_: &str, status: ConditionStatus) -> ConditionUpdate<'_> {
        ConditionUpdate {
            type_,
            status,
            reason: "Because",
            message: String::new(),
        }
    }

    fn update(status: ConditionStatus, reason: &str) -> ConditionUpdate<'_> {
        ConditionUpdate {
            type_: "NetworkReady",
            status,
            reason,
            message: format!("because {reason}"),
        }
    }

    #[test]
    fn transition_time_moves_only_when_status_changes() {
        let mut conditions = Vec::new();
        assert!(set_condition(
            &mut conditions,
            update(ConditionStatus::False, "GatewayNotReady"),
            Some(1),
            &at(10)
        ));
        // Same status, new reason and generation: updated, time kept.
        assert!(set_condition(
            &mut conditions,
            update(ConditionStatus::False, "HandshakeFailing"),
            Some(2),
            &at(20)
        ));
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(
            (
                conditions[0].reason.as_str(),
                conditions[0].observed_generation
            ),
            ("HandshakeFailing", Some(2))
        );
        // Status flips: time moves.
        assert!(set_condition(
            &mut conditions,
            update(ConditionStatus::True, "Connected"),
            Some(2),
            &at(30)
        ));
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(conditions.len(), 1);
        assert!(is_condition_true(&conditions, "NetworkReady"));
    }

    #[test]
    fn identical_update_reports_no_change() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            update(ConditionStatus::True, "Connected"),
            Some(3),
            &at(1),
        );
        let before = conditions.clone();
        assert!(!set_condition(
            &mut conditions,
            update(ConditionStatus::True, "Connected"),
            Some(3),
            &at(99)
        ));
        assert_eq!(conditions, before);
    }

    #[test]
    fn conditions_of_other_types_are_left_alone() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            update(ConditionStatus::True, "Connected"),
            None,
            &at(1),
        );
        let other = ConditionUpdate {
            type_: "AuthenticationReady",
            status: ConditionStatus::False,
            reason: "TenantPending",
            message: String::new(),
        };
        set_condition(&mut conditions, other, None, &at(2));
        assert_eq!(conditions.len(), 2);
        assert!(is_condition_true(&conditions, "NetworkReady"));
        assert!(!is_condition_true(&conditions, "AuthenticationReady"));
        assert!(find_condition(&conditions, "OffloadingReady").is_none());
    }
}
