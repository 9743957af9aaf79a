//! `pgherd-agent` command line. Each subcommand lives in the module named for its capability; this file only
//! parses arguments, sets up logging and turns errors into one actionable line and a non-zero exit code.

use clap::{Parser, Subcommand};
use pgherd_agent::backup::cli as backup_cli;
use pgherd_agent::{
    bootstrap, callbacks, configure, envdir, exit, logging, logical_backup, metrics, replica,
    status, supervise, upgrade,
};

#[derive(Parser)]
#[command(
    name = "pgherd-agent",
    version,
    about = "pgherd per-pod agent (Spilo-compatible entrypoint)"
)]
struct Cli {
    /// Log as JSON lines (also enabled by PGHERD_LOG_FORMAT=json).
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Render the Patroni configuration, envdirs, certificates and schedule from the Spilo environment.
    Configure(configure::Args),
    /// Container entrypoint: configure, then start and supervise Patroni (PID 1 duties included).
    Run(supervise::Args),
    /// Patroni post_init: create the standard roles and helper functions (idempotent).
    PostInit(callbacks::post_init::Args),
    /// Patroni on_role_change callback: run the wrapped callback; after a promotion re-run post-init.
    OnRoleChange(callbacks::on_role_change::Args),
    /// Patroni on_start/on_stop/on_role_change callback: label the pod with its role (etcd DCS on Kubernetes).
    CallbackRole(callbacks::callback_role::Args),
    /// Replica creation method: copy the leader with pg_basebackup (streams WAL alongside).
    Basebackup(replica::basebackup::Args),
    /// Run a program with variables from an envdir (runit envdir semantics).
    Envdir(envdir::Args),
    /// In-place major version upgrade of the cluster, run on the leader (replaces inplace_upgrade.py N).
    Upgrade(upgrade::Args),
    /// Started by `run`: performs this member's side of an upgrade announced in the DCS.
    #[command(hide = true)]
    UpgradeWatch,
    /// Member table, last backup and WAL archiving health of this cluster (for `kubectl exec`).
    Status(status::Args),
    /// Serve the metrics exporter alone against a local Postgres (benchmarks; `run` starts it itself).
    #[command(hide = true)]
    MetricsExporter(metrics::StandaloneArgs),
    /// archive_command: archive one WAL file (native engine).
    WalPush(backup_cli::WalPushArgs),
    /// Fetch one WAL file from the archive (native engine); exit 1 when it is not there.
    WalFetch(backup_cli::WalFetchArgs),
    /// restore_command: fetch one WAL file with the engine the envdir selects (native, WAL-G or WAL-E).
    #[command(name = "restore-command")]
    Restore(backup_cli::RestoreCommandArgs),
    /// Base backups: push, list, delete by policy.
    #[command(subcommand)]
    Backup(backup_cli::BackupCommand),
    /// Logical backups: run (the CronJob's program), list, restore (also Zalando's .sql.gz dumps).
    #[command(subcommand)]
    LogicalBackup(logical_backup::cli::Command),
    /// Bootstrap method: restore a new cluster from another cluster's backups (clone, PITR).
    CloneWithWale(bootstrap::CloneArgs),
    /// Replica method: create this replica from the latest base backup.
    WaleRestore(bootstrap::ReplicaArgs),
    /// Bootstrap method: copy a running cluster with pg_basebackup (clone).
    CloneWithBasebackup(bootstrap::BasebackupCloneArgs),
}

fn main() -> std::process::ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // --help and --version come here too, printed to stdout, and succeed.
            let _ = err.print();
            return if err.use_stderr() {
                std::process::ExitCode::from(exit::USAGE)
            } else {
                std::process::ExitCode::SUCCESS
            };
        }
    };
    logging::init(cli.log_json || logging::json_requested(), "info");
    let result = match cli.command {
        Command::Configure(args) => configure::main(args),
        Command::Run(args) => {
            // Each member performs its own side of a major upgrade the leader announces in the DCS.
            upgrade::replica::spawn_watcher();
            supervise::main(args)
        }
        Command::PostInit(args) => callbacks::post_init::main(args),
        Command::OnRoleChange(args) => callbacks::on_role_change::main(args),
        Command::CallbackRole(args) => callbacks::callback_role::main(args),
        Command::Basebackup(args) => replica::basebackup::main(args),
        Command::Envdir(args) => envdir::main(args),
        Command::Upgrade(args) => upgrade::main(args),
        Command::UpgradeWatch => upgrade::replica::watch_main(),
        Command::Status(args) => status::main(args),
        Command::MetricsExporter(args) => metrics::standalone_main(args),
        Command::WalPush(args) => backup_cli::wal_push(args),
        Command::WalFetch(args) => backup_cli::wal_fetch(args),
        Command::Restore(args) => backup_cli::restore_command(args),
        Command::Backup(cmd) => backup_cli::backup(cmd),
        Command::LogicalBackup(cmd) => logical_backup::cli::main(cmd),
        Command::CloneWithWale(args) => bootstrap::clone_with_wale(args),
        Command::WaleRestore(args) => bootstrap::wale_restore(args),
        Command::CloneWithBasebackup(args) => bootstrap::clone_with_basebackup(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            // One line, most specific context first: the operator reads this in `kubectl logs`.
            eprintln!("pgherd-agent: error: {err:#}");
            std::process::ExitCode::from(exit::FAILURE)
        }
    }
}
