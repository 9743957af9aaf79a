//! The logical backup CronJob (upstream's `generateLogicalBackupJob` in
//! `pkg/cluster/k8sres.go`) and the Secret holding its storage credentials.
//!
//! Differences from upstream, each deliberate:
//! - The job runs `pgherd-agent logical-backup run` from the cluster's own
//!   database image, so its `pg_dump` matches the server's major version;
//!   `logical_backup_docker_image` is not used.
//! - Storage keys from the configuration never appear in the CronJob: they go
//!   into a per-cluster Secret the env refers to (upstream writes them as
//!   literal env values, zalando/postgres-operator#1348).
//! - `logical_backup_cronjob_environment_secret` is passed whole with
//!   `envFrom`, so keys added to it later reach the next job without a sync.
//! - No container ports and no pod affinity to the job's own labels (upstream
//!   copies both from the database pod, where they mean nothing for a job).

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    Affinity, Container, EnvFromSource, EnvVar, PodSpec, PodTemplateSpec, Secret, SecretEnvSource,
    SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::ByteString;
use pgherd_shared::crd::operator_configuration::LogicalBackupConfiguration;
use pgherd_shared::crd::postgresql::{ResourceDescription, Resources};

use super::env::{field_ref, lit, secret_ref};
use super::resources::{requirements, Defaults};
use super::statefulset::{
    node_affinity, pod_annotations, pod_security_context, tolerations, topology_spread_constraints,
};
use super::{BuildError, Cluster};
use crate::config::OperatorConfig;

/// The `application` label of the CronJob, its Jobs and pods (upstream's).
pub const APPLICATION: &str = "spilo-logical-backup";
pub const CONTAINER: &str = "logical-backup";
/// The job program, from the database image.
pub const COMMAND: [&str; 3] = ["/usr/local/bin/pgherd-agent", "logical-backup", "run"];
/// CronJob names are limited so that the Jobs' names (name + 11-character
/// suffix) stay valid labels (upstream's `trimCronjobName`).
const MAX_NAME_LEN: usize = 52;
/// Kubernetes' default of 6 retries re-dumps the whole cluster up to seven
/// times for an error that will not go away (wrong credentials, a missing
/// bucket), over about ten minutes of backoff. Two retries cover what is
/// transient (a switchover or an S3 hiccup during the dump); the job applies
/// retention only after a success, so a retry never loses a backup.
pub const BACKOFF_LIMIT: i32 = 2;

const DEFAULT_SCHEDULE: &str = "30 00 * * *";
const DEFAULT_PROVIDER: &str = "s3";
const DEFAULT_BUCKET_PREFIX: &str = "spilo";
const DEFAULT_JOB_PREFIX: &str = "logical-backup-";
const DEFAULT_HISTORY_LIMIT: u32 = 3;
const DEFAULT_TTL_SECONDS: u32 = 86400;

/// What a cluster with `enableLogicalBackup: true` needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LogicalBackup {
    pub cronjob: CronJob,
    /// The storage keys of the configuration, when it has any.
    pub secret: Option<Secret>,
}

fn settings(cfg: &OperatorConfig) -> LogicalBackupConfiguration {
    cfg.raw.logical_backup.clone().unwrap_or_default()
}

fn or(v: &Option<String>, default: &str) -> String {
    v.clone()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.into())
}

fn i32_of(v: Option<u32>, default: u32) -> i32 {
    i32::try_from(v.unwrap_or(default)).unwrap_or(i32::MAX)
}

/// `{logical_backup_job_prefix}{cluster}`, cut to 52 characters without a
/// trailing `-`; the CronJob and its Secret share it.
pub fn name(cfg: &OperatorConfig, cluster: &str) -> String {
    let prefix = or(&settings(cfg).logical_backup_job_prefix, DEFAULT_JOB_PREFIX);
    let mut name = format!("{prefix}{cluster}");
    if name.len() > MAX_NAME_LEN {
        name.truncate(MAX_NAME_LEN);
        name.truncate(name.trim_end_matches('-').len());
    }
    name
}

/// The cluster's selector labels with `application` replaced: what selects
/// the CronJob and its Secret (and what the coordinator's CronJob watch
/// selects, without the name label).
pub fn selector(cfg: &OperatorConfig, cluster: &str) -> BTreeMap<String, String> {
    let mut l = cfg.selector_labels(cluster);
    l.insert("application".into(), APPLICATION.into());
    l
}

