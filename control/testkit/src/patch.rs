//! The non-apply patch types: JSON merge patch (RFC 7386) and JSON patch (RFC 6902).

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Apply,
}

impl PatchType {
    /// Strategic merge patch is served as a JSON merge patch: the server has
    /// no Go struct tags to merge lists by key, so lists are replaced whole.
    pub fn from_content_type(content_type: &str) -> Result<Self, ApiError> {
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type {
            "application/merge-patch+json" | "application/strategic-merge-patch+json" => {
                Ok(Self::Merge)
            }
            "application/json-patch+json" => Ok(Self::Json),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => Ok(Self::Apply),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies a merge or JSON patch in `body` to `target`.
pub fn apply(patch_type: PatchType, target: &Value, body: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the patch is not valid JSON: {e}")))?;
    let mut patched = target.clone();
    match patch_type {
        PatchType::Merge => {
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            json_patch::merge(&mut patched, &patch);
        }
        PatchType::Json => {
            let operations: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("the JSON patch is malformed: {e}")))?;
            apply_operations(&mut patched, operations)?;
        }
        PatchType::Apply => {
            return Err(ApiError::bad_request(
                "server-side apply is not a JSON patch (internal routing error)",
            ))
        }
    }
    if !patched.is_object() {
        return Err(ApiError::bad_request("the patch must leave an object"));
    }
    Ok(patched)
}

/// Applies RFC 6902 operations one at a time (on a copy, so a failure changes
/// nothing) with the API server's reading of `test`: a null value matches an
/// absent field. kube-rs' finalizer helper relies on that to add the first
/// finalizer.
fn apply_operations(document: &mut Value, operations: json_patch::Patch) -> Result<(), ApiError> {
    for operation in operations.0 {
        if let json_patch::PatchOperation::Test(test) = &operation {
            if test.value.is_null() && document.pointer(test.path.as_str()).is_none() {
                continue;
            }
        }
        json_patch::patch(document, std::slice::from_ref(&operation)).map_err(|e| {
            ApiError::invalid(
                "",
                "",
                "",
                &[format!("<patch>: the JSON patch failed: {e}")],
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes() {
        let target = json!({"spec": {"a": 1, "b": 2}});
        let patched = apply(
            PatchType::Merge,
            &target,
            br#"{"spec": {"a": 3, "b": null}}"#,
        )
        .expect("valid patch");
        assert_eq!(patched, json!({"spec": {"a": 3}}));
    }

    #[test]
    fn json_patch_operations_and_failed_test() {
        let target = json!({"spec": {"items": [1, 2]}});
        let body = br#"[{"op": "add", "path": "/spec/items/-", "value": 3},
                        {"op": "replace", "path": "/spec/items/0", "value": 0}]"#;
        let patched = apply(PatchType::Json, &target, body).expect("valid patch");
        assert_eq!(patched, json!({"spec": {"items": [0, 2, 3]}}));
        let failing = br#"[{"op": "test", "path": "/spec/items/0", "value": 9}]"#;
        assert_eq!(
            apply(PatchType::Json, &target, failing).unwrap_err().code,
            422
        );
        assert_eq!(
            apply(PatchType::Json, &target, b"{not json")
                .unwrap_err()
                .code,
            400
        );
        assert_eq!(
            apply(PatchType::Json, &target, br#"{"op": 1}"#)
                .unwrap_err()
                .code,
            400
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml; charset=utf-8"),
            Ok(PatchType::Apply)
        );
        assert_eq!(
            PatchType::from_content_type("text/plain").unwrap_err().code,
            415
        );
    }
}
