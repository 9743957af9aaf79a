//! Logical backups on the Kubernetes stand-in with the real images (issue 14): a cluster with
//! `enableLogicalBackup: true` gets its CronJob from the coordinator (installed from the chart, storage
//! keys in its configuration); the stand-in's CronJob controller starts a Job from it every minute; the
//! Job's pod runs `pgherd-agent logical-backup run` from the database image against Garage; the backup
//! is complete in S3 (its `manifest.json`, written last), the cluster's status gets `lastLogicalBackup`
//! (with no write to the CronJob in between) and the job's `LogicalBackup` Event is on the postgresql.
//! Switching logical backups off removes the CronJob and the Secret with the storage keys.
//!
//! The stand-in's simplifications apply (docs/kube-standin.md): no authorization, so the RBAC the job
//! needs is checked statically (coordinator/tests/deploy_rbac.rs), not here.

use std::time::Duration;

use pgherd_tests::podman::POSTGRES_IMAGE;
use pgherd_tests::system::{name, System};
use pgherd_tests::{tools, wait, Garage};
use serde_json::{json, Value};

const CLUSTER: &str = "acid-minimal-cluster";
const CRONJOB: &str = "logical-backup-acid-minimal-cluster";
/// Holds the job's extra settings, passed whole with `envFrom`.
const ENV_SECRET: &str = "logical-backup-env";
const BOOT: Duration = Duration::from_secs(300);

/// Zalando's minimal manifest, one member, a backup every minute.
fn manifest() -> String {
    let yaml = std::fs::read_to_string(
        tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )
    .expect("the minimal manifest");
    let mut m: Value = serde_yaml_ng::from_str(&yaml).expect("the minimal manifest parses");
    m["spec"]["numberOfInstances"] = json!(1);
    m["spec"]["enableLogicalBackup"] = json!(true);
    m["spec"]["logicalBackupSchedule"] = json!("* * * * *");
    m.to_string()
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
