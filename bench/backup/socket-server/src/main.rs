//! `pgherd-bench-socket-server DATA_DIR SOCKET`: serves the archive hand-off socket until killed, exactly as
//! `pgherd-agent run` does (`agent/src/backup/mod.rs::spawn`), on the same single-threaded Tokio runtime
//! (`agent/src/supervise/mod.rs::main` builds a current-thread runtime). Written against `Server::new(data_dir)`
//! as of commit a5da1d6; follow the agent's signature if it changes.
use std::path::PathBuf;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args_os().skip(1);
    let (Some(data_dir), Some(socket)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: pgherd-bench-socket-server DATA_DIR SOCKET");
    };
    let server = pgherd_agent::backup::socket::Server::new(PathBuf::from(data_dir), None);
    server.serve(PathBuf::from(socket), None).await
}
