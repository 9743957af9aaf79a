//! The environment Patroni (and everything it starts: postgres, archive/restore commands, callbacks) sees.
//!
//! Spilo strips the environment before exec'ing Patroni so that credentials passed to the container
//! (AWS keys, SPILO_CONFIGURATION with passwords, …) do not show up in /proc/<pid>/environ of every backend
//! and child; WAL tools get their settings from envdirs instead. pgherd keeps exactly Spilo's whitelist, adds
//! HOME, puts the agent's own directory first on PATH (the config calls `pgherd-agent …` subcommands and they
//! must resolve to this very binary), and passes the agent's log format so child commands log alike.

use std::collections::BTreeMap;
use std::path::Path;

/// Whether Spilo's runit `patroni/run` script would keep this variable.
/// Spilo's regex: `^(KUBERNETES_(SERVICE|PORT|ROLE)[_=]|((POD_(IP|NAMESPACE))|HOSTNAME|PATH|PGHOME|LC_ALL|ENABLE_PG_MON)=)`.
fn spilo_keeps(name: &str) -> bool {
    const EXACT: [&str; 7] = [
        "POD_IP",
        "POD_NAMESPACE",
        "HOSTNAME",
        "PATH",
        "PGHOME",
        "LC_ALL",
        "ENABLE_PG_MON",
    ];
    const PREFIX: [&str; 3] = ["KUBERNETES_SERVICE", "KUBERNETES_PORT", "KUBERNETES_ROLE"];
    EXACT.contains(&name)
        || PREFIX.iter().any(|p| {
            name.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('_'))
        })
}

/// Variables of pgherd's own that children need to behave like the agent.
/// `PGHERD_PG_BIN_DIRS` locates an older major for a clone that upgrades during the bootstrap.
/// The leader label values reach `callback-role`, which Spilo's filter kept them from (its
/// `callback_role.py` always saw the default `master`).
const PGHERD_PASSTHROUGH: [&str; 5] = [
    "PGHERD_LOG_FORMAT",
    "RUST_LOG",
    "PGHERD_PG_BIN_DIRS",
    "KUBERNETES_LEADER_LABEL_VALUE",
    "KUBERNETES_STANDBY_LEADER_LABEL_VALUE",
];

/// Where Patroni and its children find things: the agent binary (prepended to PATH), the PostgreSQL
/// binaries of the configured major (appended, as the Spilo image's PATH has them) and the rendered config.
pub struct Locations<'a> {
    pub home: &'a Path,
    pub agent_dir: &'a Path,
    pub bin_dir: Option<&'a Path>,
    pub config: &'a Path,
    /// The backup engine's archive hand-off socket, when it runs.
    pub socket: Option<&'a Path>,
}

/// Builds Patroni's environment from the container's.
pub fn patroni_env(env: &BTreeMap<String, String>, at: &Locations) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = env
        .iter()
        .filter(|(k, _)| spilo_keeps(k) || PGHERD_PASSTHROUGH.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert("HOME".into(), at.home.display().to_string());
    let mut path = match env.get("PATH").filter(|p| !p.is_empty()) {
        Some(p) => format!("{}:{p}", at.agent_dir.display()),
        None => format!("{}:/usr/local/bin:/usr/bin:/bin", at.agent_dir.display()),
    };
    if let Some(bin) = at.bin_dir {
        path = format!("{path}:{}", bin.display());
    }
    out.insert("PATH".into(), path);
    out.insert(
        crate::local::CONFIG_VAR.into(),
        at.config.display().to_string(),
    );
    if let Some(socket) = at.socket {
        out.insert(
            crate::backup::socket::SOCKET_VAR.into(),
            socket.display().to_string(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::map as env;

    #[test]
    fn secrets_do_not_reach_patroni() {
        let e = env(&[
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("PGPASSWORD_SUPERUSER", "pw"),
            ("SPILO_CONFIGURATION", "{}"),
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("KUBERNETES_PORT_443_TCP", "tcp://10.0.0.1:443"),
            ("KUBERNETES_ROLE_LABEL", "spilo-role"),
            ("KUBERNETES_LABELS", "{}"),
            ("KUBERNETES_LEADER_LABEL_VALUE", "master"),
            ("KUBERNETES_SERVICEX", "no"),
            ("POD_IP", "10.1.1.1"),
            ("POD_IPX", "no"),
            ("HOSTNAME", "pg-0"),
            ("LC_ALL", "en_US.utf-8"),
            ("PGHERD_LOG_FORMAT", "json"),
            ("PATH", "/usr/bin"),
        ]);
        let at = Locations {
            home: Path::new("/home/postgres"),
            agent_dir: Path::new("/opt/pgherd"),
            bin_dir: Some(Path::new("/usr/lib/postgresql/15/bin")),
            config: Path::new("/run/postgres.yml"),
            socket: Some(Path::new("/run/pgherd/agent.sock")),
        };
        let out = patroni_env(&e, &at);
        let keys: Vec<&str> = out.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "HOME",
                "HOSTNAME",
                "KUBERNETES_LEADER_LABEL_VALUE",
                "KUBERNETES_PORT_443_TCP",
                "KUBERNETES_ROLE_LABEL",
                "KUBERNETES_SERVICE_HOST",
                "LC_ALL",
                "PATH",
                "PGHERD_LOG_FORMAT",
                "PGHERD_PATRONI_CONFIG",
                "PGHERD_SOCKET",
                "POD_IP"
            ]
        );
        assert_eq!(
            out["PATH"],
            "/opt/pgherd:/usr/bin:/usr/lib/postgresql/15/bin"
        );
        assert_eq!(out["PGHERD_PATRONI_CONFIG"], "/run/postgres.yml");
        assert_eq!(out["HOME"], "/home/postgres");
    }

    #[test]
    fn path_has_a_default() {
        let at = Locations {
            home: Path::new("/h"),
            agent_dir: Path::new("/a"),
            bin_dir: None,
            config: Path::new("/c"),
            socket: None,
        };
        let out = patroni_env(&BTreeMap::new(), &at);
        assert_eq!(out["PATH"], "/a:/usr/local/bin:/usr/bin:/bin");
    }
}
