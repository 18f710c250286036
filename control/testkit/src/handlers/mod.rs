//! One module per group of verbs; each handler gets a `Call` (what the
//! request addresses and carries) and returns a `Reply` or an `ApiError`.

pub mod delete;
pub mod read;
pub mod write;

use std::collections::HashMap;

use serde_json::Value;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::registry::ResourceType;
use crate::routes::Target;
use crate::selectors::{FieldSelector, LabelSelector, Selectors};
use crate::watch::Chunk;

/// The query string, decoded; a repeated key keeps its last value.
#[derive(Debug, Clone, Default)]
pub struct Query(HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        Self(
            form_urlencoded::parse(query.unwrap_or("").as_bytes())
                .into_owned()
                .collect(),
        )
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    /// `true`/`1` as the API server reads booleans; absent is `None`.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).map(|v| matches!(v, "true" | "1"))
    }

    pub fn dry_run(&self) -> bool {
        self.get("dryRun") == Some("All")
    }

    pub fn selectors(&self) -> Result<Selectors, ApiError> {
        Ok(Selectors {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""))?,
        })
    }
}

/// Everything a handler needs to know about one request.
pub struct Call<'a> {
    pub target: &'a Target,
    pub resource: &'a ResourceType,
    pub query: &'a Query,
    pub body: &'a [u8],
    pub content_type: &'a str,
    /// The Accept header: kubectl asks for Tables to print.
    pub accept: &'a str,
    /// The field manager writes are recorded under: `fieldManager`, else the
    /// client's user agent up to the first '/' (as the API server does).
    pub manager: String,
}

impl Call<'_> {
    pub fn namespace(&self) -> &str {
        self.target.namespace.as_deref().unwrap_or("")
    }

    pub fn name(&self) -> &str {
        self.target.name.as_deref().unwrap_or("")
    }

    pub fn not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(
            &self.resource.group,
            &self.resource.plural,
            &self.resource.group_resource(),
            name,
        )
    }

    pub fn stale(&self) -> ApiError {
        ApiError::stale(
            &self.resource.group,
            &self.resource.plural,
            &self.resource.group_resource(),
            self.name(),
        )
    }

    /// The request body as a JSON object.
    pub fn json_body(&self) -> Result<Value, ApiError> {
        let value: Value = serde_json::from_slice(self.body).map_err(|e| {
            ApiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?;
        if !value.is_object() {
            return Err(ApiError::bad_request(
                "the request body must be a JSON object",
            ));
        }
        Ok(value)
    }
}

pub enum Reply {
    Json(u16, Value),
    Watch(mpsc::Receiver<Chunk>),
    /// A plain-text body (container logs).
    Text(String),
}
