//! WAL storage: which backend a cluster (or its clone/standby source) uses, WAL-E or WAL-G, and the envdir
//! files the WAL tools read (Patroni strips the environment, so envdirs are their only configuration).

use super::engine::{Engine, ENGINE_FILE};
use std::collections::BTreeMap;
use std::path::PathBuf;

use super::env::{Env, Legacy};
use super::layout::Layout;
use super::version::Major;
use super::{sizing, Error};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    S3,
    Gs,
    Swift,
    Azure,
    Ssh,
}

/// Whose storage: the cluster's own archive, the clone source, or the standby source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Main,
    Clone,
    Standby,
}

impl Role {
    pub fn prefix(self) -> &'static str {
        match self {
            Role::Main => "",
            Role::Clone => "CLONE_",
            Role::Standby => "STANDBY_",
        }
    }
}

struct Spec {
    backend: Backend,
    buckets: &'static [&'static str],
    prefixes: &'static [&'static str],
}

const SPECS: [Spec; 5] = [
    Spec {
        backend: Backend::S3,
        buckets: &["WAL_S3_BUCKET"],
        prefixes: &["WALE_S3_PREFIX", "WALG_S3_PREFIX"],
    },
    Spec {
        backend: Backend::Gs,
        buckets: &["WAL_GS_BUCKET", "WAL_GCS_BUCKET"],
        prefixes: &["WALE_GS_PREFIX", "WALG_GS_PREFIX"],
    },
    Spec {
        backend: Backend::Swift,
        buckets: &["WAL_SWIFT_BUCKET"],
        prefixes: &["WALE_SWIFT_PREFIX"],
    },
    Spec {
        backend: Backend::Azure,
        buckets: &[],
        prefixes: &["WALG_AZ_PREFIX"],
    },
    Spec {
        backend: Backend::Ssh,
        buckets: &[],
        prefixes: &["WALG_SSH_PREFIX"],
    },
];

/// Names Spilo's documentation mentions but its code never used; set alone they configure nothing.
const UNUSABLE: [(&str, &str); 3] = [
    ("WALE_GCS_PREFIX", "use WALE_GS_PREFIX"),
    ("WAL_AZ_BUCKET", "Azure needs an explicit WALG_AZ_PREFIX"),
    ("WALE_AZ_PREFIX", "use WALG_AZ_PREFIX"),
];

#[derive(Debug, Clone)]
pub struct Storage {
    pub role: Role,
    pub backend: Backend,
    pub env_dir: PathBuf,
    pub walg_backup: bool,
    pub walg_restore: bool,
    /// Who archives, backs up and restores: pgherd's native engine for S3 (replacing WAL-E, Spilo's S3
    /// default), or WAL-G/WAL-E in compatibility mode where Spilo's switches select them.
    pub engine: Engine,
}

impl Storage {
    /// The `archive_command` for this storage.
    pub fn archive_command(&self) -> String {
        let dir = self.env_dir.display();
        match self.engine {
            Engine::Native => format!("pgherd-agent wal-push --envdir \"{dir}\" \"%p\""),
            compat => format!(
                "pgherd-agent envdir \"{dir}\" {} wal-push \"%p\"",
                compat.binary()
            ),
        }
    }

    /// `archive_mode` where it differs from Spilo's `on`: the native engine archives on replicas too, so WAL
    /// the old leader had not archived is still archived after a failover (docs/backup.md, "Archiving on
    /// every member"). Its pushes accept an identical copy already stored; WAL-G and WAL-E keep Spilo's mode.
    pub fn archive_mode(&self) -> Option<&'static str> {
        (self.engine == Engine::Native).then_some("always")
    }
}

/// `<P>PGHERD_BACKUP_ENGINE` (native, wal-g, wal-e) if set; otherwise native for S3 unless WAL-G backups are
/// switched on (`USE_WALG_BACKUP`/`USE_WALG`), and Spilo's tool for the other backends, which the native
/// engine does not speak.
fn engine_choice(
    env: &Env,
    role: Role,
    backend: Backend,
    walg_backup: bool,
) -> Result<Engine, Error> {
    let var = format!("{}PGHERD_BACKUP_ENGINE", role.prefix());
    if let Some(value) = env.get(&var) {
        let engine = Engine::parse(value).ok_or_else(|| {
            Error::invalid(
                &var,
                format!("{value:?} is not one of native, wal-g, wal-e"),
            )
        })?;
        if engine == Engine::Native && backend != Backend::S3 {
            return Err(Error::invalid(
                &var,
                "the native engine stores backups on S3 only; use wal-g for this backend",
            ));
        }
        return Ok(engine);
    }
    Ok(match (backend, walg_backup) {
        (Backend::S3, false) => Engine::Native,
        (_, true) => Engine::WalG,
        (_, false) => Engine::WalE,
    })
}

