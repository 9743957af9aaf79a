//! Logical backups on the Kubernetes stand-in with the real images (issue 14): a cluster with
//! `enableLogicalBackup: true` gets its CronJob from the coordinator (installed from the chart, storage
//! keys in its configuration); the stand-in's CronJob controller starts a Job from it every minute; the
//! Job's pod runs `pgherd-agent logical-backup run` from the database image against Garage; the backup
//! is complete in S3 (its `manifest.json`, written last), the cluster's status gets `lastLogicalBackup`
//! (with no write to the CronJob in between) and the job's `LogicalBackup` Event is on the postgresql.
//! Data written after that backup reaches the next one, and `logical-backup restore --all` of it into a
//! fresh cluster gives the same table contents, roles, membership and database owner. Switching logical
//! backups off removes the CronJob and the Secret with the storage keys.
//!
//! The stand-in's simplifications apply (docs/kube-standin.md): no authorization, so the RBAC the job
//! needs is checked statically (coordinator/tests/deploy_rbac.rs), not here.

use std::time::Duration;

use pgherd_tests::podman::{self, POSTGRES_IMAGE};
use pgherd_tests::system::{name, pod_ip, psql, System};
use pgherd_tests::{rolling, tools, wait, Garage};
use serde_json::{json, Value};

const CLUSTER: &str = "acid-minimal-cluster";
const CRONJOB: &str = "logical-backup-acid-minimal-cluster";
/// The fresh cluster the backup is restored into.
const TARGET: &str = "acid-restored";
/// Holds the job's extra settings, passed whole with `envFrom`.
const ENV_SECRET: &str = "logical-backup-env";
const BOOT: Duration = Duration::from_secs(300);

/// Zalando's minimal manifest, one member, a backup every minute.
fn manifest() -> String {
    rolling::manifest(
        1,
        &json!({"enableLogicalBackup": true, "logicalBackupSchedule": "* * * * *"}),
    )
}

