//! Periodic jobs. Spilo installed a crontab and ran cron; pgherd has no cron, so `configure` writes the jobs to
//! `$RW_DIR/etc/pgherd/schedule.json` (and returns them) for the agent to run itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::env::{yaml_error, Env};
use super::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// Base backup + retention (Spilo: `envdir <env_dir> postgres_backup.sh <pgdata>`). Only with WAL storage.
    pub backup: Option<BackupJob>,
    /// CSV log upload (Spilo: `nice -n 5 envdir <env_dir> upload_pg_log_to_s3.py`). Only with `LOG_S3_BUCKET`.
    pub log_upload: Option<LogUploadJob>,
    /// Reload Postgres when the TLS files change (Spilo: `test_reload_ssl.sh`, every 5 minutes).
    pub ssl_reload: Option<SslReloadJob>,
    /// `CRONTAB` lines, verbatim (5-field schedule + shell command).
    pub extra: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupJob {
    pub schedule: String,
    pub env_dir: PathBuf,
    pub pgdata: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogUploadJob {
    pub schedule: String,
    pub env_dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SslReloadJob {
    pub schedule: String,
    /// PGDATA and the non-empty TLS file variables, as Spilo passed them to the script.
    pub env: BTreeMap<String, String>,
    /// Where the content hashes of the watched files are kept between runs.
    pub hash_dir: PathBuf,
}

/// A standard 5-field cron schedule (or `@daily`-style shortcut), checked with the `cron` crate, which wants a
/// leading seconds field and numbers days of the week 1-7 from Sunday instead of 0-7.
pub fn validate_cron(var: &str, expr: &str) -> Result<String, Error> {
    parse_cron(var, expr)?;
    Ok(expr.trim().to_string())
}

/// The `cron` crate's schedule for a standard 5-field expression (what the agent's scheduler runs).
pub fn parse_cron(var: &str, expr: &str) -> Result<cron::Schedule, Error> {
    let expr = expr.trim();
    let bad = |why: String| {
        Error::invalid(
            var,
            format!("{expr:?} is not a valid 5-field cron schedule ({why})"),
        )
    };
    let candidate = if expr.starts_with('@') {
        expr.to_string()
    } else {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(bad(format!("{} fields", fields.len())));
        }
        format!(
            "0 {} {} {} {} {}",
            fields[0],
            fields[1],
            fields[2],
            fields[3],
            cron_crate_weekdays(fields[4])
        )
    };
    cron::Schedule::from_str(&candidate).map_err(|e| {
        // The crate's message spans lines and echoes our translated expression; keep its last line only.
        let detail = e.to_string();
        let last = detail
            .lines()
            .map(str::trim)
            .rfind(|l| !l.is_empty() && !l.starts_with('^'));
        match last {
            Some(line) if line.to_ascii_lowercase().contains("days of week") => {
                bad("day of week must be 0-7 or SUN-SAT".into())
            }
            Some(line) if line != candidate => bad(line.to_string()),
            _ => bad("unparsable".into()),
        }
    })
}

/// Maps cron's 0-7 weekday numbers onto the crate's 1-7 so ranges stay ordered.
fn cron_crate_weekdays(field: &str) -> String {
    let mut out = String::new();
    let mut number = String::new();
    let mut after_slash = false;
    let flush = |number: &mut String, out: &mut String, after_slash: bool| {
        if !number.is_empty() {
            let n: u64 = number.parse().unwrap_or(u64::MAX);
            let mapped = if after_slash || n == 7 {
                n
            } else {
                n.saturating_add(1)
            };
            out.push_str(&mapped.to_string());
            number.clear();
        }
    };
    for c in field.chars() {
        if c.is_ascii_digit() {
            number.push(c);
        } else {
            flush(&mut number, &mut out, after_slash);
            after_slash = c == '/';
            out.push(c);
        }
    }
    flush(&mut number, &mut out, after_slash);
    out
}

/// `CRONTAB`: a YAML list of crontab lines.
pub fn extra_lines(env: &Env) -> Result<Vec<String>, Error> {
    let text = env.get("CRONTAB").unwrap_or("[]");
    let value: serde_json::Value =
        serde_yaml_ng::from_str(text).map_err(|e| Error::invalid("CRONTAB", yaml_error(&e)))?;
    match value {
        serde_json::Value::Null => Ok(Vec::new()),
        serde_json::Value::Array(items) => items
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(s) => Ok(s),
                other => Err(Error::invalid(
                    "CRONTAB",
                    format!("must be a list of strings, found {other}"),
                )),
            })
            .collect(),
        _ => Err(Error::invalid(
            "CRONTAB",
            "must be a YAML list of crontab lines",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_standard_cron() {
        for expr in [
            "0 1 * * *",
            "15 3 * * *",
            "*/5 * * * *",
            "1 */1 * * *",
            "0 2 * * 0",
            "0 2 * * 1-5",
            "0 0 1 1 7",
            "0 4 * * sun",
            "@daily",
            "0 0 * * 5-7",
            "0 0 * * */2",
        ] {
            assert_eq!(
                validate_cron("BACKUP_SCHEDULE", expr).unwrap(),
                expr,
                "{expr}"
            );
        }
    }

    #[test]
    fn rejects_garbage() {
        for expr in [
            "",
            "0 1 * *",
            "0 1 * * * *",
            "61 1 * * *",
            "0 25 * * *",
            "0 1 * * 8",
            "every day",
        ] {
            let err = validate_cron("BACKUP_SCHEDULE", expr)
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("BACKUP_SCHEDULE: "), "{err}");
            assert!(
                err.contains("is not a valid 5-field cron schedule"),
                "{err}"
            );
        }
    }

    #[test]
    fn weekday_mapping() {
        assert_eq!(cron_crate_weekdays("0-6"), "1-7");
        assert_eq!(cron_crate_weekdays("5-7"), "6-7");
        assert_eq!(cron_crate_weekdays("1,3/2"), "2,4/2");
        assert_eq!(cron_crate_weekdays("*"), "*");
    }

    #[test]
    fn crontab_lines() {
        let vars: std::collections::BTreeMap<String, String> = [(
            "CRONTAB".to_string(),
            "['0 * * * * echo hi', \"5 4 * * * true\"]".to_string(),
        )]
        .into();
        assert_eq!(
            extra_lines(&Env::new(&vars)).unwrap(),
            ["0 * * * * echo hi", "5 4 * * * true"]
        );
        let vars: std::collections::BTreeMap<String, String> =
            [("CRONTAB".to_string(), "{a: 1}".to_string())].into();
        assert_eq!(
            extra_lines(&Env::new(&vars)).unwrap_err().to_string(),
            "CRONTAB: must be a YAML list of crontab lines"
        );
    }
}