/// Finds the configured backend for `role`, if any. Two backends at once is an error (Spilo silently took the
/// first in its own order); a bucket without the scope that names the path is an error for clone/standby.
pub fn detect(env: &Env, role: Role, layout: &Layout) -> Result<Option<Storage>, Error> {
    let p = role.prefix();
    let scope = env.get(&format!("{p}SCOPE"));
    for (name, hint) in UNUSABLE {
        let var = format!("{p}{name}");
        if env.has(&var) {
            env.warn(format!(
                "{var} is not supported (Spilo ignored it too): {hint}"
            ));
        }
    }
    let mut found: Vec<(Backend, String)> = Vec::new();
    for spec in &SPECS {
        let set = |names: &[&str]| names.iter().map(|n| format!("{p}{n}")).find(|n| env.has(n));
        let var = match (set(spec.prefixes), set(spec.buckets)) {
            (Some(prefix), _) => prefix,
            (None, Some(bucket)) if role == Role::Main || scope.is_some() => bucket,
            (None, Some(bucket)) => {
                return Err(Error::invalid(
                    bucket,
                    format!(
                        "needs {p}SCOPE to build the source path (or set {p}{} instead)",
                        spec.prefixes[0]
                    ),
                ))
            }
            (None, None) => continue,
        };
        found.push((spec.backend, var));
    }
    let (backend, _) = match found.as_slice() {
        [] => return Ok(None),
        [one] => one.clone(),
        [(_, a), (_, b), ..] => {
            return Err(Error::invalid(
                format!("{a} and {b}"),
                "two storage backends configured, pick one",
            ))
        }
    };
    let env_dir = match (role, scope) {
        (Role::Main, _) => env.path_or("WALE_ENV_DIR", &layout.wale_dir().join("env"))?,
        (_, Some(scope)) => layout.wale_dir().join(format!(
            "env-{}-{scope}",
            p.trim_end_matches('_').to_lowercase()
        )),
        (_, None) => layout
            .wale_dir()
            .join(format!("env-{}", p.trim_end_matches('_').to_lowercase())),
    };
    let (walg_backup, walg_restore) = walg_choice(env, role, backend)?;
    let engine = engine_choice(env, role, backend, walg_backup && role == Role::Main)?;
    Ok(Some(Storage {
        role,
        backend,
        env_dir,
        walg_backup,
        walg_restore,
        engine,
    }))
}

/// WAL-E or WAL-G for backup and restore. Spilo's defaults: S3 archives with WAL-E but restores with WAL-G
/// (clone/standby sources use WAL-G for both), Azure is WAL-G only, SSH archives with WAL-G only when all four
/// SSH variables are set, GCS follows `USE_WALG`, Swift is WAL-E only.
fn walg_choice(env: &Env, role: Role, backend: Backend) -> Result<(bool, bool), Error> {
    let p = role.prefix();
    let global = env.bool("USE_WALG", false, Legacy::EqTrueIgnoreCase)?;
    let use_walg = match role {
        Role::Main => global,
        _ => env.bool(
            &format!("{p}USE_WALG"),
            backend == Backend::S3 || global,
            Legacy::EqTrueIgnoreCase,
        )?,
    };
    if backend == Backend::Swift {
        return Ok((false, false));
    }
    let ssh_complete = ["SSH_PRIVATE_KEY_PATH", "SSH_USERNAME", "SSH_PORT"]
        .iter()
        .all(|n| env.has(&format!("{p}{n}")));
    let restore_default = match backend {
        // Spilo left clone/standby sources on Azure/SSH with WAL-E, which cannot read them.
        Backend::Azure | Backend::Ssh => true,
        Backend::S3 if role == Role::Main => true,
        _ => use_walg,
    };
    let backup_default = match backend {
        Backend::Azure => true,
        Backend::Ssh if ssh_complete => true,
        _ => use_walg,
    };
    let backup = env.bool(
        &format!("{p}USE_WALG_BACKUP"),
        backup_default,
        Legacy::EqTrueIgnoreCase,
    )?;
    let restore = env.bool(
        &format!("{p}USE_WALG_RESTORE"),
        restore_default,
        Legacy::EqTrueIgnoreCase,
    )?;
    Ok((backup, restore))
}