/// The Jobs the CronJob started, by their owner reference.
fn jobs(sys: &System) -> Vec<Value> {
    sys.list("batch/v1", "Job", "default", "")
        .into_iter()
        .filter(|j| {
            j["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|r| r.iter().any(|o| o["name"] == CRONJOB))
        })
        .collect()
}

/// Events on the postgresql, as `reason: message`.
fn cluster_events(sys: &System) -> Vec<String> {
    sys.list("v1", "Event", "default", "")
        .iter()
        .filter(|e| {
            e["involvedObject"]["kind"] == "postgresql" && e["involvedObject"]["name"] == CLUSTER
        })
        .map(|e| {
            format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or(""),
                e["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scheduled_job_backs_up_the_cluster_to_s3_and_reports_it() -> anyhow::Result<()> {
    let sys = System::start("pgh-lback", None).await?;
    // On the network's gateway, so that pods reach it.
    let garage = Garage::start_on(&sys.network.gateway).await?;
    let env_secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": ENV_SECRET, "namespace": "default"},
        "stringData": {"AWS_S3_FORCE_PATH_STYLE": "true"}});
    sys.kubectl_ok(&["apply", "-f", "-"], Some(&env_secret.to_string()))?;
    let set = [
        format!(
            "configLogicalBackup.logical_backup_s3_bucket={}",
            garage.bucket
        ),
        format!(
            "configLogicalBackup.logical_backup_s3_endpoint={}",
            garage.endpoint()
        ),
        format!(
            "configLogicalBackup.logical_backup_s3_region={}",
            garage.region
        ),
        format!(
            "configLogicalBackup.logical_backup_s3_access_key_id={}",
            garage.key_id
        ),
        format!(
            "configLogicalBackup.logical_backup_s3_secret_access_key={}",
            garage.secret_key
        ),
        format!("configLogicalBackup.logical_backup_cronjob_environment_secret={ENV_SECRET}"),
    ];
    let set: Vec<&str> = set.iter().map(String::as_str).collect();
    sys.install_pgherd(&set).await?;
    sys.kubectl_ok(&["apply", "--server-side", "-f", "-"], Some(&manifest()))?;
    sys.wait_members("default", CLUSTER, 1, BOOT).await?;
    let uid = sys
        .get("acid.zalan.do/v1", "postgresql", "default", CLUSTER)
        .and_then(|pg| pg["metadata"]["uid"].as_str().map(String::from))
        .expect("the postgresql has a uid");

    // The CronJob: Zalando's name and labels, the database image, the keys only in its Secret.
    let cronjob = wait::until(
        Duration::from_secs(60),
        "the logical backup CronJob",
        || async { Ok(sys.get("batch/v1", "CronJob", "default", CRONJOB)) },
    )
    .await
    .map_err(|e| {
        let pg = sys.get("acid.zalan.do/v1", "postgresql", "default", CLUSTER);
        anyhow::anyhow!(
            "{e:#}; status {}{}",
            pg.map(|p| p["status"].clone()).unwrap_or_default(),
            sys.describe_pods("default")
        )
    })?;
    assert_eq!(
        cronjob["metadata"]["labels"]["application"],
        "spilo-logical-backup"
    );
    assert_eq!(cronjob["spec"]["schedule"], "* * * * *");
    assert_eq!(cronjob["spec"]["concurrencyPolicy"], "Forbid");
    let container = &cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], POSTGRES_IMAGE);
    let text = cronjob.to_string();
    assert!(!text.contains(&garage.secret_key) && !text.contains(&garage.key_id));
    assert!(sys.get("v1", "Secret", "default", CRONJOB).is_some());
    // From here on the CronJob's status changes (the stand-in's controllers write it directly, not over
    // HTTP); the coordinator, woken by them, must not write the CronJob again.
    let before = sys.api.request_counts();
    assert_eq!(
        before.resource("cronjobs").writes(),
        1,
        "the creating apply is counted"
    );

    // A Job from the schedule succeeds (the first minute boundary, plus the dump).
    let job = wait::until(
        Duration::from_secs(240),
        "a successful logical backup Job",
        || async {
            let all = jobs(&sys);
            if let Some(failed) = all
                .iter()
                .find(|j| j["status"]["failed"].as_i64().unwrap_or(0) > 0)
            {
                anyhow::bail!("Job {} failed: {}", name(failed), failed["status"]);
            }
            Ok(all
                .into_iter()
                .find(|j| j["status"]["succeeded"].as_i64().unwrap_or(0) > 0))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}{}", sys.describe_pods("default")))?;

    // Complete in S3: the manifest is written last.
    let prefix = format!("spilo/{CLUSTER}/{uid}/logical_backups/");
    let stored = garage.keys(&prefix).await?;
    assert!(
        stored.iter().any(|k| k.ends_with("manifest.json")),
        "no manifest.json under {prefix} after Job {}: {stored:?}",
        name(&job)
    );

    // Reported where users look: the cluster's status and an Event on the postgresql.
    let last = wait::until(
        Duration::from_secs(60),
        "status.lastLogicalBackup",
        || async {
            Ok(sys
                .get("acid.zalan.do/v1", "postgresql", "default", CLUSTER)
                .and_then(|pg| pg["status"]["lastLogicalBackup"].as_str().map(String::from)))
        },
    )
    .await?;
    let success = sys
        .get("batch/v1", "CronJob", "default", CRONJOB)
        .and_then(|c| c["status"]["lastSuccessfulTime"].as_str().map(String::from));
    assert!(
        success.as_ref().is_some_and(|s| *s >= last),
        "the status says {last}, the CronJob {success:?}"
    );
    let since = sys.api.request_counts().since(&before);
    assert_eq!(since.resource("cronjobs").writes(), 0, "{since:?}");
    wait::until(Duration::from_secs(30), "a LogicalBackup Event", || async {
        Ok(cluster_events(&sys)
            .into_iter()
            .find(|e| e.starts_with("LogicalBackup: ")))
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}; events {:?}", cluster_events(&sys)))?;

    // What the next backup must carry, and a fresh cluster to restore it into.
    let (source, _) = sys.wait_members("default", CLUSTER, 1, BOOT).await?;
    let source_ip = pod_ip(&source);
    let source_pw = sys.superuser_password("default", CLUSTER)?;
    psql(
        &source_ip,
        &source_pw,
        "CREATE ROLE readers; CREATE ROLE app LOGIN IN ROLE readers",
    )?;
    // On its own: CREATE DATABASE cannot run in the transaction a multi-statement command is.
    psql(
        &source_ip,
        &source_pw,
        r#"CREATE DATABASE "foo-bar" OWNER app"#,
    )?;
    podman::psql(
        &source_ip,
        &source_pw,
        "foo-bar",
        "CREATE TABLE t AS SELECT g, md5(g::text) AS h FROM generate_series(1, 5000) g; ALTER TABLE t OWNER TO app",
    )?;
    let data_written = jiff::Timestamp::now();
    let mut target: Value = serde_json::from_str(&manifest())?;
    target["metadata"]["name"] = json!(TARGET);
    target["spec"]["enableLogicalBackup"] = json!(false);
    sys.kubectl_ok(
        &["apply", "--server-side", "-f", "-"],
        Some(&target.to_string()),
    )?;
    wait::until(
        Duration::from_secs(240),
        "a backup started after the data was written",
        || async {
            Ok(jobs(&sys).into_iter().find(|j| {
                j["status"]["succeeded"].as_i64().unwrap_or(0) > 0
                    && j["metadata"]["creationTimestamp"]
                        .as_str()
                        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                        .is_some_and(|t| t > data_written)
            }))
        },
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}{}", sys.describe_pods("default")))?;
    let (restored, _) = sys.wait_members("default", TARGET, 1, BOOT).await?;
    let target_ip = pod_ip(&restored);
    let target_pw = sys.superuser_password("default", TARGET)?;
    // `restore --all` of the newest backup, run where an operator would run it (here: the host), with the
    // job's storage settings and the target's libpq variables.
    let out = std::process::Command::new(tools::agent_bin()?)
        .args(["logical-backup", "restore", "--all"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs([
            ("SCOPE", CLUSTER.to_string()),
            ("LOGICAL_BACKUP_S3_BUCKET", garage.bucket.clone()),
            ("LOGICAL_BACKUP_S3_BUCKET_PREFIX", "spilo".into()),
            ("LOGICAL_BACKUP_S3_BUCKET_SCOPE_SUFFIX", format!("/{uid}")),
            ("LOGICAL_BACKUP_S3_ENDPOINT", garage.endpoint()),
            ("LOGICAL_BACKUP_S3_REGION", garage.region.clone()),
            ("AWS_S3_FORCE_PATH_STYLE", "true".into()),
            ("AWS_ACCESS_KEY_ID", garage.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", garage.secret_key.clone()),
            ("PG_VERSION", "15".into()),
            ("PGHOST", target_ip.clone()),
            ("PGUSER", "postgres".into()),
            ("PGPASSWORD", target_pw.clone()),
            ("PGSSLMODE", "require".into()),
        ])
        .output()?;
    assert!(
        out.status.success(),
        "restore failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Identical: the table's contents, the roles and their membership, the database's owner.
    let facts = |ip: &str, pw: &str| -> anyhow::Result<(String, String)> {
        Ok((
            psql(
                ip,
                pw,
                "SELECT (SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'foo-bar') || ' ' ||                  (SELECT string_agg(m.member::regrole || '>' || m.roleid::regrole, ',') FROM pg_auth_members m                   WHERE m.member = 'app'::regrole) || ' ' || (SELECT rolcanlogin FROM pg_roles WHERE rolname = 'app')",
            )?,
            podman::psql(
                ip,
                pw,
                "foo-bar",
                "SELECT count(*) || ' ' || md5(string_agg(t::text, ',' ORDER BY g)) || ' ' || pg_get_userbyid(relowner)                  FROM t, pg_class WHERE relname = 't' GROUP BY relowner",
            )?,
        ))
    };
    let want = facts(&source_ip, &source_pw)?;
    assert!(want.0.starts_with("app app>readers t"), "{want:?}");
    assert!(want.1.starts_with("5000 "), "{want:?}");
    assert_eq!(facts(&target_ip, &target_pw)?, want);

    // Off: the CronJob and the Secret with the keys go; the backups stay.
    sys.kubectl_ok(
        &[
            "patch",
            "postgresql",
            CLUSTER,
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"enableLogicalBackup":false}}"#,
        ],
        None,
    )?;
    wait::until(
        Duration::from_secs(60),
        "CronJob and Secret removed",
        || async {
            Ok(
                (sys.get("batch/v1", "CronJob", "default", CRONJOB).is_none()
                    && sys.get("v1", "Secret", "default", CRONJOB).is_none())
                .then_some(()),
            )
        },
    )
    .await?;
    assert!(garage
        .keys(&prefix)
        .await?
        .iter()
        .any(|k| k.ends_with("manifest.json")));
    sys.shutdown().await;
    Ok(())
}
