//! The `strait` CLI (also `kubectl strait`): preflight and chart values,
//! declarative peering, status and info. Every cluster write is a CR the
//! controllers act on; nothing here does a controller's work.
use std::io::Write;

use clap::{CommandFactory, FromArgMatches};

pub mod cli;
pub mod cluster;
pub mod error;
pub mod info;
pub mod install;
pub mod network;
pub mod offload;
pub mod peer;
pub mod status;

pub use error::Error;

use cli::{Cli, Command, NetworkCommand, OffloadCommand};

/// Entry point of both binaries; `name` is how the user called us.
pub async fn main_as(name: &'static str) -> i32 {
    let command = Cli::command().name(name).bin_name(name);
    let cli = match Cli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let stdout = std::io::stdout();
    match run(cli, &mut stdout.lock()).await {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("error: {e}");
            1
        }
    }
}

pub async fn run(cli: Cli, out: &mut dyn Write) -> Result<(), Error> {
    let connect = || cluster::connect(cli.kubeconfig.as_deref(), cli.context.as_deref());
    match &cli.command {
        Command::Install(args) => {
            let values = install::run(&install::Host::probe(), args, &mut std::io::stderr())?;
            match &args.output {
                Some(path) => {
                    std::fs::write(path, &values)?;
                    writeln!(out, "values written to {}", path.display())?;
                }
                None => write!(out, "{values}")?,
            }
            eprintln!("next: helm install strait charts/strait -n strait --create-namespace -f <these values>");
            Ok(())
        }
        Command::Peer(args) => peer_command(args, out).await,
        Command::Unpeer(args) => unpeer_command(args, out).await,
        Command::Status(args) => {
            let client = connect().await?;
            let list = kube::Api::<strait_api::core::ForeignCluster>::all(client)
                .list(&Default::default())
                .await
                .map_err(|e| {
                    let next = error::next_for(&e, "this cluster");
                    Error::api("listing ForeignClusters", e, next)
                })?;
            let text = status::render(&status::summarize(&list.items), args.output)?;
            write!(out, "{text}")?;
            Ok(())
        }
        Command::Info => info::run(&connect().await?, out).await,
        Command::Offload {
            command: OffloadCommand::Namespace(args),
        } => {
            if args.dry_run {
                // No cluster needed to print the object.
                let object = offload::namespace_offloading(args)?;
                let yaml =
                    serde_norway::to_string(&object).map_err(|e| error::encode_error("YAML", e))?;
                write!(out, "{yaml}")?;
                return Ok(());
            }
            offload::run(&connect().await?, args, out).await
        }
        Command::Network {
            command: NetworkCommand::Test { remote },
        } => network::test(&connect().await?, remote.as_deref(), out).await,
        Command::Completion { shell } => {
            let mut command = Cli::command();
            clap_complete::generate(*shell, &mut command, "strait", out);
            Ok(())
        }
    }
}

async fn peer_command(args: &cli::PeerArgs, out: &mut dyn Write) -> Result<(), Error> {
    let provider_kubeconfig =
        std::fs::read_to_string(&args.provider_kubeconfig).map_err(|e| Error::Kubeconfig {
            path: args.provider_kubeconfig.display().to_string(),
            problem: e.to_string(),
            next: "pass the path of the provider's kubeconfig file".to_owned(),
        })?;
    let modules = peer::module_selection(&args.modules);
    if !args.resource_slice.is_empty() && !modules.authentication {
        return Err(Error::failed(
            "--resource-slice needs the authentication module",
            "add authentication to --modules, or drop --resource-slice",
        ));
    }
    let needs_clusters =
        !args.dry_run || args.consumer_cluster_id.is_none() || args.provider_cluster_id.is_none();
    let clients = if needs_clusters {
        Some((
            cluster::connect(Some(&args.consumer_kubeconfig), None).await?,
            cluster::connect(Some(&args.provider_kubeconfig), None).await?,
        ))
    } else {
        None
    };
    let (consumer_id, provider_id) = match (
        &args.consumer_cluster_id,
        &args.provider_cluster_id,
        &clients,
    ) {
        (Some(consumer), Some(provider), _) => (consumer.clone(), provider.clone()),
        (consumer, provider, Some((consumer_client, provider_client))) => (
            given_or_read(consumer, consumer_client, "the consumer").await?,
            given_or_read(provider, provider_client, "the provider").await?,
        ),
        _ => {
            return Err(Error::failed(
                "not connected",
                "report this as a bug in strait",
            ))
        }
    };
    if consumer_id == provider_id {
        return Err(Error::failed(
            format!("both kubeconfigs are of cluster {consumer_id}"),
            "pass the consumer's and the provider's kubeconfigs, two different clusters",
        ));
    }
    let slice = (!args.resource_slice.is_empty()).then(|| peer::Slice {
        name: args
            .slice_name
            .clone()
            .unwrap_or_else(|| provider_id.clone()),
        resources: args.resource_slice.iter().cloned().collect(),
    });
    let peering = peer::Peering {
        consumer_id,
        provider_id,
        provider_kubeconfig,
        modules,
        slice,
    };
    if args.dry_run {
        write!(out, "{}", peering.to_yaml()?)?;
        return Ok(());
    }
    let Some((consumer, provider)) = clients else {
        return Err(Error::failed(
            "not connected",
            "report this as a bug in strait",
        ));
    };
    peer::peer(&consumer, &provider, &peering, args.timeout, out).await
}

async fn given_or_read(
    given: &Option<String>,
    client: &kube::Client,
    cluster: &str,
) -> Result<String, Error> {
    match given {
        Some(id) => Ok(id.clone()),
        None => cluster::cluster_id(client, cluster).await,
    }
}

async fn unpeer_command(args: &cli::UnpeerArgs, out: &mut dyn Write) -> Result<(), Error> {
    let consumer = cluster::connect(Some(&args.consumer_kubeconfig), None).await?;
    let provider = cluster::connect(Some(&args.provider_kubeconfig), None).await?;
    let consumer_id = cluster::cluster_id(&consumer, "the consumer").await?;
    let provider_id = cluster::cluster_id(&provider, "the provider").await?;
    let peering = peer::Peering {
        slice: Some(peer::Slice {
            name: args
                .slice_name
                .clone()
                .unwrap_or_else(|| provider_id.clone()),
            resources: Default::default(),
        }),
        consumer_id,
        provider_id,
        provider_kubeconfig: String::new(),
        modules: Default::default(),
    };
    peer::unpeer(&consumer, &provider, &peering, args.timeout, out).await
}
