//! `strait info`: this cluster's ID, its network ranges and peers' ranges as
//! the network module sees them, and versions.
use std::io::Write;

use k8s_openapi::api::apps::v1::Deployment;
use kube::{api::ListParams, Api, Client};
use strait_api::{ipam::Network, names::SYSTEM_NAMESPACE, networking::Configuration};

use crate::{
    cluster,
    error::{next_for, Error},
};

pub async fn run(client: &Client, out: &mut dyn Write) -> Result<(), Error> {
    let here = "this cluster";
    match cluster::cluster_id(client, here).await {
        Ok(id) => writeln!(out, "cluster ID:          {id}")?,
        Err(Error::Failed { problem, next }) => writeln!(
            out,
            "cluster ID:          unknown: {problem}\n  next: {next}"
        )?,
        Err(e) => return Err(e),
    }
    let server = match client.apiserver_version().await {
        Ok(v) => v.git_version,
        Err(e) => {
            let next = next_for(&e, here);
            return Err(Error::api("reading the API server's version", e, next));
        }
    };
    let controller = match Api::<Deployment>::namespaced(client.clone(), SYSTEM_NAMESPACE)
        .get_opt("strait-controller")
        .await
    {
        Ok(Some(deployment)) => deployment
            .spec
            .and_then(|s| s.template.spec)
            .and_then(|s| s.containers.into_iter().next())
            .and_then(|c| c.image)
            .unwrap_or_else(|| "no image".to_owned()),
        Ok(None) | Err(_) => format!("not found in namespace {SYSTEM_NAMESPACE}"),
    };
    writeln!(out, "strait CLI:          {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(out, "Kubernetes:          {server}")?;
    writeln!(out, "strait-controller:   {controller}")?;

    let list_failed = |what: &str, e: kube::Error| {
        let next = next_for(&e, here);
        Error::api(format!("listing {what}"), e, next)
    };
    let configurations = Api::<Configuration>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| list_failed("Configurations", e))?;
    if let Some(local) = configurations
        .items
        .iter()
        .find_map(|c| c.spec.local.as_ref())
    {
        writeln!(
            out,
            "local CIDRs:         pod {} external {}",
            join(&local.cidr.pod),
            join(&local.cidr.external)
        )?;
    }
    writeln!(out, "\npeers (network Configurations):")?;
    if configurations.items.is_empty() {
        writeln!(out, "  none")?;
    }
    for c in &configurations.items {
        let seen = c.status.as_ref().and_then(|s| s.remote.as_ref());
        writeln!(
            out,
            "  {}/{}: pod {} external {} -> seen here as pod {} external {}",
            c.metadata.namespace.as_deref().unwrap_or_default(),
            c.metadata.name.as_deref().unwrap_or_default(),
            join(&c.spec.remote.cidr.pod),
            join(&c.spec.remote.cidr.external),
            seen.map_or("(pending)".to_owned(), |s| join(&s.cidr.pod)),
            seen.map_or("(pending)".to_owned(), |s| join(&s.cidr.external)),
        )?;
    }
    let networks = Api::<Network>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| list_failed("Networks", e))?;
    writeln!(out, "\nallocations (IPAM Networks):")?;
    if networks.items.is_empty() {
        writeln!(out, "  none")?;
    }
    for n in &networks.items {
        let allocated = n
            .status
            .as_ref()
            .map(|s| join(&s.cidrs))
            .filter(|s| s != "-");
        writeln!(
            out,
            "  {}/{}: asked {} -> {}",
            n.metadata.namespace.as_deref().unwrap_or_default(),
            n.metadata.name.as_deref().unwrap_or_default(),
            join(&n.spec.cidrs),
            allocated.unwrap_or_else(|| "(pending)".to_owned()),
        )?;
    }
    Ok(())
}

fn join(cidrs: &[String]) -> String {
    if cidrs.is_empty() {
        "-".to_owned()
    } else {
        cidrs.join(",")
    }
}
