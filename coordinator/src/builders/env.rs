//! The Spilo environment contract (`generateSpiloPodEnvVars`), in upstream's
//! order: the agent reads the same variables Spilo's `configure_spilo.py`
//! does, and tools that inspect pods by index keep working.

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector, SecretKeySelector};
use pgherd_shared::crd::postgresql::{CloneDescription, StandbyDescription};

use super::Cluster;

pub fn lit(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        value_from: None,
    }
}

pub fn field_ref(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                api_version: Some("v1".into()),
                field_path: path.into(),
            }),
            ..Default::default()
        }),
    }
}

pub fn secret_ref(name: &str, secret: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: None,
            }),
            ..Default::default()
        }),
    }
}

/// Appends `extra`, skipping names already present (case-insensitively):
/// earlier sources win, which is how upstream layers precedence.
pub fn append_env_vars(env: &mut Vec<EnvVar>, extra: impl IntoIterator<Item = EnvVar>) {
    for e in extra {
        if !env.iter().any(|x| x.name.eq_ignore_ascii_case(&e.name)) {
            env.push(e);
        }
    }
}

const IRSA_TOKEN_FILE: &str = "/var/run/secrets/eks.amazonaws.com/serviceaccount/token";

fn bucket_scope_suffix(uid: &str) -> String {
    if uid.is_empty() {
        String::new()
    } else {
        format!("/{uid}")
    }
}

