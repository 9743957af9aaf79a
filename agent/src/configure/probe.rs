//! What `configure` reads from the machine: sizing figures, identity, and the few files Spilo looked at
//! (the data directory's `PG_VERSION`, the installed PostgreSQL versions, an existing TLS key).
//!
//! Nothing here touches the network. Spilo asked the cloud metadata service (169.254.169.254) which provider it
//! runs on, costing a 2 s timeout on every boot outside a cloud; the provider is now `SPILO_PROVIDER` or `local`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::net::ToSocketAddrs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::certs::TlsFiles;
use super::env::Env;
use super::layout::Layout;
use super::version::{self, Installed, Major, LIB_DIR};
use super::write::rooted;
use super::{merge, Args, Error};

/// Machine figures; each can be overridden on the command line.
#[derive(Debug, Clone)]
pub struct Machine {
    pub memory_mb: u64,
    pub cpu_count: u32,
    /// Member name.
    pub hostname: String,
    /// Member IP, or why it could not be determined (only an error if something needs it).
    pub ip: Result<String, String>,
    /// Wildcard address for listeners that need one (`::` with IPv6, else `0.0.0.0`).
    pub listen_ip: String,
}

pub fn machine(vars: &BTreeMap<String, String>, args: &Args) -> Result<Machine, Error> {
    let env = Env::new(vars);
    let hostname = match (&args.hostname, env.get("HOSTNAME")) {
        (Some(name), _) => name.clone(),
        (None, Some(name)) => name.to_string(),
        (None, None) => nix::unistd::gethostname()
            .map_err(|e| {
                Error::Machine(format!(
                    "cannot read the host name ({e}); pass --hostname or set HOSTNAME"
                ))
            })?
            .to_string_lossy()
            .into_owned(),
    };
    let ip = match (
        &args.ip,
        env.has("KUBERNETES_SERVICE_HOST"),
        env.get("POD_IP"),
    ) {
        (Some(ip), _, _) => Ok(ip.clone()),
        (None, true, Some(ip)) => Ok(ip.to_string()),
        _ => resolve(&hostname),
    };
    Ok(Machine {
        memory_mb: args.memory_mb.unwrap_or_else(memory_mb),
        cpu_count: args
            .cpu_count
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32)),
        hostname,
        ip,
        listen_ip: args
            .listen_ip
            .clone()
            .unwrap_or_else(|| wildcard_address().to_string()),
    })
}

fn resolve(hostname: &str) -> Result<String, String> {
    let why = |detail: String| {
        format!(
            "cannot determine this member's IP address: {detail}; set POD_IP (Kubernetes) or \
             PG_CONNECT_ADDRESS and RESTAPI_CONNECT_ADDRESS"
        )
    };
    match (hostname, 0).to_socket_addrs() {
        Ok(mut addrs) => addrs
            .next()
            .map(|a| a.ip().to_string())
            .ok_or_else(|| why(format!("host name {hostname:?} has no address"))),
        Err(e) => Err(why(format!(
            "host name {hostname:?} does not resolve ({e})"
        ))),
    }
}

/// Memory available to us in MiB: the cgroup limit (v1 or v2) capped by the physical RAM, as Spilo computed it.
fn memory_mb() -> u64 {
    let read_bytes = |path: &str| {
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    let cgroup = read_bytes("/sys/fs/cgroup/memory/memory.limit_in_bytes")
        .or_else(|| read_bytes("/sys/fs/cgroup/memory.max"))
        .map(|b| b / 1_048_576);
    let physical = fs::read_to_string("/proc/meminfo").ok().and_then(|text| {
        let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
        line.split_whitespace()
            .nth(1)?
            .parse::<u64>()
            .ok()
            .map(|kib| kib / 1024)
    });
    match (cgroup, physical) {
        (Some(c), Some(p)) => c.min(p),
        (c, p) => c.or(p).unwrap_or(1024),
    }
}

/// `::` when the host can listen on IPv6 (dual-stack sockets are Linux's default), else `0.0.0.0`. Binding an
/// ephemeral UDP port sends nothing.
fn wildcard_address() -> &'static str {
    if std::net::UdpSocket::bind("[::]:0").is_ok() {
        "::"
    } else {
        "0.0.0.0"
    }
}

/// The files Spilo consulted, read under `root`.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Trimmed `<data_dir>/PG_VERSION`, if the data directory exists.
    pub data_dir_version: Option<String>,
    pub installed: Installed,
    pub ssl_key_exists: bool,
}