/// The CronJob and Secret are owned by the `postgresql` whatever
/// `enable_owner_references` says: they hold nothing worth keeping, so the
/// garbage collector may remove them with the cluster (the coordinator deletes
/// them itself too). The CR's own references are kept, as upstream.
fn owner_references(c: &Cluster) -> Option<Vec<OwnerReference>> {
    let mut refs = c.owner_references().unwrap_or_default();
    if !c.uid.is_empty() && !refs.iter().any(|r| r.uid == c.uid) {
        let controlled = refs.iter().any(|r| r.controller == Some(true));
        refs.push(OwnerReference {
            api_version: "acid.zalan.do/v1".into(),
            kind: "postgresql".into(),
            name: c.name.clone(),
            uid: c.uid.clone(),
            controller: Some(!controlled),
            block_owner_deletion: None,
        });
    }
    (!refs.is_empty()).then_some(refs)
}

/// Storage keys of the configuration, by the env name the job reads them as.
fn credentials(lb: &LogicalBackupConfiguration, provider: &str) -> BTreeMap<String, String> {
    let keys: &[(&str, &Option<String>)] = match provider {
        "s3" => &[
            ("AWS_ACCESS_KEY_ID", &lb.logical_backup_s3_access_key_id),
            (
                "AWS_SECRET_ACCESS_KEY",
                &lb.logical_backup_s3_secret_access_key,
            ),
        ],
        "az" => &[(
            "LOGICAL_BACKUP_AZURE_STORAGE_ACCOUNT_KEY",
            &lb.logical_backup_azure_storage_account_key,
        )],
        _ => &[],
    };
    keys.iter()
        .filter_map(|(k, v)| Some((k.to_string(), (*v).clone().filter(|v| !v.is_empty())?)))
        .collect()
}

/// Upstream's `generateLogicalBackupPodEnvVars`, in its order, with
/// `NODE_NAME` added (the job prefers a replica on its own node) and the
/// storage keys as references to `secret`.
fn env(c: &Cluster, lb: &LogicalBackupConfiguration, secret: &str) -> Vec<EnvVar> {
    let cfg = c.cfg;
    let provider = or(&lb.logical_backup_provider, DEFAULT_PROVIDER);
    let retention =
        c.pg.spec
            .logical_backup_retention
            .clone()
            .filter(|r| !r.is_empty())
            .or_else(|| lb.logical_backup_s3_retention_time.clone())
            .unwrap_or_default();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut env = vec![
        lit("SCOPE", &c.name),
        lit("CLUSTER_NAME_LABEL", &cfg.cluster_name_label),
        field_ref("POD_NAMESPACE", "metadata.namespace"),
        field_ref("NODE_NAME", "spec.nodeName"),
        lit("PG_VERSION", &c.pg.spec.postgresql.version),
        lit("PGPORT", "5432"),
        lit("PGUSER", &cfg.super_username),
        lit("PGDATABASE", "postgres"),
        lit("PGSSLMODE", "require"),
        secret_ref(
            "PGPASSWORD",
            &c.secret_name(&cfg.super_username),
            "password",
        ),
        lit("LOGICAL_BACKUP_PROVIDER", &provider),
        lit(
            "LOGICAL_BACKUP_S3_BUCKET",
            text(&lb.logical_backup_s3_bucket),
        ),
        lit(
            "LOGICAL_BACKUP_S3_BUCKET_PREFIX",
            or(&lb.logical_backup_s3_bucket_prefix, DEFAULT_BUCKET_PREFIX),
        ),
        lit(
            "LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX",
            if c.uid.is_empty() {
                String::new()
            } else {
                format!("/{}", c.uid)
            },
        ),
    ];
    match provider.as_str() {
        "s3" => env.extend([
            lit(
                "LOGICAL_BACKUP_S3_REGION",
                text(&lb.logical_backup_s3_region),
            ),
            lit(
                "LOGICAL_BACKUP_S3_ENDPOINT",
                text(&lb.logical_backup_s3_endpoint),
            ),
            lit("LOGICAL_BACKUP_S3_SSE", text(&lb.logical_backup_s3_sse)),
            lit("LOGICAL_BACKUP_S3_RETENTION_TIME", retention),
        ]),
        "gcs" => env.extend(
            lb.logical_backup_google_application_credentials
                .as_deref()
                .filter(|v| !v.is_empty())
                .map(|v| lit("LOGICAL_BACKUP_GOOGLE_APPLICATION_CREDENTIALS", v)),
        ),
        "az" => env.extend([
            lit(
                "LOGICAL_BACKUP_AZURE_STORAGE_ACCOUNT_NAME",
                text(&lb.logical_backup_azure_storage_account_name),
            ),
            lit(
                "LOGICAL_BACKUP_AZURE_STORAGE_CONTAINER",
                text(&lb.logical_backup_azure_storage_container),
            ),
        ]),
        _ => {}
    }
    env.extend(
        credentials(lb, &provider)
            .keys()
            .map(|k| secret_ref(k, secret, k)),
    );
    env
}