pub fn clone_env(c: &Cluster, d: &CloneDescription) -> Vec<EnvVar> {
    let mut out = Vec::new();
    if d.cluster.is_empty() {
        return out;
    }
    let cfg = c.cfg;
    out.push(lit("CLONE_SCOPE", &d.cluster));
    match d.timestamp.as_deref().filter(|t| !t.is_empty()) {
        None => {
            out.push(lit("CLONE_METHOD", "CLONE_WITH_BASEBACKUP"));
            out.push(lit("CLONE_HOST", &d.cluster));
            out.push(lit("CLONE_PORT", "5432"));
            out.push(lit("CLONE_USER", &cfg.replication_username));
            out.push(secret_ref(
                "CLONE_PASSWORD",
                &pgherd_shared::naming::credentials_secret(
                    &cfg.secret_name_template,
                    &cfg.replication_username,
                    &d.cluster,
                    &c.namespace,
                ),
                "password",
            ));
        }
        Some(ts) => {
            match d.s3_wal_path.as_deref().filter(|p| !p.is_empty()) {
                None => {
                    if !cfg.wal_s3_bucket.is_empty() {
                        out.push(lit("CLONE_WAL_S3_BUCKET", &cfg.wal_s3_bucket));
                    } else if !cfg.wal_gs_bucket.is_empty() {
                        out.push(lit("CLONE_WAL_GS_BUCKET", &cfg.wal_gs_bucket));
                        if !cfg.gcp_credentials.is_empty() {
                            out.push(lit(
                                "CLONE_GOOGLE_APPLICATION_CREDENTIALS",
                                &cfg.gcp_credentials,
                            ));
                        }
                    } else if !cfg.wal_az_storage_account.is_empty() {
                        out.push(lit(
                            "CLONE_AZURE_STORAGE_ACCOUNT",
                            &cfg.wal_az_storage_account,
                        ));
                    }
                    out.push(lit(
                        "CLONE_WAL_BUCKET_SCOPE_SUFFIX",
                        bucket_scope_suffix(d.uid.as_deref().unwrap_or_default()),
                    ));
                }
                Some(path) => out.push(lit("CLONE_WALE_S3_PREFIX", path)),
            }
            out.push(lit("CLONE_METHOD", "CLONE_WITH_WALE"));
            out.push(lit("CLONE_TARGET_TIME", ts));
            out.push(lit("CLONE_WAL_BUCKET_SCOPE_PREFIX", ""));
            if let Some(ep) = d.s3_endpoint.as_deref().filter(|e| !e.is_empty()) {
                out.push(lit("CLONE_AWS_ENDPOINT", ep));
                out.push(lit("CLONE_WALE_S3_ENDPOINT", ep));
            }
            if let Some(k) = d.s3_access_key_id.as_deref().filter(|e| !e.is_empty()) {
                out.push(lit("CLONE_AWS_ACCESS_KEY_ID", k));
            }
            if let Some(k) = d.s3_secret_access_key.as_deref().filter(|e| !e.is_empty()) {
                out.push(lit("CLONE_AWS_SECRET_ACCESS_KEY", k));
            }
            if let Some(force) = d.s3_force_path_style {
                out.push(lit(
                    "CLONE_AWS_S3_FORCE_PATH_STYLE",
                    if force { "1" } else { "0" },
                ));
            }
        }
    }
    if !cfg.irsa_role_arn.is_empty() {
        out.push(lit("CLONE_AWS_ROLE_ARN", &cfg.irsa_role_arn));
        out.push(lit("CLONE_AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN_FILE));
    }
    out
}

pub fn standby_env(c: &Cluster, d: &StandbyDescription) -> Vec<EnvVar> {
    let mut out = Vec::new();
    let set = |v: &Option<String>| v.clone().filter(|s| !s.is_empty());
    if let Some(host) = set(&d.standby_host) {
        out.push(lit("STANDBY_HOST", host));
        if let Some(port) = set(&d.standby_port) {
            out.push(lit("STANDBY_PORT", port));
        }
        if let Some(slot) = set(&d.standby_primary_slot_name) {
            out.push(lit("STANDBY_PRIMARY_SLOT_NAME", slot));
        }
    }
    let wal = set(&d.s3_wal_path)
        .map(|p| ("STANDBY_WALE_S3_PREFIX", p))
        .or_else(|| set(&d.gs_wal_path).map(|p| ("STANDBY_WALE_GS_PREFIX", p)));
    if let Some((name, path)) = wal {
        out.push(lit(name, path));
        out.push(lit("STANDBY_METHOD", "STANDBY_WITH_WALE"));
        out.push(lit("STANDBY_WAL_BUCKET_SCOPE_PREFIX", ""));
    }
    if !c.cfg.irsa_role_arn.is_empty() {
        out.push(lit("STANDBY_AWS_ROLE_ARN", &c.cfg.irsa_role_arn));
        out.push(lit("STANDBY_AWS_WEB_IDENTITY_TOKEN_FILE", IRSA_TOKEN_FILE));
    }
    out
}

/// All env vars of the database container, before TLS additions.
pub fn spilo_env(c: &Cluster, spilo_configuration: &str) -> Vec<EnvVar> {
    let cfg = c.cfg;
    let spec = &c.pg.spec;
    let mut env = vec![
        lit("SCOPE", &c.name),
        lit("PGROOT", "/home/postgres/pgdata/pgroot"),
        field_ref("POD_IP", "status.podIP"),
        field_ref("POD_NAMESPACE", "metadata.namespace"),
        lit("PGUSER_SUPERUSER", &cfg.super_username),
        lit("KUBERNETES_SCOPE_LABEL", &cfg.cluster_name_label),
        lit("KUBERNETES_ROLE_LABEL", &cfg.pod_role_label),
        secret_ref(
            "PGPASSWORD_SUPERUSER",
            &c.secret_name(&cfg.super_username),
            "password",
        ),
        lit("PGUSER_STANDBY", &cfg.replication_username),
        secret_ref(
            "PGPASSWORD_STANDBY",
            &c.secret_name(&cfg.replication_username),
            "password",
        ),
        lit("PAM_OAUTH2", &cfg.pam_configuration),
        lit("HUMAN_ROLE", &cfg.pam_role_name),
    ];
    if cfg.enable_spilo_wal_path_compat {
        env.push(lit("ENABLE_WAL_PATH_COMPAT", "true"));
    }
    if cfg.enable_pgversion_env_var {
        env.push(lit("PGVERSION", &spec.postgresql.version));
    }
    env.push(lit(
        "KUBERNETES_LABELS",
        serde_json::to_string(&cfg.cluster_labels).expect("string map"),
    ));
    if !spilo_configuration.is_empty() {
        env.push(lit("SPILO_CONFIGURATION", spilo_configuration));
    }
    if c.patroni_uses_kubernetes() {
        env.push(lit("DCS_ENABLE_KUBERNETES_API", "true"));
        if cfg.enable_pod_disruption_budget {
            env.push(lit(
                "KUBERNETES_BOOTSTRAP_LABELS",
                r#"{"critical-operation":"true"}"#,
            ));
        }
    } else {
        env.push(lit("ETCD_HOST", &cfg.etcd_host));
    }
    if c.patroni_uses_configmaps() {
        env.push(lit("KUBERNETES_USE_CONFIGMAPS", "true"));
    }

    append_env_vars(&mut env, spec.env.iter().flatten().cloned());
    // Clone and standby variables are appended without de-duplication upstream.
    if let Some(clone) = &spec.clone {
        env.extend(clone_env(c, clone));
    }
    if let Some(standby) = &spec.standby {
        env.extend(standby_env(c, standby));
    }
    if let Some(keys) = &c.inputs.pod_env_secret_keys {
        let mut keys = keys.clone();
        keys.sort();
        append_env_vars(
            &mut env,
            keys.iter()
                .map(|k| secret_ref(k, &cfg.pod_environment_secret, k)),
        );
    }
    if let Some(data) = &c.inputs.pod_env_configmap {
        // BTreeMap iterates sorted, as upstream sorts the keys.
        append_env_vars(&mut env, data.iter().map(|(k, v)| lit(k, v)));
    }

    let suffix = bucket_scope_suffix(&c.uid);
    let mut global = Vec::new();
    for (name, bucket) in [
        ("WAL_S3_BUCKET", &cfg.wal_s3_bucket),
        ("WAL_GS_BUCKET", &cfg.wal_gs_bucket),
        ("AZURE_STORAGE_ACCOUNT", &cfg.wal_az_storage_account),
    ] {
        if !bucket.is_empty() {
            global.push(lit(name, bucket));
            global.push(lit("WAL_BUCKET_SCOPE_SUFFIX", &suffix));
            global.push(lit("WAL_BUCKET_SCOPE_PREFIX", ""));
        }
    }
    if !cfg.gcp_credentials.is_empty() {
        global.push(lit("GOOGLE_APPLICATION_CREDENTIALS", &cfg.gcp_credentials));
    }
    if !cfg.log_s3_bucket.is_empty() {
        global.push(lit("LOG_S3_BUCKET", &cfg.log_s3_bucket));
        global.push(lit("LOG_BUCKET_SCOPE_SUFFIX", &suffix));
        global.push(lit("LOG_BUCKET_SCOPE_PREFIX", ""));
    }
    append_env_vars(&mut env, global);
    env
}
