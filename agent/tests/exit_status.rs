//! The exit statuses the upgrade reads from its `backup push` child ([`pgherd_agent::exit`]): a refused
//! command line and a backup that ran and failed differ by status, whatever the message says.

use std::process::{Command, Output};

use pgherd_agent::exit;

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_pgherd-agent"))
        .args(args)
        .env_clear()
        .output()
        .unwrap()
}

#[test]
fn a_refused_command_line_exits_with_the_usage_status() {
    for args in [
        &["backup", "no-such-subcommand"][..],
        &["backup", "push", "--no-such-flag"],
    ] {
        let out = agent(args);
        assert_eq!(
            out.status.code(),
            Some(exit::USAGE.into()),
            "{args:?}: {out:?}"
        );
    }
}

#[test]
fn a_backup_that_cannot_be_taken_exits_with_the_failure_status() {
    let envdir = tempfile::tempdir().unwrap();
    let out = agent(&[
        "backup",
        "push",
        "--envdir",
        envdir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(exit::FAILURE.into()), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr
            .lines()
            .last()
            .unwrap()
            .starts_with("pgherd-agent: error: "),
        "{stderr}"
    );
}

#[test]
fn help_and_version_succeed() {
    for flag in ["--help", "--version"] {
        let out = agent(&[flag]);
        assert!(out.status.success(), "{flag}: {out:?}");
        assert!(!out.stdout.is_empty(), "{flag}");
    }
}
