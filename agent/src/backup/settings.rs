//! Backup settings, read from the same envdir the Spilo contract produces (`/run/etc/wal-e.d/env`, or the
//! clone/standby envdirs), so the archive command carries no secrets and Patroni's environment stays clean.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::codec::Codec;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0}: not set; the envdir must name the S3 location (WAL_S3_BUCKET or WALE_S3_PREFIX/WALG_S3_PREFIX)")]
    Missing(&'static str),
    #[error("{var}: {problem}")]
    Invalid { var: &'static str, problem: String },
    #[error("reading {path}: {problem}")]
    Read { path: PathBuf, problem: String },
}

/// Where and how to store one cluster's backups.
#[derive(Clone, PartialEq, Eq)]
pub struct Settings {
    pub bucket: String,
    /// Key prefix of this cluster (no leading or trailing slash); pgherd's objects live under `<prefix>/pgherd/`.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: String,
    pub force_path_style: bool,
    pub credentials: Option<(String, String)>,
    /// IRSA / workload identity: role ARN and token file (`AWS_ROLE_ARN`, `AWS_WEB_IDENTITY_TOKEN_FILE`),
    /// used when no static keys are given. Read from the envdir because archive commands run with
    /// Patroni's stripped environment, where the SDK's own environment lookup would find nothing.
    pub web_identity: Option<(String, PathBuf)>,
    /// Server-side encryption: `AES256` or `aws:kms` (with key id).
    pub sse: Option<(String, Option<String>)>,
    pub codec: Codec,
}

impl std::fmt::Debug for Settings {
    // Hand-written so that credentials can never reach a log line through `{:?}`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("force_path_style", &self.force_path_style)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|_| "<static>"),
            )
            .field("web_identity", &self.web_identity)
            .field("sse", &self.sse)
            .field("codec", &self.codec)
            .finish()
    }
}

fn truthy(v: Option<&str>) -> bool {
    matches!(
        v.map(str::to_ascii_lowercase).as_deref(),
        Some("true" | "1" | "yes" | "on")
    )
}

/// Static keys (id, secret) and the web identity (role ARN, token file).
pub type AwsIdentity = (Option<(String, String)>, Option<(String, PathBuf)>);

/// Both from the variables the AWS tools read, for the envdir and the logical backup job alike; `Err` names
/// the half of a key pair that is missing. Without either, the SDK's default chain applies.
pub fn aws_identity<'a>(
    get: impl Fn(&str) -> Option<&'a str>,
) -> Result<AwsIdentity, &'static str> {
    let credentials = match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
        (Some(k), Some(s)) => Some((k.to_string(), s.to_string())),
        (None, None) => None,
        (Some(_), None) => return Err("AWS_SECRET_ACCESS_KEY"),
        (None, Some(_)) => return Err("AWS_ACCESS_KEY_ID"),
    };
    let web_identity = match (get("AWS_ROLE_ARN"), get("AWS_WEB_IDENTITY_TOKEN_FILE")) {
        (Some(role), Some(file)) => Some((role.to_string(), PathBuf::from(file))),
        _ => None,
    };
    Ok((credentials, web_identity))
}

/// Spilo's variable naming the main WAL envdir.
pub const ENVDIR_VAR: &str = "WALE_ENV_DIR";

/// The main WAL envdir: `WALE_ENV_DIR` when set and not empty, else `$RW_DIR/etc/wal-e.d/env` (`RW_DIR`
/// likewise, default `/run`). This is where `configure` writes it (`configure::layout`), so the CLI's
/// default, the upgrade's backup and its prefix switch all find the envdir the member actually uses.
pub fn main_envdir(var: impl Fn(&str) -> Option<String>) -> PathBuf {
    let set = |name: &str| var(name).filter(|v| !v.is_empty());
    match set(ENVDIR_VAR) {
        Some(dir) => PathBuf::from(dir),
        None => {
            PathBuf::from(set("RW_DIR").unwrap_or_else(|| "/run".into())).join("etc/wal-e.d/env")
        }
    }
}

impl Settings {
    /// From envdir variables (already read into a map). Pure.
    pub fn from_vars(vars: &BTreeMap<String, String>) -> Result<Self, Error> {
        let get = |k: &str| vars.get(k).map(String::as_str).filter(|v| !v.is_empty());
        let (var, url) = ["WALG_S3_PREFIX", "WALE_S3_PREFIX"]
            .into_iter()
            .find_map(|k| get(k).map(|v| (k, v)))
            .ok_or(Error::Missing("WALG_S3_PREFIX"))?;
        let var: &'static str = if var == "WALG_S3_PREFIX" {
            "WALG_S3_PREFIX"
        } else {
            "WALE_S3_PREFIX"
        };
        let rest = url.strip_prefix("s3://").ok_or_else(|| Error::Invalid {
            var,
            problem: format!("{url:?} does not start with s3://"),
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(Error::Invalid {
                var,
                problem: format!("{url:?} has no bucket"),
            });
        }
        let endpoint = get("AWS_ENDPOINT").map(str::to_string);
        let region = get("AWS_REGION").unwrap_or("us-east-1").to_string();
        let (credentials, web_identity) = aws_identity(get).map_err(Error::Missing)?;
        let sse = if truthy(get("WALG_DISABLE_S3_SSE")) || truthy(get("WALE_DISABLE_S3_SSE")) {
            None
        } else {
            match (get("WALG_S3_SSE"), get("WALG_S3_SSE_KMS_ID")) {
                (Some(mode), kms) => Some((mode.to_string(), kms.map(str::to_string))),
                (None, Some(kms)) => Some(("aws:kms".to_string(), Some(kms.to_string()))),
                (None, None) => None,
            }
        };
        let codec = match get("PGHERD_COMPRESSION").or(get("WALG_COMPRESSION_METHOD")) {
            Some(c) => c.parse().map_err(|problem| Error::Invalid {
                var: "PGHERD_COMPRESSION",
                problem,
            })?,
            None => Codec::Zstd,
        };
        Ok(Self {
            bucket: bucket.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            force_path_style: truthy(get("AWS_S3_FORCE_PATH_STYLE")) || endpoint.is_some(),
            endpoint,
            region,
            credentials,
            web_identity,
            sse,
            codec,
        })
    }

