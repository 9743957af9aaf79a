//! The fresh base backup after an upgrade: backups of the old major cannot be restored with the new
//! binaries, so until one exists there is no point-in-time recovery. Runs the native backup engine
//! (`pgherd-agent backup push`) as a subprocess and reports honestly what happened.

use std::collections::BTreeMap;
use std::path::Path;

use super::pg::{tail_of, Pg};

/// `taken`, `skipped: …`, `could not run: …` or `failed: …`.
pub fn push(pg: &Pg, env: &BTreeMap<String, String>, patroni_config: &Path) -> String {
    let envdir = super::walprefix::envdir(env);
    let configured = std::fs::read_dir(&envdir).is_ok_and(|mut d| d.next().is_some());
    if !configured {
        return format!(
            "skipped: no WAL storage configured ({} is empty or missing)",
            envdir.display()
        );
    }
    let exe = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => return format!("could not run: locating pgherd-agent: {e}"),
    };
    let mut cmd = pg.command(&exe);
    cmd.args(["backup", "push", "--envdir"])
        .arg(&envdir)
        .env(crate::local::CONFIG_VAR, patroni_config);
    match cmd.output() {
        Err(e) => format!("could not run: {}: {e}", exe.display()),
        Ok(out) if out.status.success() => "taken".into(),
        Ok(out) => {
            let text = tail_of(&out, 3);
            if text.contains("unrecognized subcommand") {
                format!("could not run: this pgherd-agent has no `backup push` ({text})")
            } else {
                format!("failed ({}): {text}", out.status)
            }
        }
    }
}
