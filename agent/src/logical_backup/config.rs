//! The job's configuration from the CronJob's environment (Zalando's variable names, docs/logical-backup.md).
//! Pure: the caller passes the environment as a map, every error names the variable to fix.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backup::codec::Codec;
use crate::backup::settings::Settings;

use super::layout;
use super::retention::{self, Policy};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    #[error("{0} is not set (the logical backup CronJob sets it; set it yourself when running outside one)")]
    Missing(&'static str),
    #[error("{var}: {problem}")]
    Invalid { var: &'static str, problem: String },
    #[error("LOGICAL_BACKUP_PROVIDER={0}: only s3 (and S3-compatible endpoints through LOGICAL_BACKUP_S3_ENDPOINT) is supported by pgherd's storage layer")]
    Provider(String),
}

/// Everything `run`, `list` and `restore` need besides the libpq variables, which go to the Postgres
/// programs unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub scope: String,
    pub cluster_name_label: String,
    pub namespace: Option<String>,
    pub node_name: Option<String>,
    /// `PG_VERSION`: picks `/usr/lib/postgresql/{PG_VERSION}/bin` when it exists, as Zalando's dump.sh.
    pub pg_version: Option<String>,
    /// `PGHOST` as given: used as is instead of looking for a replica through the Kubernetes API.
    pub pghost: Option<String>,
    /// S3 settings; `prefix` is the base prefix without its trailing slash.
    pub store: Settings,
    /// `{prefix}/{SCOPE}{suffix}/logical_backups/`.
    pub base: String,
    pub retention: Policy,
    pub connect_retries: u32,
    pub connect_delay: Duration,
    /// `/{uid}` suffix of the `postgresql` object, when it has that shape (for the Event's involvedObject).
    pub uid: Option<String>,
}

/// `--scope`/`--scope-suffix` of `list` and `restore`: another cluster's prefix in the same bucket.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub scope: Option<String>,
    pub scope_suffix: Option<String>,
}

impl Config {
    pub fn from_env(env: &BTreeMap<String, String>, overrides: &Overrides) -> Result<Self, Error> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        match get("LOGICAL_BACKUP_PROVIDER")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("s3") => {}
            Some(other) => return Err(Error::Provider(other.into())),
        }
        let scope = overrides
            .scope
            .clone()
            .or_else(|| get("SCOPE").map(str::to_string))
            .ok_or(Error::Missing("SCOPE"))?;
        let suffix = overrides.scope_suffix.clone().unwrap_or_else(|| {
            get("LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX")
                .unwrap_or("")
                .to_string()
        });
        let bucket =
            get("LOGICAL_BACKUP_S3_BUCKET").ok_or(Error::Missing("LOGICAL_BACKUP_S3_BUCKET"))?;
        if bucket.contains('/') {
            return Err(Error::Invalid {
                var: "LOGICAL_BACKUP_S3_BUCKET",
                problem: format!("{bucket:?} is not a bucket name (put paths into LOGICAL_BACKUP_S3_BUCKET_PREFIX)"),
            });
        }
        let base = layout::base_prefix(
            get("LOGICAL_BACKUP_S3_BUCKET_PREFIX").unwrap_or(""),
            &scope,
            &suffix,
        );
        let endpoint = get("LOGICAL_BACKUP_S3_ENDPOINT").map(str::to_string);
        let (credentials, web_identity) =
            crate::backup::settings::aws_identity(get).map_err(Error::Missing)?;
        let store = Settings {
            bucket: bucket.to_string(),
            prefix: base.trim_end_matches('/').to_string(),
            force_path_style: endpoint.is_some(),
            endpoint,
            region: get("LOGICAL_BACKUP_S3_REGION")
                .or(get("AWS_REGION"))
                .unwrap_or("us-east-1")
                .to_string(),
            credentials,
            web_identity,
            sse: get("LOGICAL_BACKUP_S3_SSE").map(|mode| (mode.to_string(), None)),
            codec: Codec::Zstd,
        };
        let max_age = retention::parse_age(get("LOGICAL_BACKUP_S3_RETENTION_TIME").unwrap_or(""))
            .map_err(|problem| Error::Invalid {
            var: "LOGICAL_BACKUP_S3_RETENTION_TIME",
            problem,
        })?;
        let max_count = number(
            get("LOGICAL_BACKUP_RETENTION_COUNT"),
            "LOGICAL_BACKUP_RETENTION_COUNT",
        )?
        .map(|n: usize| n.max(1));
        let connect_retries = number(
            get("LOGICAL_BACKUP_CONNECT_RETRIES"),
            "LOGICAL_BACKUP_CONNECT_RETRIES",
        )?
        .unwrap_or(10);
        let delay: u64 = number(
            get("LOGICAL_BACKUP_CONNECT_RETRY_DELAY").map(|d| d.trim_end_matches('s')),
            "LOGICAL_BACKUP_CONNECT_RETRY_DELAY",
        )?
        .unwrap_or(2);
        let uid = suffix
            .strip_prefix('/')
            .filter(|u| !u.is_empty() && u.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-'))
            .map(str::to_string);
        Ok(Config {
            cluster_name_label: get("CLUSTER_NAME_LABEL")
                .unwrap_or("cluster-name")
                .to_string(),
            namespace: get("POD_NAMESPACE").map(str::to_string),
            node_name: get("NODE_NAME").map(str::to_string),
            pg_version: get("PG_VERSION").map(str::to_string),
            pghost: get("PGHOST").map(str::to_string),
            scope,
            store,
            base,
            retention: Policy { max_age, max_count },
            connect_retries,
            connect_delay: Duration::from_secs(delay),
            uid,
        })
    }

    /// `s3://bucket/base/` for messages.
    pub fn location(&self) -> String {
        format!("s3://{}/{}", self.store.bucket, self.base)
    }
}

