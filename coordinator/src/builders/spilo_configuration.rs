//! `SPILO_CONFIGURATION`, byte for byte as Zalando's
//! `generateSpiloJSONConfiguration` writes it.
//!
//! Byte equality matters beyond the golden tests: a cluster migrated from
//! Zalando keeps an identical pod environment, so taking it over does not
//! restart a single pod.

use std::collections::BTreeMap;

use pgherd_shared::crd::postgresql::{Patroni, PostgresqlParam};
use serde::Serialize;
use serde_json::Value;

use crate::config::OperatorConfig;

/// Parameters that Patroni must see in the local `postgresql.parameters`
/// (upstream's misleadingly named `isBootstrapOnlyParameter` returns false
/// for exactly these); all others go to `bootstrap.dcs`.
pub(crate) const LOCAL_PARAMETERS: &[&str] = &[
    "archive_command",
    "shared_buffers",
    "logging_collector",
    "log_destination",
    "log_directory",
    "log_filename",
    "log_file_mode",
    "log_rotation_age",
    "log_truncate_on_rotation",
    "ssl",
    "ssl_ca_file",
    "ssl_crl_file",
    "ssl_cert_file",
    "ssl_key_file",
    "shared_preload_libraries",
    "bg_mon.listen_address",
    "bg_mon.history_buckets",
    "pg_stat_statements.track_utility",
    "extwlist.extensions",
    "extwlist.custom_path",
];

/// initdb options that take no value; `"true"` turns them into bare flags.
const VALUELESS_INITDB_OPTIONS: &[&str] = &[
    "data-checksums",
    "debug",
    "no-locale",
    "noclean",
    "nosync",
    "sync-only",
];

#[derive(Serialize)]
struct SpiloConfiguration {
    postgresql: BTreeMap<String, Value>,
    bootstrap: Bootstrap,
}

#[derive(Serialize)]
struct Bootstrap {
    initdb: Vec<Value>,
    dcs: Dcs,
}

/// Field order and omission rules follow upstream's `patroniDCS` struct.
#[derive(Serialize, Default)]
struct Dcs {
    #[serde(skip_serializing_if = "Option::is_none")]
    ttl: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    loop_wait: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    retry_timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    maximum_lag_on_failover: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    synchronous_mode: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    synchronous_mode_strict: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    synchronous_node_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    postgresql: Option<BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    slots: Option<BTreeMap<String, BTreeMap<String, String>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    failsafe_mode: Option<bool>,
}

fn initdb(patroni: &Patroni) -> Vec<Value> {
    let mut list: Vec<Value> = vec![
        serde_json::json!({"auth-host": "scram-sha-256"}),
        serde_json::json!({"auth-local": "trust"}),
    ];
    // BTreeMap iteration is sorted, as upstream sorts the keys explicitly.
    'options: for (k, v) in patroni.initdb.iter().flatten() {
        for item in list.iter_mut() {
            match item {
                Value::Object(m) if m.contains_key(k) => {
                    m.insert(k.clone(), Value::String(v.clone()));
                    continue 'options;
                }
                Value::String(s) if s == v => continue 'options,
                _ => {}
            }
        }
        if v == "true" && VALUELESS_INITDB_OPTIONS.contains(&k.as_str()) {
            list.push(Value::String(k.clone()));
        } else {
            list.push(serde_json::json!({ k.clone(): v }));
        }
    }
    list
}

