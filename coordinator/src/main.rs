//! pgherd-coordinator command line: `run` (the controller), `render`
//! (objects for a manifest, offline) and `crds` (the CRDs it serves).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgherd_coordinator::config::OperatorConfig;
use pgherd_coordinator::controller::{self, ConfigSource, Settings};

#[derive(Parser)]
#[command(name = "pgherd-coordinator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Watch postgresql resources and reconcile their objects.
    Run {
        /// Legacy ConfigMap holding the operator configuration.
        #[arg(
            long,
            env = "CONFIG_MAP_NAME",
            conflicts_with = "operator_configuration"
        )]
        config_map: Option<String>,
        /// OperatorConfiguration object holding the configuration.
        #[arg(long, env = "POSTGRES_OPERATOR_CONFIGURATION_OBJECT")]
        operator_configuration: Option<String>,
        /// Namespace of the configuration object and default watch namespace.
        #[arg(long, env = "OPERATOR_NAMESPACE", default_value = "default")]
        operator_namespace: String,
        /// Namespace to watch; `*` for all. Overrides `watched_namespace`.
        #[arg(long, env = "WATCHED_NAMESPACE")]
        watched_namespace: Option<String>,
        /// Reported as the events' reporting instance, and the identity in
        /// the leader lease (host name and a random suffix without it).
        #[arg(long, env = "POD_NAME")]
        instance: Option<String>,
        /// Lease (in the operator namespace) that elects the one replica
        /// that acts.
        #[arg(
            long,
            env = "LEADER_ELECTION_LEASE",
            default_value = pgherd_coordinator::leader::DEFAULT_LEASE
        )]
        leader_election_lease: String,
        /// Act at once without a lease: only for a single replica.
        #[arg(long, env = "NO_LEADER_ELECTION")]
        no_leader_election: bool,
    },
    /// Print, as YAML, every object the coordinator would create.
    Render {
        /// Manifest file; may hold several documents (non-postgresql ones are skipped).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// OperatorConfiguration or ConfigMap YAML; Zalando's defaults otherwise.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Namespace for manifests that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Print the CustomResourceDefinitions.
    Crds,
}

fn read(path: &PathBuf) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))
}

fn main() -> ExitCode {
    // kube's TLS uses rustls' process-wide provider; when a workspace build also enables aws-lc-rs,
    // rustls would panic instead of choosing (an Err only means one is already installed).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds => {
            let mut out = String::new();
            for crd in pgherd_shared::crd::crds() {
                out.push_str("---\n");
                out.push_str(&serde_yaml_ng::to_string(&crd).expect("CRDs serialise"));
            }
            print!("{out}");
            Ok(())
        }
        Command::Render {
            file,
            config,
            namespace,
        } => (|| {
            let cfg = match &config {
                Some(p) => OperatorConfig::from_yaml(&read(p)?)
                    .map_err(|e| format!("{}: {e}", p.display()))?,
                None => OperatorConfig::default(),
            };
            let out = pgherd_coordinator::render::render(&read(&file)?, &cfg, &namespace)
                .map_err(|e| format!("{}: {e}", file.display()))?;
            print!("{out}");
            Ok(())
        })(),
        Command::Run {
            config_map,
            operator_configuration,
            operator_namespace,
            watched_namespace,
            instance,
            leader_election_lease,
            no_leader_election,
        } => {
            tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env()
                        .unwrap_or_else(|_| "info".into()),
                )
                .json()
                .init();
            let source = match (config_map, operator_configuration) {
                (Some(name), _) => ConfigSource::ConfigMap {
                    namespace: operator_namespace.clone(),
                    name,
                },
                (None, Some(name)) => ConfigSource::OperatorConfiguration {
                    namespace: operator_namespace.clone(),
                    name,
                },
                (None, None) => ConfigSource::Defaults,
            };
            let settings = Settings {
                config: source,
                operator_namespace,
                watched_namespace,
                instance,
                leader_lease: (!no_leader_election).then_some(leader_election_lease),
            };
            tokio::runtime::Runtime::new()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    let result = rt.block_on(controller::run(settings));
                    // After a lost lease nothing may act any more: leave
                    // without waiting for tasks still in flight.
                    rt.shutdown_background();
                    result.map_err(|e| format!("{e:#}"))
                })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(line) => {
            eprintln!("error: {line}");
            ExitCode::FAILURE
        }
    }
}
