//! `strait offload namespace`: writes the namespace's NamespaceOffloading.
use std::io::Write;

use serde_json::{json, Value};

use crate::{
    cli::{NamespaceMapping, OffloadNamespaceArgs, PodOffloading},
    cluster,
    error::encode_error,
    Error,
};

/// The one NamespaceOffloading of a namespace has this name.
pub const NAME: &str = "offloading";

pub fn namespace_offloading(args: &OffloadNamespaceArgs) -> Result<Value, Error> {
    let selected = matches!(
        args.namespace_mapping_strategy,
        NamespaceMapping::SelectedName
    );
    if selected != args.remote_namespace_name.is_some() {
        return Err(Error::failed(
            "--remote-namespace-name goes with --namespace-mapping-strategy selected-name, and only with it",
            "pass both, or neither",
        ));
    }
    let mut spec = json!({
        "namespaceMappingStrategy": match args.namespace_mapping_strategy {
            NamespaceMapping::EnforceSameName => "EnforceSameName",
            NamespaceMapping::DefaultName => "DefaultName",
            NamespaceMapping::SelectedName => "SelectedName",
        },
        "podOffloadingStrategy": match args.pod_offloading_strategy {
            PodOffloading::Local => "Local",
            PodOffloading::Remote => "Remote",
            PodOffloading::LocalAndRemote => "LocalAndRemote",
        },
    });
    if let Some(name) = &args.remote_namespace_name {
        spec["remoteNamespaceName"] = json!(name);
    }
    if !args.selector.is_empty() {
        let expressions: Vec<Value> = args
            .selector
            .iter()
            .map(|(key, value)| json!({"key": key, "operator": "In", "values": [value]}))
            .collect();
        spec["clusterSelector"] = json!({"nodeSelectorTerms": [{"matchExpressions": expressions}]});
    }
    Ok(json!({
        "apiVersion": "offloading.strait.dev/v1beta1",
        "kind": "NamespaceOffloading",
        "metadata": { "name": NAME, "namespace": args.namespace },
        "spec": spec,
    }))
}

pub async fn run(
    client: &kube::Client,
    args: &OffloadNamespaceArgs,
    out: &mut dyn Write,
) -> Result<(), Error> {
    let object = namespace_offloading(args)?;
    if args.dry_run {
        let yaml = serde_norway::to_string(&object).map_err(|e| encode_error("YAML", e))?;
        write!(out, "{yaml}")?;
        return Ok(());
    }
    cluster::apply(client, &object, "this cluster").await?;
    writeln!(
        out,
        "applied {}; follow it with: kubectl -n {} get namespaceoffloading {NAME}",
        cluster::describe(&object),
        args.namespace
    )?;
    Ok(())
}
