//! The in-cluster way of running a gateway: the chart's template ConfigMap
//! (`template.yaml`, one or more YAML documents with `${NAME}`-style
//! placeholders) rendered into the objects to apply.

use std::collections::BTreeMap;

use kube::{api::DynamicObject, core::GroupVersionKind};

/// ConfigMap (key [`TEMPLATE_KEY`]) a GatewayServer is rendered from when it
/// names no `spec.templateRef`.
pub const SERVER_TEMPLATE: &str = "strait-gateway-server-template";
/// Same for a GatewayClient.
pub const CLIENT_TEMPLATE: &str = "strait-gateway-client-template";
pub const TEMPLATE_KEY: &str = "template.yaml";

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("the template uses ${{{0}}}, which has no value for this gateway")]
    UnknownPlaceholder(String),
    #[error("the template has a `${{` without a closing `}}`")]
    Unclosed,
    #[error("document {index} of the rendered template is not a Kubernetes object: {source}")]
    Yaml {
        index: usize,
        #[source]
        source: serde_norway::Error,
    },
    #[error("document {index} of the rendered template has no {field}")]
    Missing { index: usize, field: &'static str },
}

/// Replaces every `${KEY}` by its value; an unknown key is an error rather
/// than left in place, so a template/controller mismatch is reported.
pub fn substitute(
    template: &str,
    values: &BTreeMap<&str, String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or(TemplateError::Unclosed)?;
        let key = &after[..end];
        let value = values
            .get(key)
            .ok_or_else(|| TemplateError::UnknownPlaceholder(key.to_owned()))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// One object of a rendered template, with what is needed to apply it.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub gvk: GroupVersionKind,
    pub namespace: Option<String>,
    pub name: String,
    pub object: DynamicObject,
}

/// Substitutes and splits the template into its objects (empty documents skipped).
pub fn render(
    template: &str,
    values: &BTreeMap<&str, String>,
) -> Result<Vec<Rendered>, TemplateError> {
    let text = substitute(template, values)?;
    let mut objects = Vec::new();
    for (index, document) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let value: Option<serde_json::Value> = serde::Deserialize::deserialize(document)
            .map_err(|source| TemplateError::Yaml { index, source })?;
        let Some(value) = value.filter(|v| !v.is_null()) else {
            continue;
        };
        let object: DynamicObject =
            serde_json::from_value(value).map_err(|e| TemplateError::Yaml {
                index,
                source: serde::de::Error::custom(e),
            })?;
        let types = object.types.clone().ok_or(TemplateError::Missing {
            index,
            field: "apiVersion/kind",
        })?;
        let (group, version) = match types.api_version.split_once('/') {
            Some((group, version)) => (group.to_owned(), version.to_owned()),
            None => (String::new(), types.api_version.clone()),
        };
        let name = object.metadata.name.clone().ok_or(TemplateError::Missing {
            index,
            field: "metadata.name",
        })?;
        objects.push(Rendered {
            gvk: GroupVersionKind::gvk(&group, &version, &types.kind),
            namespace: object.metadata.namespace.clone(),
            name,
            object,
        });
    }
    Ok(objects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> BTreeMap<&'static str, String> {
        BTreeMap::from([("NAME", "to-b".to_owned()), ("PORT", "51840".to_owned())])
    }

    #[test]
    fn placeholders_are_replaced_and_documents_split() {
        let template = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: gw-${NAME}\n  namespace: strait\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: gw-${NAME}\nspec:\n  ports:\n    - port: ${PORT}\n";
        let objects = render(template, &values()).expect("renders");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].gvk.kind, "Deployment");
        assert_eq!(objects[0].gvk.group, "apps");
        assert_eq!(objects[0].name, "gw-to-b");
        assert_eq!(objects[0].namespace.as_deref(), Some("strait"));
        assert_eq!(objects[1].gvk.group, "");
        assert_eq!(objects[1].object.data["spec"]["ports"][0]["port"], 51840);
    }

    #[test]
    fn an_unknown_placeholder_is_an_error() {
        let error = substitute("x: ${ENDPOINT}", &values()).expect_err("unknown");
        assert!(error.to_string().contains("${ENDPOINT}"), "{error}");
        assert!(matches!(
            substitute("x: ${NAME", &values()),
            Err(TemplateError::Unclosed)
        ));
    }
}