fn number<T: std::str::FromStr>(v: Option<&str>, var: &'static str) -> Result<Option<T>, Error> {
    v.map(|v| {
        v.parse().map_err(|_| Error::Invalid {
            var,
            problem: format!("{v:?} is not a non-negative whole number"),
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::map;

    const BASE: &[(&str, &str)] = &[
        ("SCOPE", "acid-x"),
        ("POD_NAMESPACE", "default"),
        ("LOGICAL_BACKUP_PROVIDER", "s3"),
        ("LOGICAL_BACKUP_S3_BUCKET", "backups"),
        ("LOGICAL_BACKUP_S3_BUCKET_PREFIX", "spilo"),
        (
            "LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX",
            "/5a7c1c8e-91d2-4c5e-8f6b-0a0b0c0d0e0f",
        ),
        ("LOGICAL_BACKUP_S3_ENDPOINT", "http://garage:3900"),
        ("LOGICAL_BACKUP_S3_REGION", "garage"),
        ("LOGICAL_BACKUP_S3_SSE", "AES256"),
        ("LOGICAL_BACKUP_S3_RETENTION_TIME", "7 days"),
        ("AWS_ACCESS_KEY_ID", "GK1"),
        ("AWS_SECRET_ACCESS_KEY", "s3cr3t"),
    ];

    fn with(extra: &[(&str, &str)]) -> Result<Config, Error> {
        let mut env = map(BASE);
        env.extend(map(extra));
        Config::from_env(&env, &Overrides::default())
    }

    #[test]
    fn from_the_cronjob_environment() {
        let c = with(&[]).unwrap();
        assert_eq!(
            c.base,
            "spilo/acid-x/5a7c1c8e-91d2-4c5e-8f6b-0a0b0c0d0e0f/logical_backups/"
        );
        assert_eq!(c.store.prefix, c.base.trim_end_matches('/'));
        assert_eq!(c.store.bucket, "backups");
        assert!(c.store.force_path_style);
        assert_eq!(c.store.sse, Some(("AES256".into(), None)));
        assert_eq!(c.retention.max_age.unwrap().seconds, 7 * 86400);
        assert_eq!(c.retention.max_count, None);
        assert_eq!(
            (c.connect_retries, c.connect_delay),
            (10, Duration::from_secs(2))
        );
        assert_eq!(c.cluster_name_label, "cluster-name");
        assert_eq!(
            c.uid.as_deref(),
            Some("5a7c1c8e-91d2-4c5e-8f6b-0a0b0c0d0e0f")
        );
        assert!(
            !format!("{c:?}").contains("s3cr3t"),
            "secrets never in Debug output"
        );
        assert_eq!(
            c.location(),
            "s3://backups/spilo/acid-x/5a7c1c8e-91d2-4c5e-8f6b-0a0b0c0d0e0f/logical_backups/"
        );
    }

    #[test]
    fn empty_values_are_unset_and_defaults_apply() {
        let c = with(&[
            ("LOGICAL_BACKUP_S3_BUCKET_PREFIX", ""),
            ("LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX", ""),
            ("LOGICAL_BACKUP_S3_RETENTION_TIME", ""),
            ("LOGICAL_BACKUP_S3_SSE", ""),
            ("LOGICAL_BACKUP_S3_REGION", ""),
            ("LOGICAL_BACKUP_PROVIDER", ""),
            ("AWS_ACCESS_KEY_ID", ""),
            ("AWS_SECRET_ACCESS_KEY", ""),
            ("LOGICAL_BACKUP_RETENTION_COUNT", "0"),
            ("LOGICAL_BACKUP_CONNECT_RETRY_DELAY", "5s"),
        ])
        .unwrap();
        assert_eq!(c.base, "acid-x/logical_backups/");
        assert_eq!(c.retention.max_age, None);
        assert_eq!(
            c.retention.max_count,
            Some(1),
            "the newest backup is always kept"
        );
        assert_eq!(
            (c.store.sse.clone(), c.store.region.as_str()),
            (None, "us-east-1")
        );
        assert_eq!(
            c.store.credentials, None,
            "the SDK's default chain (web identity, instance role)"
        );
        assert_eq!(c.connect_delay, Duration::from_secs(5));
        assert_eq!(c.uid, None);
    }

    #[test]
    fn errors_name_the_variable() {
        for provider in ["gcs", "az"] {
            let e = with(&[("LOGICAL_BACKUP_PROVIDER", provider)])
                .unwrap_err()
                .to_string();
            assert!(
                e.starts_with(&format!("LOGICAL_BACKUP_PROVIDER={provider}: only s3")),
                "{e}"
            );
        }
        let e = with(&[("LOGICAL_BACKUP_S3_BUCKET", "")]).unwrap_err();
        assert_eq!(e, Error::Missing("LOGICAL_BACKUP_S3_BUCKET"));
        let e = with(&[("SCOPE", "")]).unwrap_err();
        assert_eq!(e, Error::Missing("SCOPE"));
        for (var, value) in [
            ("LOGICAL_BACKUP_S3_RETENTION_TIME", "a week"),
            ("LOGICAL_BACKUP_RETENTION_COUNT", "-1"),
            ("LOGICAL_BACKUP_CONNECT_RETRIES", "many"),
            ("LOGICAL_BACKUP_S3_BUCKET", "b/p"),
        ] {
            let e = with(&[(var, value)]).unwrap_err().to_string();
            assert!(e.starts_with(&format!("{var}: ")), "{e}");
        }
        let e = with(&[("AWS_SECRET_ACCESS_KEY", "")]).unwrap_err();
        assert_eq!(e, Error::Missing("AWS_SECRET_ACCESS_KEY"));
    }

    #[test]
    fn another_clusters_prefix() {
        let env = map(BASE);
        let o = Overrides {
            scope: Some("acid-old".into()),
            scope_suffix: Some(String::new()),
        };
        let c = Config::from_env(&env, &o).unwrap();
        assert_eq!(c.base, "spilo/acid-old/logical_backups/");
    }
}