/// `logical_backup_{cpu,memory}_{request,limit}`, each falling back to the
/// database container's default; no minimum or maximum, as upstream.
fn resources(
    c: &Cluster,
    lb: &LogicalBackupConfiguration,
) -> Result<k8s_openapi::api::core::v1::ResourceRequirements, BuildError> {
    let rd = |cpu: &Option<String>, memory: &Option<String>| {
        Some(ResourceDescription {
            cpu: cpu.clone(),
            memory: memory.clone(),
            ..Default::default()
        })
    };
    let own = Resources {
        requests: rd(
            &lb.logical_backup_cpu_request,
            &lb.logical_backup_memory_request,
        ),
        limits: rd(
            &lb.logical_backup_cpu_limit,
            &lb.logical_backup_memory_limit,
        ),
    };
    requirements(
        "logical_backup",
        Some(&own),
        &Defaults::postgres(c.cfg),
        c.cfg,
        false,
        false,
    )
}

/// The CronJob and credentials Secret of `c`, or `None` when its logical
/// backup is not enabled.
pub fn logical_backup(c: &Cluster) -> Result<Option<LogicalBackup>, BuildError> {
    if c.pg.spec.enable_logical_backup != Some(true) {
        return Ok(None);
    }
    let cfg = c.cfg;
    let lb = settings(cfg);
    let name = name(cfg, &c.name);
    let mut labels = c.labels();
    labels.insert("application".into(), APPLICATION.into());
    let mut own = cfg.custom_pod_annotations.clone();
    own.extend(c.pg.spec.pod_annotations.clone().unwrap_or_default());
    let annotations = c.annotations(own);
    let owners = owner_references(c);

    let environment_secret = lb
        .logical_backup_cronjob_environment_secret
        .clone()
        .filter(|s| !s.is_empty());
    let container = Container {
        name: CONTAINER.into(),
        image: Some(c.docker_image()),
        image_pull_policy: Some("IfNotPresent".into()),
        command: Some(COMMAND.iter().map(|s| s.to_string()).collect()),
        env: Some(env(c, &lb, &name)),
        env_from: environment_secret.map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: s,
                    optional: None,
                }),
                ..Default::default()
            }]
        }),
        resources: Some(resources(c, &lb)?),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(cfg.spilo_allow_privilege_escalation),
            privileged: Some(cfg.spilo_privileged),
            read_only_root_filesystem: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    };
    let pod = PodSpec {
        containers: vec![container],
        restart_policy: Some("Never".into()),
        service_account_name: Some(cfg.pod_service_account_name.clone()),
        termination_grace_period_seconds: Some(cfg.pod_terminate_grace_period.as_secs() as i64),
        security_context: Some(pod_security_context(c)),
        tolerations: Some(tolerations(c)),
        affinity: node_affinity(c, None).map(|n| Affinity {
            node_affinity: Some(n),
            ..Default::default()
        }),
        topology_spread_constraints: topology_spread_constraints(c, &labels),
        ..Default::default()
    };
    let job = JobSpec {
        template: PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels.clone()),
                annotations: pod_annotations(c),
                ..Default::default()
            }),
            spec: Some(pod),
        },
        backoff_limit: Some(BACKOFF_LIMIT),
        ttl_seconds_after_finished: Some(i32_of(
            lb.logical_backup_ttl_seconds_after_finished,
            DEFAULT_TTL_SECONDS,
        )),
        ..Default::default()
    };
    let schedule =
        c.pg.spec
            .logical_backup_schedule
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| or(&lb.logical_backup_schedule, DEFAULT_SCHEDULE));
    let meta = ObjectMeta {
        name: Some(name.clone()),
        namespace: Some(c.namespace.clone()),
        labels: Some(labels),
        annotations,
        owner_references: owners,
        ..Default::default()
    };
    let cronjob = CronJob {
        metadata: meta.clone(),
        spec: Some(CronJobSpec {
            schedule,
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(i32_of(
                lb.logical_backup_successful_jobs_history_limit,
                DEFAULT_HISTORY_LIMIT,
            )),
            failed_jobs_history_limit: Some(i32_of(
                lb.logical_backup_failed_jobs_history_limit,
                DEFAULT_HISTORY_LIMIT,
            )),
            job_template: JobTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: meta.labels.clone(),
                    annotations: meta.annotations.clone(),
                    ..Default::default()
                }),
                spec: Some(job),
            },
            ..Default::default()
        }),
        status: None,
    };
    let keys = credentials(&lb, &or(&lb.logical_backup_provider, DEFAULT_PROVIDER));
    let secret = (!keys.is_empty()).then(|| Secret {
        metadata: ObjectMeta {
            annotations: None,
            ..meta
        },
        type_: Some("Opaque".into()),
        data: Some(
            keys.into_iter()
                .map(|(k, v)| (k, ByteString(v.into_bytes())))
                .collect(),
        ),
        ..Default::default()
    });
    Ok(Some(LogicalBackup { cronjob, secret }))
}

#[cfg(test)]
#[path = "logical_backup_tests.rs"]
mod tests;
