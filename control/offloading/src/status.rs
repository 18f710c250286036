//! Writing statuses and conditions the same way in every controller.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{
    api::{Patch, PatchParams},
    Api, Resource,
};
use serde::{de::DeserializeOwned, Serialize};
use strait_api::{
    condition::{set_condition, ConditionUpdate},
    Condition, ConditionStatus,
};

use crate::Error;

pub fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// Merges condition updates into `conditions` (transition times move only
/// on a status change).
pub fn merge_conditions(
    conditions: &mut Vec<Condition>,
    updates: Vec<ConditionUpdate<'_>>,
    generation: Option<i64>,
) {
    let now = now();
    for update in updates {
        set_condition(conditions, update, generation, &now);
    }
}

pub fn condition<'a>(
    type_: &'a str,
    holds: bool,
    reason: &'a str,
    message: impl Into<String>,
) -> ConditionUpdate<'a> {
    ConditionUpdate {
        type_,
        status: if holds {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        },
        reason,
        message: message.into(),
    }
}

/// Server-side applies `status` to the object's status subresource.
pub async fn apply_status<K>(
    api: &Api<K>,
    name: &str,
    manager: &str,
    status: &impl Serialize,
) -> Result<(), Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}

/// `Ok(None)` for a 404, so "already gone" is not an error.
pub fn ignore_not_found<T>(result: Result<T, kube::Error>) -> Result<Option<T>, kube::Error> {
    match result {
        Ok(value) => Ok(Some(value)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error),
    }
}