/// Go's `json.Marshal` escapes these even inside strings; so must we for
/// byte-identical output. They can only occur inside JSON strings here.
fn go_json_escape(s: &str) -> String {
    s.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

pub fn spilo_configuration(
    pg: &PostgresqlParam,
    patroni: Option<&Patroni>,
    cfg: &OperatorConfig,
) -> String {
    let default_patroni = Patroni::default();
    let patroni = patroni.unwrap_or(&default_patroni);

    let mut local_params = BTreeMap::new();
    let mut dcs_params = BTreeMap::new();
    for (k, v) in pg.parameters.iter().flatten() {
        if LOCAL_PARAMETERS.contains(&k.as_str()) {
            local_params.insert(k.clone(), v.clone());
        } else {
            dcs_params.insert(k.clone(), v.clone());
        }
    }

    let mut postgresql = BTreeMap::new();
    // PGVERSION is the preferred way; bin_dir would take precedence over it.
    if !cfg.enable_pgversion_env_var {
        postgresql.insert(
            "bin_dir".to_string(),
            Value::String(format!("/usr/lib/postgresql/{}/bin", pg.version)),
        );
    }
    if !local_params.is_empty() {
        postgresql.insert(
            "parameters".to_string(),
            serde_json::to_value(&local_params).expect("string map"),
        );
    }
    if let Some(hba) = patroni.pg_hba.as_ref().filter(|h| !h.is_empty()) {
        postgresql.insert(
            "pg_hba".to_string(),
            serde_json::to_value(hba).expect("list"),
        );
    }

    let nonzero = |v: Option<u32>| v.filter(|x| *x != 0);
    let dcs = Dcs {
        ttl: nonzero(patroni.ttl),
        loop_wait: nonzero(patroni.loop_wait),
        retry_timeout: nonzero(patroni.retry_timeout),
        maximum_lag_on_failover: patroni.maximum_lag_on_failover.filter(|v| *v > 0),
        synchronous_mode: patroni.synchronous_mode.filter(|v| *v),
        synchronous_mode_strict: patroni.synchronous_mode_strict.filter(|v| *v),
        synchronous_node_count: patroni.synchronous_node_count.filter(|v| *v >= 1),
        postgresql: (!dcs_params.is_empty())
            .then(|| BTreeMap::from([("parameters".to_string(), dcs_params)])),
        slots: patroni.slots.clone().filter(|s| !s.is_empty()),
        failsafe_mode: patroni.failsafe_mode.or(cfg.enable_patroni_failsafe_mode),
    };

    let config = SpiloConfiguration {
        postgresql,
        bootstrap: Bootstrap {
            initdb: initdb(patroni),
            dcs,
        },
    };
    go_json_escape(&serde_json::to_string(&config).expect("serialisable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Upstream's tests run with a zero-value config: PGVERSION off.
    fn go_zero_config(failsafe: Option<bool>) -> OperatorConfig {
        OperatorConfig {
            enable_pgversion_env_var: false,
            enable_patroni_failsafe_mode: failsafe,
            ..Default::default()
        }
    }

    fn pg18() -> PostgresqlParam {
        PostgresqlParam {
            version: "18".into(),
            parameters: None,
        }
    }

    // Golden strings from upstream's TestGenerateSpiloJSONConfiguration.
    #[test]
    fn default_configuration() {
        assert_eq!(
            spilo_configuration(&pg18(), Some(&Patroni::default()), &go_zero_config(None)),
            r#"{"postgresql":{"bin_dir":"/usr/lib/postgresql/18/bin"},"bootstrap":{"initdb":[{"auth-host":"scram-sha-256"},{"auth-local":"trust"}],"dcs":{}}}"#
        );
    }

    #[test]
    fn patroni_configured() {
        let patroni = Patroni {
            initdb: Some(BTreeMap::from([
                ("encoding".into(), "UTF8".into()),
                ("locale".into(), "en_US.UTF-8".into()),
                ("data-checksums".into(), "true".into()),
            ])),
            pg_hba: Some(vec![
                "hostssl all all 0.0.0.0/0 scram-sha-256".into(),
                "host    all all 0.0.0.0/0 scram-sha-256".into(),
            ]),
            ttl: Some(30),
            loop_wait: Some(10),
            retry_timeout: Some(10),
            maximum_lag_on_failover: Some(33554432),
            synchronous_mode: Some(true),
            synchronous_mode_strict: Some(true),
            synchronous_node_count: Some(1),
            slots: Some(BTreeMap::from([(
                "permanent_logical_1".into(),
                BTreeMap::from([
                    ("type".into(), "logical".into()),
                    ("database".into(), "foo".into()),
                    ("plugin".into(), "pgoutput".into()),
                ]),
            )])),
            failsafe_mode: Some(true),
        };
        assert_eq!(
            spilo_configuration(&pg18(), Some(&patroni), &go_zero_config(None)),
            r#"{"postgresql":{"bin_dir":"/usr/lib/postgresql/18/bin","pg_hba":["hostssl all all 0.0.0.0/0 scram-sha-256","host    all all 0.0.0.0/0 scram-sha-256"]},"bootstrap":{"initdb":[{"auth-host":"scram-sha-256"},{"auth-local":"trust"},"data-checksums",{"encoding":"UTF8"},{"locale":"en_US.UTF-8"}],"dcs":{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":33554432,"synchronous_mode":true,"synchronous_mode_strict":true,"synchronous_node_count":1,"slots":{"permanent_logical_1":{"database":"foo","plugin":"pgoutput","type":"logical"}},"failsafe_mode":true}}}"#
        );
    }

    #[test]
    fn failsafe_precedence() {
        let prefix = r#"{"postgresql":{"bin_dir":"/usr/lib/postgresql/18/bin"},"bootstrap":{"initdb":[{"auth-host":"scram-sha-256"},{"auth-local":"trust"}],"dcs":"#;
        let with = |spec: Option<bool>, global: Option<bool>| {
            let p = Patroni {
                failsafe_mode: spec,
                ..Default::default()
            };
            spilo_configuration(&pg18(), Some(&p), &go_zero_config(global))
        };
        assert_eq!(
            with(None, Some(true)),
            format!(r#"{prefix}{{"failsafe_mode":true}}}}}}"#)
        );
        assert_eq!(
            with(Some(false), Some(true)),
            format!(r#"{prefix}{{"failsafe_mode":false}}}}}}"#)
        );
        assert_eq!(
            with(Some(true), Some(false)),
            format!(r#"{prefix}{{"failsafe_mode":true}}}}}}"#)
        );
    }

    #[test]
    fn parameters_split_between_local_and_dcs() {
        let pg = PostgresqlParam {
            version: "17".into(),
            parameters: Some(BTreeMap::from([
                ("shared_buffers".into(), "32MB".into()),
                ("max_connections".into(), "10".into()),
                ("archive_command".into(), "a && b".into()),
            ])),
        };
        let cfg = OperatorConfig::default();
        assert_eq!(
            spilo_configuration(&pg, None, &cfg),
            r#"{"postgresql":{"parameters":{"archive_command":"a \u0026\u0026 b","shared_buffers":"32MB"}},"bootstrap":{"initdb":[{"auth-host":"scram-sha-256"},{"auth-local":"trust"}],"dcs":{"postgresql":{"parameters":{"max_connections":"10"}}}}}"#
        );
    }

    #[test]
    fn initdb_overrides_defaults_in_place() {
        let p = Patroni {
            initdb: Some(BTreeMap::from([("auth-host".into(), "md5".into())])),
            ..Default::default()
        };
        let s = spilo_configuration(&pg18(), Some(&p), &OperatorConfig::default());
        assert!(
            s.contains(r#""initdb":[{"auth-host":"md5"},{"auth-local":"trust"}]"#),
            "{s}"
        );
    }
}