pub fn disk(vars: &BTreeMap<String, String>, root: &Path) -> Result<Probe, Error> {
    let env = Env::new(vars);
    let layout = Layout::from_env(&env)?;
    let (_, user) = merge::user_config(&env)?;
    let data_dir = layout.data_dir(&user)?;
    let tls = TlsFiles::from_env(&env, &layout)?;
    let data_dir_version = fs::read_to_string(rooted(root, &data_dir.join("PG_VERSION")))
        .ok()
        .map(|s| s.trim().to_string());
    let extra = version::extra_bin_dirs(env.get(version::BIN_DIRS_VAR))
        .map_err(|e| Error::invalid(version::BIN_DIRS_VAR, e))?;
    let mut installed = installed(root);
    for (major, bin) in extra {
        if is_executable(&rooted(root, &bin.join("postgres"))) {
            // An upstream build keeps its modules in lib/postgresql; Debian's layout in lib.
            let lib = rooted(root, &bin.join("../lib/postgresql"));
            let lib = if lib.is_dir() {
                lib
            } else {
                rooted(root, &bin.join("../lib"))
            };
            installed.insert(major, libraries(&lib));
        }
    }
    Ok(Probe {
        data_dir_version,
        installed,
        ssl_key_exists: rooted(root, &tls.key_file).exists(),
    })
}

fn installed(root: &Path) -> Installed {
    let mut out = Installed::new();
    let Ok(entries) = fs::read_dir(rooted(root, Path::new(LIB_DIR))) else {
        return out;
    };
    for entry in entries.flatten() {
        let Some(version) = entry.file_name().to_str().and_then(Major::parse) else {
            continue;
        };
        if is_executable(&entry.path().join("bin/postgres")) {
            out.insert(version, libraries(&entry.path().join("lib")));
        }
    }
    out
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn libraries(dir: &Path) -> Option<BTreeSet<String>> {
    let entries = fs::read_dir(dir).ok()?;
    Some(
        entries
            .flatten()
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".so"))
                    .map(str::to_string)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_versions_and_libraries() {
        let root = tempfile::tempdir().unwrap();
        for (v, exec) in [("15", true), ("16", false), ("notaversion", true)] {
            let bin = root.path().join("usr/lib/postgresql").join(v).join("bin");
            fs::create_dir_all(&bin).unwrap();
            fs::write(bin.join("postgres"), "").unwrap();
            let mode = if exec { 0o755 } else { 0o644 };
            fs::set_permissions(bin.join("postgres"), fs::Permissions::from_mode(mode)).unwrap();
        }
        let lib = root.path().join("usr/lib/postgresql/15/lib");
        fs::create_dir_all(&lib).unwrap();
        fs::write(lib.join("pg_stat_statements.so"), "").unwrap();
        let found = installed(root.path());
        assert_eq!(found.len(), 1);
        let libs = found[&Major::parse("15").unwrap()].as_ref().unwrap();
        assert!(libs.contains("pg_stat_statements"));
    }

    #[test]
    fn machine_overrides_win() {
        let args = Args {
            root: "/".into(),
            memory_mb: Some(100),
            cpu_count: Some(3),
            hostname: Some("h".into()),
            ip: Some("10.1.1.1".into()),
            listen_ip: Some("0.0.0.0".into()),
        };
        let vars: BTreeMap<String, String> = [("HOSTNAME".to_string(), "other".to_string())].into();
        let m = machine(&vars, &args).unwrap();
        assert_eq!(
            (m.memory_mb, m.cpu_count, m.hostname.as_str(), m.ip.unwrap()),
            (100, 3, "h", "10.1.1.1".into())
        );
    }

    #[test]
    fn pod_ip_on_kubernetes_only() {
        let args = Args {
            root: "/".into(),
            memory_mb: None,
            cpu_count: None,
            hostname: Some("localhost".into()),
            ip: None,
            listen_ip: None,
        };
        let k8s: BTreeMap<String, String> = [
            ("KUBERNETES_SERVICE_HOST", "10.0.0.1"),
            ("POD_IP", "10.2.3.4"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .into();
        assert_eq!(machine(&k8s, &args).unwrap().ip.unwrap(), "10.2.3.4");
        let plain: BTreeMap<String, String> =
            [("POD_IP".to_string(), "10.2.3.4".to_string())].into();
        assert_ne!(
            machine(&plain, &args).unwrap().ip.as_deref(),
            Ok("10.2.3.4")
        );
        assert!(machine(&plain, &args).unwrap().memory_mb > 0);
    }
}
