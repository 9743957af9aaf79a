//! The exit statuses of `pgherd-agent` that another program tells apart. The upgrade runs
//! `pgherd-agent backup push` as a child process (so a killed upgrade leaves the backup to finish) and
//! reads only its status: a backup that failed is a warning about the backup, a binary that refused the
//! command line (as agents built before the backup engine refused `backup`) is a backup that could not
//! run, and neither is told by the wording of a message.

/// The command ran and failed; its one-line reason is the last line on stderr.
pub const FAILURE: u8 = 1;

/// The command line was refused before anything ran (unknown subcommand, missing or bad argument).
/// It is clap's own usage status, so agents older than this module answer the same.
pub const USAGE: u8 = 2;