const S3_NAMES: [&str; 16] = [
    "WALE_S3_PREFIX",
    "WALG_S3_PREFIX",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "WALE_S3_ENDPOINT",
    "AWS_ENDPOINT",
    "AWS_REGION",
    "AWS_INSTANCE_PROFILE",
    "WALE_DISABLE_S3_SSE",
    "WALG_S3_SSE_KMS_ID",
    "WALG_S3_SSE",
    "WALG_DISABLE_S3_SSE",
    "AWS_S3_FORCE_PATH_STYLE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_STS_REGIONAL_ENDPOINTS",
];
const AZURE_NAMES: [&str; 5] = [
    "WALG_AZ_PREFIX",
    "AZURE_STORAGE_ACCOUNT",
    "WALG_AZURE_BUFFER_SIZE",
    "WALG_AZURE_MAX_BUFFERS",
    "AZURE_ENVIRONMENT_NAME",
];
const AZURE_AUTH_NAMES: [&str; 5] = [
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
];
const GS_NAMES: [&str; 3] = [
    "WALE_GS_PREFIX",
    "WALG_GS_PREFIX",
    "GOOGLE_APPLICATION_CREDENTIALS",
];
const SWIFT_NAMES: [&str; 18] = [
    "WALE_SWIFT_PREFIX",
    "SWIFT_AUTHURL",
    "SWIFT_TENANT",
    "SWIFT_TENANT_ID",
    "SWIFT_USER",
    "SWIFT_USER_ID",
    "SWIFT_USER_DOMAIN_NAME",
    "SWIFT_USER_DOMAIN_ID",
    "SWIFT_PASSWORD",
    "SWIFT_AUTH_VERSION",
    "SWIFT_ENDPOINT_TYPE",
    "SWIFT_REGION",
    "SWIFT_DOMAIN_NAME",
    "SWIFT_DOMAIN_ID",
    "SWIFT_PROJECT_NAME",
    "SWIFT_PROJECT_ID",
    "SWIFT_PROJECT_DOMAIN_NAME",
    "SWIFT_PROJECT_DOMAIN_ID",
];
const SSH_NAMES: [&str; 4] = [
    "WALG_SSH_PREFIX",
    "SSH_PRIVATE_KEY_PATH",
    "SSH_USERNAME",
    "SSH_PORT",
];
const WALG_NAMES: [&str; 24] = [
    "WALG_DELTA_MAX_STEPS",
    "WALG_DELTA_ORIGIN",
    "WALG_DOWNLOAD_CONCURRENCY",
    "WALG_UPLOAD_CONCURRENCY",
    "WALG_UPLOAD_DISK_CONCURRENCY",
    "WALG_DISK_RATE_LIMIT",
    "WALG_NETWORK_RATE_LIMIT",
    "WALG_COMPRESSION_METHOD",
    "USE_WALG_BACKUP",
    "USE_WALG_RESTORE",
    "WALG_BACKUP_COMPRESSION_METHOD",
    "WALG_BACKUP_FROM_REPLICA",
    "WALG_SENTINEL_USER_DATA",
    "WALG_PREVENT_WAL_OVERWRITE",
    "WALG_S3_CA_CERT_FILE",
    "WALG_LIBSODIUM_KEY",
    "WALG_LIBSODIUM_KEY_PATH",
    "WALG_LIBSODIUM_KEY_TRANSFORM",
    "WALG_PGP_KEY",
    "WALG_PGP_KEY_PATH",
    "WALG_PGP_KEY_PASSPHRASE",
    "no_proxy",
    "http_proxy",
    "https_proxy",
];
const AWS_IMDS_NAMES: [&str; 2] = [
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE",
];
const PATH_NAMES: [&str; 8] = [
    "PGPORT",
    "SCOPE",
    "WAL_BUCKET_SCOPE_PREFIX",
    "WAL_BUCKET_SCOPE_SUFFIX",
    "WAL_S3_BUCKET",
    "WAL_GCS_BUCKET",
    "WAL_GS_BUCKET",
    "WAL_SWIFT_BUCKET",
];

