//! `cargo xtask images`: the container images, one per binary, each built
//! from `images/<binary>.Dockerfile` with the repository root as context.
//! `--print` lists exactly the builds, without a container runtime.
use std::{collections::BTreeSet, path::Path};

use anyhow::{bail, Context as _, Result};

use crate::cmd;

/// Every shipped binary, with what runs it.
pub const IMAGES: &[(&str, &str)] = &[
    ("strait-controller", "the module controllers (Deployment)"),
    ("strait-fabric", "the eBPF node agent (DaemonSet)"),
    (
        "strait-gateway",
        "the WireGuard gateway (one Deployment per peer)",
    ),
    ("strait-virtual-kubelet", "one Deployment per VirtualNode"),
    ("strait", "the CLI (kubectl strait)"),
];

/// Where the chart looks for images by default (values.yaml image.registry).
pub const DEFAULT_REGISTRY: &str = "ghcr.io/strait-dev";

pub fn dockerfile(binary: &str) -> String {
    format!("images/{binary}.Dockerfile")
}

/// The build command of each image, as argv.
pub fn builds(registry: &str, tag: &str) -> Vec<Vec<String>> {
    IMAGES
        .iter()
        .map(|(binary, _)| {
            vec![
                "build".to_owned(),
                "--file".to_owned(),
                dockerfile(binary),
                "--tag".to_owned(),
                format!("{registry}/{binary}:{tag}"),
                ".".to_owned(),
            ]
        })
        .collect()
}

pub fn run(print: bool, registry: &str, tag: &str) -> Result<()> {
    for (binary, _) in IMAGES {
        let file = dockerfile(binary);
        if !Path::new(&file).is_file() {
            bail!("{file} is missing: every shipped binary needs its Dockerfile");
        }
    }
    let builds = builds(registry, tag);
    let binaries = workspace_binaries()?;
    let missing: Vec<&str> = IMAGES
        .iter()
        .map(|(binary, _)| *binary)
        .filter(|binary| !binaries.contains(*binary))
        .collect();
    if print {
        for ((binary, what), args) in IMAGES.iter().zip(&builds) {
            println!("# {binary}: {what}");
            if missing.contains(binary) {
                println!("# (no such binary in the workspace yet: this build would fail)");
            }
            println!("docker {}", args.join(" "));
        }
        return Ok(());
    }
    if !missing.is_empty() {
        bail!("binaries not in the workspace yet: {missing:?}; build the others one by one (see --print)");
    }
    let runtime = ["docker", "podman"]
        .into_iter()
        .find(|r| cmd::succeeds(r, &["--version"]))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "no container runtime (docker or podman) found: install one, or use \
                 `cargo xtask images --print` to see the builds"
            )
        })?;
    for args in &builds {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cmd::run(runtime, &args)?;
    }
    Ok(())
}

/// Names of every binary target in the workspace, from `cargo metadata`.
fn workspace_binaries() -> Result<BTreeSet<String>> {
    let metadata = cmd::output("cargo", &["metadata", "--no-deps", "--format-version", "1"])
        .context("cargo metadata failed")?;
    let metadata: serde_json::Value =
        serde_json::from_str(&metadata).context("reading cargo metadata")?;
    Ok(metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter(|t| {
            t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"))
        })
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_image_has_a_multi_stage_dockerfile_building_its_binary() {
        let root = crate::cmd::workspace_root().expect("root");
        for (binary, _) in IMAGES {
            let path = root.join(dockerfile(binary));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(text.contains(" AS build"), "{binary}: no build stage");
            assert!(
                text.contains(&format!("--bin {binary} ")),
                "{binary}: does not build its binary"
            );
            assert!(
                text.contains(&format!("COPY --from=build /out/{binary} ")),
                "{binary}: the runtime stage does not take the built binary"
            );
            assert!(
                text.contains("FROM gcr.io/distroless/"),
                "{binary}: runtime is not distroless"
            );
        }
    }

    #[test]
    fn the_workspace_binaries_are_found() {
        let binaries = workspace_binaries().expect("cargo metadata");
        for binary in [
            "strait-controller",
            "strait-fabric",
            "strait",
            "kubectl-strait",
        ] {
            assert!(binaries.contains(binary), "{binary} not in {binaries:?}");
        }
        assert!(
            !binaries.contains("strait-chart-tests"),
            "a library is not a binary"
        );
    }

    #[test]
    fn printed_builds_name_the_chart_s_images() {
        let builds = builds(DEFAULT_REGISTRY, "0.1.0");
        assert_eq!(builds.len(), IMAGES.len());
        assert!(builds[0].contains(&"ghcr.io/strait-dev/strait-controller:0.1.0".to_owned()));
        assert!(builds[0].contains(&"images/strait-controller.Dockerfile".to_owned()));
        // The chart's default registry is the same.
        let root = crate::cmd::workspace_root().expect("root");
        let values =
            std::fs::read_to_string(root.join("charts/strait/values.yaml")).expect("values.yaml");
        assert!(values.contains(&format!("registry: {DEFAULT_REGISTRY}")));
    }
}