    /// Reads an envdir with runit semantics and builds settings from it.
    pub fn from_envdir(dir: &Path) -> Result<Self, Error> {
        let vars = crate::envdir::read(dir).map_err(|e| Error::Read {
            path: dir.into(),
            problem: format!("{e:#}"),
        })?;
        let vars: BTreeMap<String, String> = vars
            .into_iter()
            .filter_map(|(k, v)| Some((k, v?)))
            .collect();
        Self::from_vars(&vars)
    }

    /// Root of pgherd's objects for this cluster.
    pub fn root(&self) -> String {
        if self.prefix.is_empty() {
            "pgherd".into()
        } else {
            format!("{}/pgherd", self.prefix)
        }
    }

    pub fn wal_key(&self, wal_name: &str) -> String {
        format!("{}/wal/{wal_name}", self.root())
    }

    pub fn backups_prefix(&self) -> String {
        format!("{}/basebackups/", self.root())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testutil::map as vars;

    #[test]
    fn the_main_envdir_follows_configure() {
        let envdir = |pairs: &[(&str, &str)]| {
            let env = vars(pairs);
            main_envdir(|k| env.get(k).cloned())
        };
        assert_eq!(envdir(&[]), Path::new("/run/etc/wal-e.d/env"));
        assert_eq!(
            envdir(&[("RW_DIR", "/rw"), ("WALE_ENV_DIR", "")]),
            Path::new("/rw/etc/wal-e.d/env")
        );
        assert_eq!(
            envdir(&[("RW_DIR", "/rw"), ("WALE_ENV_DIR", "/e")]),
            Path::new("/e")
        );
    }

    #[test]
    fn from_spilo_envdir_values() {
        let s = Settings::from_vars(&vars(&[
            (
                "WALE_S3_PREFIX",
                "s3://acid-backups/spilo/acid-x/efd1/wal/15",
            ),
            (
                "WALG_S3_PREFIX",
                "s3://acid-backups/spilo/acid-x/efd1/wal/15",
            ),
            ("AWS_ENDPOINT", "http://127.0.0.1:3900"),
            ("AWS_ACCESS_KEY_ID", "GK1"),
            ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
            ("WALG_DISABLE_S3_SSE", "true"),
            ("WALG_S3_SSE", "AES256"),
        ]))
        .unwrap();
        assert_eq!(s.bucket, "acid-backups");
        assert_eq!(s.root(), "spilo/acid-x/efd1/wal/15/pgherd");
        assert_eq!(
            s.wal_key("000000010000000000000001"),
            "spilo/acid-x/efd1/wal/15/pgherd/wal/000000010000000000000001"
        );
        assert!(s.force_path_style);
        assert_eq!(s.sse, None, "disabled SSE wins");
        assert_eq!(s.codec, Codec::Zstd);
        assert!(
            !format!("{s:?}").contains("s3cr3t"),
            "secrets never in Debug output"
        );
    }

    #[test]
    fn errors_name_the_variable() {
        assert_eq!(
            Settings::from_vars(&vars(&[])).unwrap_err(),
            Error::Missing("WALG_S3_PREFIX")
        );
        let e = Settings::from_vars(&vars(&[("WALG_S3_PREFIX", "gs://x/y")])).unwrap_err();
        assert!(e.to_string().starts_with("WALG_S3_PREFIX: "), "{e}");
        let e = Settings::from_vars(&vars(&[
            ("WALG_S3_PREFIX", "s3://b/p"),
            ("AWS_ACCESS_KEY_ID", "k"),
        ]))
        .unwrap_err();
        assert_eq!(e, Error::Missing("AWS_SECRET_ACCESS_KEY"));
        let e = Settings::from_vars(&vars(&[
            ("WALG_S3_PREFIX", "s3://b/p"),
            ("PGHERD_COMPRESSION", "brotli"),
        ]))
        .unwrap_err();
        assert!(e.to_string().starts_with("PGHERD_COMPRESSION: "), "{e}");
    }

    #[test]
    fn web_identity_comes_from_the_envdir() {
        let s = Settings::from_vars(&vars(&[
            ("WALG_S3_PREFIX", "s3://b/p"),
            ("AWS_ROLE_ARN", "arn:aws:iam::1:role/pg"),
            ("AWS_WEB_IDENTITY_TOKEN_FILE", "/var/run/secrets/token"),
        ]))
        .unwrap();
        assert_eq!(
            s.web_identity,
            Some((
                "arn:aws:iam::1:role/pg".into(),
                "/var/run/secrets/token".into()
            ))
        );
        assert_eq!(s.credentials, None);
    }

    #[test]
    fn kms_and_defaults() {
        let s = Settings::from_vars(&vars(&[
            ("WALG_S3_PREFIX", "s3://b"),
            ("WALG_S3_SSE_KMS_ID", "key-1"),
        ]))
        .unwrap();
        assert_eq!(s.sse, Some(("aws:kms".into(), Some("key-1".into()))));
        assert_eq!(s.root(), "pgherd");
        assert_eq!(s.region, "us-east-1");
        assert!(!s.force_path_style);
    }
}