/// Everything an envdir needs that is not a variable of its own.
pub struct EnvdirInput<'a> {
    pub layout: &'a Layout,
    pub pg_version: &'a Major,
    pub cpu_count: u32,
    /// `NAMESPACE`, which gives the main storage path its default `<namespace>-` prefix.
    pub namespace: &'a str,
}

/// The files of one envdir as (name, value), following Spilo's `write_wale_environment`.
pub fn envdir_files(
    env: &Env,
    storage: &Storage,
    input: &EnvdirInput,
) -> Result<Vec<(String, String)>, Error> {
    let role = storage.role;
    let p = role.prefix();
    let mut w: BTreeMap<&'static str, String> = BTreeMap::new();
    let all = PATH_NAMES
        .iter()
        .chain(&S3_NAMES)
        .chain(&SWIFT_NAMES)
        .chain(&GS_NAMES)
        .chain(&WALG_NAMES);
    for &name in all
        .chain(&AZURE_NAMES)
        .chain(&AZURE_AUTH_NAMES)
        .chain(&SSH_NAMES)
    {
        if let Some(value) = env.get(&format!("{p}{name}")) {
            w.insert(name, value.to_string());
        }
    }
    if role == Role::Main {
        let ns_prefix = match input.namespace {
            "" | "default" => String::new(),
            ns => format!("{ns}-"),
        };
        let concurrency = sizing::walg_concurrency(input.cpu_count);
        w.insert("PGVERSION", input.pg_version.to_string());
        w.insert("PGPORT", env.port("PGPORT", 5432)?.to_string());
        w.insert("SCOPE", env.str_or("SCOPE", "dummy"));
        w.insert(
            "WAL_BUCKET_SCOPE_PREFIX",
            env.setdefault("WAL_BUCKET_SCOPE_PREFIX", &ns_prefix),
        );
        w.insert(
            "WAL_BUCKET_SCOPE_SUFFIX",
            env.setdefault("WAL_BUCKET_SCOPE_SUFFIX", ""),
        );
        w.insert(
            "BACKUP_NUM_TO_RETAIN",
            env.uint("BACKUP_NUM_TO_RETAIN", 5)?.to_string(),
        );
        w.entry("WALG_DOWNLOAD_CONCURRENCY")
            .or_insert_with(|| concurrency.clone());
        w.entry("WALG_UPLOAD_CONCURRENCY").or_insert(concurrency);
        if let Some(v) = w.get_mut("WALG_BACKUP_FROM_REPLICA") {
            *v = v.to_lowercase();
        }
    } else {
        w.insert("PGVERSION", env.str_or(&format!("{p}PGVERSION"), ""));
        w.insert(
            "WAL_BUCKET_SCOPE_PREFIX",
            env.setdefault(&format!("{p}WAL_BUCKET_SCOPE_PREFIX"), ""),
        );
        if env.has(&format!("{p}PGPORT")) {
            w.insert("PGPORT", env.port(&format!("{p}PGPORT"), 5432)?.to_string());
        }
    }
    for (name, on) in [
        ("USE_WALG_BACKUP", storage.walg_backup),
        ("USE_WALG_RESTORE", storage.walg_restore),
    ] {
        if on {
            w.insert(name, "true".into());
        } else {
            w.remove(name);
        }
    }
    let has = |w: &BTreeMap<&str, String>, n: &str| w.get(n).is_some_and(|v| !v.is_empty());

    let names: Vec<&'static str> = match storage.backend {
        Backend::S3 => {
            s3_settings(env, &mut w, storage);
            S3_NAMES
                .iter()
                .chain(&WALG_NAMES)
                .chain(&AWS_IMDS_NAMES)
                .copied()
                .collect()
        }
        Backend::Gs => {
            if let Some(bucket) = w.get("WAL_GCS_BUCKET").cloned() {
                w.insert("WAL_GS_BUCKET", bucket);
            }
            GS_NAMES.iter().chain(&WALG_NAMES).copied().collect()
        }
        Backend::Swift => SWIFT_NAMES.to_vec(),
        Backend::Azure => {
            let mut auth: Vec<&'static str> = Vec::new();
            let mut options = 0;
            let service_principal = ["AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"];
            for group in [
                &["AZURE_STORAGE_ACCESS_KEY"][..],
                &["AZURE_STORAGE_SAS_TOKEN"],
                &service_principal,
            ] {
                if group.iter().all(|n| has(&w, n)) {
                    if options == 0 {
                        auth.extend_from_slice(group);
                    }
                    options += 1;
                }
            }
            if options > 1 {
                env.warn(format!(
                    "multiple authentication options configured for WAL-G backup to Azure, using {}",
                    auth.join("/")
                ));
            }
            AZURE_NAMES
                .iter()
                .chain(&auth)
                .chain(&WALG_NAMES)
                .copied()
                .collect()
        }
        Backend::Ssh => SSH_NAMES.iter().chain(&WALG_NAMES).copied().collect(),
    };

    let prefix_name = names[0];
    let walg_prefix = match storage.backend {
        Backend::S3 | Backend::Gs => Some(names[1]),
        _ => None,
    };
    if !has(&w, prefix_name) {
        let value = match walg_prefix.and_then(|n| w.get(n)).filter(|v| !v.is_empty()) {
            // Spilo built `s3:///spilo/...` here (no bucket), so WAL-E archived nowhere; reuse WAL-G's prefix.
            Some(walg) => walg.clone(),
            None => {
                let store = prefix_name[5..].split('_').next().unwrap_or_default();
                let get = |n: &str| w.get(n).cloned().unwrap_or_default();
                format!(
                    "{}://{}/spilo/{}{}{}/wal/{}",
                    store.to_lowercase(),
                    get(&format!("WAL_{store}_BUCKET")),
                    get("WAL_BUCKET_SCOPE_PREFIX"),
                    get("SCOPE"),
                    get("WAL_BUCKET_SCOPE_SUFFIX"),
                    get("PGVERSION"),
                )
            }
        };
        w.insert(prefix_name, value);
    }
    if let Some(walg) = walg_prefix {
        if !has(&w, walg) {
            let value = w[prefix_name].clone();
            w.insert(walg, value);
        }
    }

    w.insert("WALE_LOG_DESTINATION", "stderr".into());
    let trailer: &[&'static str] = if role == Role::Main {
        &["WALE_LOG_DESTINATION", "PGPORT", "BACKUP_NUM_TO_RETAIN"]
    } else {
        &["WALE_LOG_DESTINATION", "PGPORT"]
    };
    let mut files: Vec<(String, String)> = Vec::new();
    for &name in names.iter().chain(trailer) {
        if let Some(value) = w.get(name).filter(|v| !v.is_empty()) {
            if !files.iter().any(|(n, _)| n == name) {
                files.push((name.to_string(), value.clone()));
            }
        }
    }
    files.push((ENGINE_FILE.into(), storage.engine.name().into()));
    files.push((
        "TMPDIR".into(),
        input.layout.wale_tmpdir.display().to_string(),
    ));
    Ok(files)
}

