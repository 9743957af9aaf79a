//! `pgherd-agent upgrade` outside a pgherd pod and with bad arguments: one actionable line, non-zero exit,
//! nothing touched.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pgherd-agent"))
}

#[test]
fn without_a_rendered_configuration_it_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = agent()
        .args(["upgrade", "--members", "3"])
        .env_clear()
        .env("RW_DIR", dir.path())
        .env("PGVERSION", "16")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr.lines().last().unwrap();
    assert!(last.starts_with("pgherd-agent: error: "), "{stderr}");
    assert!(last.contains("postgres.yml"), "{last}");
    assert!(last.contains("is this a pgherd pod?"), "{last}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
}

#[test]
fn the_member_count_is_required() {
    let out = agent().arg("upgrade").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--members"));
}
