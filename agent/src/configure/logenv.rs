//! The log-shipping envdir (`LOG_ENV_DIR`) read by the daily/hourly CSV log upload.

use serde::de::{Deserializer, MapAccess, Visitor};

use super::env::{Env, Legacy};
use super::layout::Layout;
use super::Error;

pub struct LogShipping {
    pub env_dir: std::path::PathBuf,
    pub hourly: bool,
    pub files: Vec<(String, String)>,
}

/// None unless `LOG_S3_BUCKET` is set. `member` is the instance id in the object key (the pod name).
pub fn log_shipping(
    env: &Env,
    layout: &Layout,
    member: &str,
    namespace: &str,
) -> Result<Option<LogShipping>, Error> {
    let Some(bucket) = env.get("LOG_S3_BUCKET") else {
        return Ok(None);
    };
    let hourly = log_ship_hourly(env)?;
    let ns_prefix = match namespace {
        "" | "default" => String::new(),
        ns => format!("{ns}-"),
    };
    let mut key = format!(
        "spilo/{}{}{}/log/",
        env.setdefault("LOG_BUCKET_SCOPE_PREFIX", &ns_prefix),
        env.str_or("SCOPE", "dummy"),
        env.setdefault("LOG_BUCKET_SCOPE_SUFFIX", "")
    );
    if env.bool("LOG_GROUP_BY_DATE", false, Legacy::NonEmpty)? {
        key.push_str("{DATE}/");
    }
    key.push_str(member);

    let mut files = vec![
        (
            "LOG_TMPDIR".to_string(),
            layout.log_tmpdir.display().to_string(),
        ),
        (
            "LOG_SHIP_HOURLY".into(),
            if hourly { "true".into() } else { String::new() },
        ),
        // Spilo fell back to the metadata-service zone minus its last letter (`loca` locally); we never query it.
        ("LOG_AWS_REGION".into(), env.str_or("AWS_REGION", "")),
        ("LOG_S3_ENDPOINT".into(), env.str_or("LOG_S3_ENDPOINT", "")),
        ("LOG_S3_KEY".into(), key),
        ("LOG_S3_BUCKET".into(), bucket.to_string()),
        ("LOG_S3_TAGS".into(), tags(env)?),
        ("PGLOG".into(), layout.pg_log.display().to_string()),
    ];
    if let Some(endpoint) = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT") {
        // Older boto3 needs the trailing slash.
        let endpoint = if endpoint.ends_with('/') {
            endpoint.to_string()
        } else {
            format!("{endpoint}/")
        };
        files.push(("AWS_EC2_METADATA_SERVICE_ENDPOINT".into(), endpoint));
    }
    if let Some(mode) = env.get("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE") {
        files.push((
            "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE".into(),
            mode.to_string(),
        ));
    }
    let env_dir = env.path_or("LOG_ENV_DIR", &layout.rw_dir.join("etc/log.d/env"))?;
    Ok(Some(LogShipping {
        env_dir,
        hourly,
        files,
    }))
}

pub fn log_ship_hourly(env: &Env) -> Result<bool, Error> {
    env.bool("LOG_SHIP_HOURLY", false, Legacy::EqTrueIgnoreCase)
}

/// `LOG_S3_TAGS={"tag": "ENV_VAR", ...}` → `tag=<value of ENV_VAR>&...`, in the order given.
fn tags(env: &Env) -> Result<String, Error> {
    let text = env.get("LOG_S3_TAGS").unwrap_or("{}");
    let pairs = parse_ordered_object(text).map_err(|e| Error::invalid("LOG_S3_TAGS", e))?;
    let mut out = Vec::new();
    for (tag, var) in pairs {
        let value = env.get(&var).unwrap_or_else(|| {
            // Spilo wrote the literal `None` here.
            env.warn(format!(
                "LOG_S3_TAGS: tag {tag} refers to {var}, which is not set; the tag is left empty"
            ));
            ""
        });
        out.push(format!("{tag}={value}"));
    }
    Ok(out.join("&"))
}

/// A JSON object of strings with its key order preserved (serde_json's map sorts keys).
fn parse_ordered_object(text: &str) -> Result<Vec<(String, String)>, String> {
    struct Pairs;
    impl<'de> Visitor<'de> for Pairs {
        type Value = Vec<(String, String)>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object mapping tag names to environment variable names")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = Vec::new();
            while let Some(pair) = map.next_entry::<String, String>()? {
                out.push(pair);
            }
            Ok(out)
        }
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let pairs = de
        .deserialize_map(Pairs)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    de.end().map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut v: BTreeMap<String, String> = [
            ("PGROOT", "/pg/root"),
            ("PGLOG", "/pg/root/pg_log"),
            ("LOG_ENV_DIR", "/run/etc/log.d/env"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        v.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    fn files(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let v = vars(pairs);
        let env = Env::new(&v);
        let layout = Layout::from_env(&env).unwrap();
        log_shipping(&env, &layout, "pod-0", "team")
            .unwrap()
            .unwrap()
            .files
            .into_iter()
            .collect()
    }

    #[test]
    fn disabled_without_bucket() {
        let v = vars(&[]);
        let env = Env::new(&v);
        assert!(
            log_shipping(&env, &Layout::from_env(&env).unwrap(), "x", "")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn key_tags_and_imds() {
        let f = files(&[
            ("LOG_S3_BUCKET", "logs"),
            ("SCOPE", "c"),
            ("LOG_GROUP_BY_DATE", "true"),
            ("LOG_S3_TAGS", r#"{"zeta": "SCOPE", "alpha": "POD"}"#),
            ("POD", "p1"),
            (
                "AWS_EC2_METADATA_SERVICE_ENDPOINT",
                "http://169.254.169.254",
            ),
        ]);
        assert_eq!(f["LOG_S3_KEY"], "spilo/team-c/log/{DATE}/pod-0");
        assert_eq!(f["LOG_S3_TAGS"], "zeta=c&alpha=p1");
        assert_eq!(
            f["AWS_EC2_METADATA_SERVICE_ENDPOINT"],
            "http://169.254.169.254/"
        );
        assert_eq!(f["LOG_TMPDIR"], "/pg/tmp");
        assert_eq!(f["LOG_AWS_REGION"], "");
        assert_eq!(f["LOG_SHIP_HOURLY"], "");
    }

    #[test]
    fn bad_tags_json() {
        let v = vars(&[("LOG_S3_BUCKET", "logs"), ("LOG_S3_TAGS", "{\"a\": 1}")]);
        let env = Env::new(&v);
        let err = log_shipping(&env, &Layout::from_env(&env).unwrap(), "x", "")
            .err()
            .unwrap()
            .to_string();
        assert!(err.starts_with("LOG_S3_TAGS: invalid JSON"), "{err}");
    }

    #[test]
    fn missing_tag_variable_is_empty_with_a_warning() {
        let v = vars(&[
            ("LOG_S3_BUCKET", "logs"),
            ("LOG_S3_TAGS", "{\"a\": \"NOPE\"}"),
        ]);
        let env = Env::new(&v);
        let l = log_shipping(&env, &Layout::from_env(&env).unwrap(), "x", "")
            .unwrap()
            .unwrap();
        assert!(l.files.contains(&("LOG_S3_TAGS".into(), "a=".into())));
        assert_eq!(env.take_warnings().len(), 1);
    }
}