/// Spilo's S3 endpoint / region / path-style / SSE logic (reference §4.4).
fn s3_settings(env: &Env, w: &mut BTreeMap<&'static str, String>, storage: &Storage) {
    let take =
        |w: &mut BTreeMap<&'static str, String>, n: &str| w.remove(n).filter(|v| !v.is_empty());
    let wale_endpoint = take(w, "WALE_S3_ENDPOINT");
    let aws_endpoint = take(w, "AWS_ENDPOINT");
    let region = take(w, "AWS_REGION");
    let is_set =
        |w: &BTreeMap<&'static str, String>, n: &str| w.get(n).is_some_and(|v| !v.is_empty());

    if wale_endpoint.is_some() || aws_endpoint.is_some() {
        let mut convention = "path".to_string();
        let (wale_endpoint, aws_endpoint) = match (wale_endpoint, aws_endpoint) {
            (None, Some(aws)) => (aws.replace("://", "+path://"), aws),
            (Some(wale), aws) => match split_wale_endpoint(&wale) {
                Some((scheme, conv, rest)) => {
                    convention = conv.to_string();
                    let aws = aws.unwrap_or_else(|| format!("{scheme}{rest}"));
                    (wale, aws)
                }
                None => {
                    env.warn(format!(
                        "invalid {}WALE_S3_ENDPOINT, the format is protocol+convention://hostname:port, but got {wale}",
                        storage.role.prefix()
                    ));
                    let aws = aws.unwrap_or_else(|| wale.clone());
                    (wale, aws)
                }
            },
            (None, None) => unreachable!("checked above"),
        };
        w.insert("WALE_S3_ENDPOINT", wale_endpoint);
        w.insert("AWS_ENDPOINT", aws_endpoint);
        for name in ["WALE_DISABLE_S3_SSE", "WALG_DISABLE_S3_SSE"] {
            if !is_set(w, name) {
                w.insert(name, "true".into());
            }
        }
        w.insert(
            "AWS_S3_FORCE_PATH_STYLE",
            (convention == "path").to_string(),
        );
        // The native engine signs requests with the region (S3-compatible stores check it), so it gets the
        // region whenever one is given; Spilo wrote it only for WAL-G backups.
        if let Some(region) =
            region.filter(|_| storage.walg_backup || storage.engine == Engine::Native)
        {
            w.insert("AWS_REGION", region);
        }
    } else {
        let bucket = w
            .get("WAL_S3_BUCKET")
            .or_else(|| w.get("WALE_S3_PREFIX"))
            .cloned()
            .unwrap_or_default();
        // Spilo fell back to the availability zone from the cloud metadata service (`loca` without one); we
        // never query it, and WAL-G/WAL-E look the bucket's region up themselves when AWS_REGION is absent.
        if let Some(region) = region.or_else(|| region_from_bucket(&bucket)) {
            w.insert("AWS_REGION", region);
        }
    }
    if !(is_set(w, "AWS_SECRET_ACCESS_KEY") && is_set(w, "AWS_ACCESS_KEY_ID")) {
        w.insert("AWS_INSTANCE_PROFILE", "true".into());
    }
    if is_set(w, "WALE_DISABLE_S3_SSE") && !is_set(w, "WALG_DISABLE_S3_SSE") {
        let v = w["WALE_DISABLE_S3_SSE"].clone();
        w.insert("WALG_DISABLE_S3_SSE", v);
    }
    if (storage.walg_backup || storage.engine == Engine::Native)
        && w.get("WALG_DISABLE_S3_SSE").map(String::as_str) != Some("true")
        && !is_set(w, "WALG_S3_SSE")
    {
        w.insert("WALG_S3_SSE", "AES256".into());
    }
    for name in AWS_IMDS_NAMES {
        if let Some(v) = env.get(name) {
            w.insert(name, v.to_string());
        }
    }
}

