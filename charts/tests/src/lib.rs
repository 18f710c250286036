//! Test support for the Helm chart in `charts/strait`: renders and lints it
//! with Helm's own library (PyPI `helm-python-sdk`, installed by `cargo
//! xtask bootstrap` into a venv under `$CARGO_HOME`), splits the result into
//! objects, and checks each one against the Kubernetes API types.
use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::Deserialize;
use serde_json::Value;

mod validate;
pub use validate::validate_object;

/// Release name and namespace every test renders with (and the golden file).
pub const RELEASE: &str = "strait";
pub const NAMESPACE: &str = "strait";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Helm SDK at {0}: run `cargo xtask bootstrap` (or set STRAIT_HELM_PYTHON to a python with helm-python-sdk)")]
    NoHelm(PathBuf),
    #[error("running {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("helm.py failed ({status}): {stderr}")]
    Helper { status: String, stderr: String },
    #[error("helm.py answered something unexpected: {0}")]
    Answer(#[from] serde_json::Error),
    /// Helm refused the values or a template failed: the message is Helm's.
    #[error("helm refused: {0}")]
    Refused(String),
    #[error("{template}: not YAML: {source}")]
    Yaml {
        template: String,
        source: serde_norway::Error,
    },
    #[error("{object}: {problem}")]
    Invalid { object: String, problem: String },
}

/// The chart's directory in this repository.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../strait")
}

/// Helm's library, reached through a Python interpreter that has it.
pub struct Helm {
    python: PathBuf,
}

/// One lint finding: severity 1 info, 2 warning, 3 error.
#[derive(Debug, Deserialize)]
pub struct LintMessage {
    pub severity: u8,
    pub path: String,
    pub error: String,
}

#[derive(Debug, Deserialize)]
pub struct LintReport {
    pub messages: Vec<LintMessage>,
    #[serde(default)]
    pub errors: Vec<String>,
}

/// A rendered chart: template path → text.
#[derive(Debug, Deserialize)]
pub struct Rendered {
    pub manifests: BTreeMap<String, String>,
}

impl Helm {
    /// The venv bootstrap made (`$CARGO_HOME/strait-helm-venv`), or
    /// `STRAIT_HELM_PYTHON`.
    pub fn locate() -> Result<Self, Error> {
        let python = match std::env::var_os("STRAIT_HELM_PYTHON") {
            Some(python) => PathBuf::from(python),
            None => {
                let cargo_home = std::env::var_os("CARGO_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
                    .unwrap_or_default();
                cargo_home.join("strait-helm-venv/bin/python")
            }
        };
        if !python.exists() {
            return Err(Error::NoHelm(python));
        }
        Ok(Self { python })
    }

    fn call(&self, request: &Value) -> Result<Value, Error> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("helm.py");
        let spawn_error = |source| Error::Spawn {
            program: self.python.display().to_string(),
            source,
        };
        let mut child = Command::new(&self.python)
            .arg(&script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(request.to_string().as_bytes())
                .map_err(spawn_error)?;
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if !output.status.success() {
            return Err(Error::Helper {
                status: output.status.to_string(),
                stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            });
        }
        Ok(serde_json::from_slice(&output.stdout)?)
    }

    /// Renders the chart with `values` over its defaults, validating them
    /// against values.schema.json as `helm install` does.
    pub fn render(&self, values: &Value) -> Result<Rendered, Error> {
        let answer = self.call(&serde_json::json!({
            "op": "render",
            "chart": chart_dir(),
            "values": values,
            "release": RELEASE,
            "namespace": NAMESPACE,
        }))?;
        if let Some(error) = answer.get("error").and_then(Value::as_str) {
            return Err(Error::Refused(error.to_owned()));
        }
        Ok(serde_json::from_value(answer)?)
    }

    /// `helm lint --strict` with `values`.
    pub fn lint(&self, values: &Value) -> Result<LintReport, Error> {
        let answer = self.call(&serde_json::json!({
            "op": "lint",
            "chart": chart_dir(),
            "values": values,
            "namespace": NAMESPACE,
        }))?;
        Ok(serde_json::from_value(answer)?)
    }
}

impl Rendered {
    /// Every object, in template order; NOTES.txt and empty documents left out.
    pub fn objects(&self) -> Result<Vec<Value>, Error> {
        let mut objects = Vec::new();
        for (template, text) in self.manifests() {
            for document in serde_norway::Deserializer::from_str(text) {
                let object = Value::deserialize(document).map_err(|source| Error::Yaml {
                    template: template.to_owned(),
                    source,
                })?;
                if !object.is_null() {
                    objects.push(object);
                }
            }
        }
        Ok(objects)
    }

    fn manifests(&self) -> impl Iterator<Item = (&str, &str)> {
        self.manifests
            .iter()
            .filter(|(template, _)| !template.ends_with("NOTES.txt"))
            .map(|(t, m)| (t.as_str(), m.as_str()))
    }

    /// The whole render as one YAML stream, as `helm template` prints it:
    /// what the golden file holds.
    pub fn to_stream(&self) -> String {
        let mut stream = String::new();
        for (template, text) in self.manifests() {
            if text.trim().is_empty() {
                continue;
            }
            stream.push_str(&format!("# Source: {template}\n"));
            stream.push_str(text.trim_start_matches('\n'));
            if !stream.ends_with('\n') {
                stream.push('\n');
            }
            stream.push_str("---\n");
        }
        stream
    }
}

/// The object with `kind` and `metadata.name`, if rendered.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}

/// Fills a workload template's `${PLACEHOLDER}`s, as the controllers do.
pub fn expand_placeholders(template: &str, values: &[(&str, &str)]) -> String {
    values
        .iter()
        .fold(template.to_owned(), |text, (key, value)| {
            text.replace(&format!("${{{key}}}"), value)
        })
}