/// `^(\w+)\+(\w+)(://.+)$`, e.g. `https+virtualhost://host:443` → (`https`, `virtualhost`, `://host:443`).
fn split_wale_endpoint(endpoint: &str) -> Option<(&str, &str, &str)> {
    let word = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_');
    let (scheme, rest) = endpoint.split_once('+')?;
    let colon = rest.find(':')?;
    let (convention, tail) = rest.split_at(colon);
    (word(scheme)
        && word(convention)
        && tail.starts_with("://")
        && tail.len() > 3
        && !tail.contains('\n'))
    .then_some((scheme, convention, tail))
}

/// `re.search(r'.*(\w{2}-\w+-\d)-.*', name)`: the right-most `xx-word-N-` in a bucket name, e.g.
/// `backups-eu-central-1-prod` → `eu-central-1`.
fn region_from_bucket(name: &str) -> Option<String> {
    let chars: Vec<char> = name.chars().collect();
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let matches_at = |s: usize| -> Option<usize> {
        if s + 3 > chars.len() || !word(chars[s]) || !word(chars[s + 1]) || chars[s + 2] != '-' {
            return None;
        }
        let mut j = s + 3;
        while j < chars.len() && word(chars[j]) {
            j += 1;
        }
        let ok = j > s + 3
            && chars.get(j) == Some(&'-')
            && chars.get(j + 1).is_some_and(char::is_ascii_digit)
            && chars.get(j + 2) == Some(&'-');
        ok.then_some(j + 2)
    };
    (0..chars.len())
        .rev()
        .find_map(|s| matches_at(s).map(|end| chars[s..end].iter().collect()))
}

#[cfg(test)]
#[path = "walenv_tests.rs"]
mod tests;
