//! The database image as users run it: `pgherd-agent run` as PID 1 of podman containers on one network,
//! with the environment a Zalando pod gets, etcd as DCS and Garage as S3 on the host (bound to the
//! network's gateway). The images come from `scripts/build-images.sh` (the suite builds them with
//! `PGHERD_IMAGE_PROFILE=debug`). SQL goes through the host's `psql` over TLS, as a client outside the pod
//! would connect (Spilo's pg_hba rejects non-TLS connections from the network).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pgherd_shared::patroni;
use pgherd_tests::podman::{self, psql, Container, ContainerSpec, Network, POSTGRES_IMAGE};
use pgherd_tests::service::random_hex;
use pgherd_tests::{tools, wait, Etcd, Garage};

const BOOT: Duration = Duration::from_secs(180);
/// Zalando's pods get 300 s; a clean stop must need far less.
const GRACE: Duration = Duration::from_secs(60);

/// Host directories mounted as `/home/postgres/pgdata`, as PVCs are: they outlive the container, and the
/// host can read `pg_control` after a stop.
struct Volumes {
    dir: tempfile::TempDir,
}

impl Volumes {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::Builder::new().prefix("pgherd-pvc-").tempdir()?,
        })
    }

    fn of(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// What a Zalando pod's container gets besides what the image bakes in.
fn pod_env(
    scope: &str,
    ip: &str,
    etcd: &Etcd,
    superuser_pw: &str,
    standby_pw: &str,
) -> BTreeMap<String, String> {
    [
        ("SCOPE", scope.to_string()),
        ("PGROOT", "/home/postgres/pgdata/pgroot".into()),
        ("POD_IP", ip.into()),
        ("POD_NAMESPACE", "default".into()),
        ("PGUSER_SUPERUSER", "postgres".into()),
        ("PGPASSWORD_SUPERUSER", superuser_pw.into()),
        ("PGUSER_STANDBY", "standby".into()),
        ("PGPASSWORD_STANDBY", standby_pw.into()),
        ("PGVERSION", "15".into()),
        ("ETCD3_HOST", etcd.host()),
        (
            "SPILO_CONFIGURATION",
            serde_json::json!({"bootstrap": {"dcs": {
                "ttl": 20, "loop_wait": 2, "retry_timeout": 5, "synchronous_mode": true
            }}})
            .to_string(),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

async fn view(ip: &str) -> anyhow::Result<patroni::Cluster> {
    Ok(patroni::Client::new(format!("http://{ip}:8008"))
        .cluster()
        .await?)
}

/// Waits for a leader other than `not` and `replicas` streaming replicas as seen from the Patroni of one
/// of `ips`; returns the leader's name.
async fn wait_ready(
    ips: &[&str],
    replicas: usize,
    not: Option<&str>,
    logs: impl Fn() -> String,
) -> anyhow::Result<String> {
    wait::until(
        BOOT,
        &format!("a leader and {replicas} streaming replicas"),
        || async {
            for ip in ips {
                let Ok(v) = view(ip).await else { continue };
                let leader = v
                    .leader()
                    .filter(|l| l.state == "running" && Some(l.name.as_str()) != not);
                if let Some(l) = leader {
                    if v.streaming_replicas().count() >= replicas {
                        return Ok(Some(l.name.clone()));
                    }
                }
            }
            Ok(None)
        },
    )
    .await
    .map_err(|e| e.context(logs()))
}

/// Zombies inside a container (state Z in /proc/<pid>/status), seen twice a second apart: a process the
/// agent has not reaped yet is fine, one that stays is not.
fn lasting_zombies(c: &Container) -> anyhow::Result<Vec<String>> {
    let sample = || -> anyhow::Result<Vec<String>> {
        let out = c.exec(&[
            "sh",
            "-c",
            "grep -l '^State:.*Z' /proc/[0-9]*/status 2>/dev/null || true",
        ])?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(String::from)
            .collect())
    };
    let first = sample()?;
    if first.is_empty() {
        return Ok(first);
    }
    std::thread::sleep(Duration::from_secs(1));
    let second = sample()?;
    Ok(first.into_iter().filter(|z| second.contains(z)).collect())
}

fn controldata_state(pgdata_volume: &Path) -> anyhow::Result<String> {
    let out = Command::new(tools::pg15_bin()?.join("pg_controldata"))
        .arg(pgdata_volume.join("pgroot/data"))
        .env("LC_ALL", "C")
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("Database cluster state:"))
        .unwrap_or("")
        .trim()
        .to_string())
}

/// Three members of the image: one leader and two streaming replicas; a base backup and archived WAL land
/// in S3; `podman kill` of the leader's container gives a new leader with every acknowledged row, and the
/// killed member comes back as a replica. PID 1 never leaves a zombie behind, and `podman stop` shuts
/// Postgres down cleanly with exit 0 well inside the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_of_the_image_fail_over_and_archive_to_s3() -> anyhow::Result<()> {
    podman::require_image(POSTGRES_IMAGE)?;
    let network = Network::create("pgherd-img")?;
    let etcd = Etcd::start_on(&network.gateway).await?;
    let garage = Garage::start_on(&network.gateway).await?;
    let volumes = Volumes::new()?;
    let (superuser_pw, standby_pw) = (random_hex(12), random_hex(12));
    let scope = format!("img-{}", random_hex(3));
    let mut members = Vec::new();
    for i in 0..3u8 {
        let ip = network.address(10 + i);
        let mut env = pod_env(&scope, &ip, &etcd, &superuser_pw, &standby_pw);
        env.extend(garage.spilo_env());
        let name = format!("{scope}-{i}");
        let started = Instant::now();
        members.push((
            Container::start(
                &network,
                &ContainerSpec {
                    image: POSTGRES_IMAGE.into(),
                    name: name.clone(),
                    ip,
                    env,
                    memory: Some("512m".into()),
                    volumes: vec![format!(
                        "{}:/home/postgres/pgdata",
                        volumes.of(&name)?.display()
                    )],
                },
            )?,
            started,
        ));
    }
    let logs = || {
        members
            .iter()
            .map(|(c, _)| format!("--- {}\n{}", c.name, c.log_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let ips: Vec<&str> = members.iter().map(|(c, _)| c.ip.as_str()).collect();
    let leader = wait_ready(&ips, 2, None, logs).await?;
    let li = members.iter().position(|(c, _)| c.name == leader).unwrap();
    let leader_ip = members[li].0.ip.clone();
    eprintln!(
        "leader {leader} and two streaming replicas {:?} after the first container started",
        members[0].1.elapsed()
    );

    // Writes, each acknowledged by the synchronous standby before psql moves on.
    psql(
        &leader_ip,
        &superuser_pw,
        "postgres",
        "CREATE TABLE acked (id int PRIMARY KEY)",
    )?;
    let n = 300;
    let inserts: String = (1..=n)
        .map(|i| format!("INSERT INTO acked VALUES ({i});"))
        .collect();
    psql(&leader_ip, &superuser_pw, "postgres", &inserts)?;

    // WAL archiving and the first base backup of the leader, in S3.
    psql(
        &leader_ip,
        &superuser_pw,
        "postgres",
        "SELECT pg_switch_wal()",
    )?;
    wait::until(
        Duration::from_secs(120),
        "archived WAL and a base backup in S3",
        || async {
            let objects = garage
                .s3()
                .list_objects_v2()
                .bucket(&garage.bucket)
                .send()
                .await?;
            let keys: Vec<String> = objects
                .contents()
                .iter()
                .filter_map(|o| o.key().map(String::from))
                .collect();
            let wal = keys.iter().any(|k| k.contains("/wal/"));
            let backup = keys.iter().any(|k| k.contains("basebackups"));
            Ok((wal && backup).then_some(()))
        },
    )
    .await
    .map_err(|e| e.context(logs()))?;
    let listed = members[li]
        .0
        .exec(&["pgherd-agent", "backup", "list", "--json"])?;
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).map_err(|e| {
        anyhow::anyhow!(
            "backup list: {e}: {}",
            String::from_utf8_lossy(&listed.stderr)
        )
    })?;
    anyhow::ensure!(
        list.as_array().is_some_and(|a| !a.is_empty()),
        "no complete backup listed: {list}"
    );

    for (c, _) in &members {
        let z = lasting_zombies(c)?;
        anyhow::ensure!(z.is_empty(), "zombies in {}: {z:?}", c.name);
    }

    // The leader's container dies at once; the synchronous standby takes over with every row.
    let killed = Instant::now();
    members[li].0.kill()?;
    let others: Vec<&str> = members
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != li)
        .map(|(_, (c, _))| c.ip.as_str())
        .collect();
    let new_leader = wait_ready(&others, 1, Some(&leader), logs).await?;
    anyhow::ensure!(new_leader != leader, "{leader} still leads");
    eprintln!(
        "new leader {new_leader} {:?} after podman kill",
        killed.elapsed()
    );
    let ni = members
        .iter()
        .position(|(c, _)| c.name == new_leader)
        .unwrap();
    let count = psql(
        &members[ni].0.ip,
        &superuser_pw,
        "postgres",
        "SELECT count(*) FROM acked",
    )?;
    assert_eq!(
        count,
        n.to_string(),
        "acknowledged rows lost in the failover"
    );

    // The killed member's container starts again on its volume and rejoins as a replica.
    members[li].0.start_again()?;
    wait_ready(&ips, 2, None, logs).await?;

    // SIGTERM to PID 1 of a replica: Postgres stops cleanly, the container exits 0 in time.
    let ri = (0..3).find(|i| *i != ni).unwrap();
    let stopping = Instant::now();
    let code = members[ri].0.stop(GRACE)?;
    let took = stopping.elapsed();
    eprintln!(
        "podman stop of {} took {took:?}, exit {code}",
        members[ri].0.name
    );
    assert_eq!(code, 0, "{}", members[ri].0.log_tail(30));
    assert!(took < GRACE / 2, "stopping took {took:?}");
    let state = controldata_state(&volumes.of(&members[ri].0.name)?)?;
    assert_eq!(state, "shut down in recovery", "pg_control after the stop");
    let log = members[ri].0.logs();
    assert!(
        log.contains("pgherd-agent stopped") && !log.contains("killing leftover processes"),
        "every child of PID 1 stops on SIGTERM: {}",
        members[ri].0.log_tail(30)
    );
    for (i, (c, _)) in members.iter().enumerate() {
        if i != ri {
            let z = lasting_zombies(c)?;
            anyhow::ensure!(z.is_empty(), "zombies in {}: {z:?}", c.name);
        }
    }
    Ok(())
}

/// The StatefulSet `pgherd-coordinator render` makes of Zalando's minimal manifest (one instance, version
/// 15, the version this image has), given to a container as the kubelet would: every `value` as is,
/// `secretKeyRef` from the rendered Secrets (with the password the coordinator generates at creation),
/// `fieldRef` from the pod, the data volume at the rendered mount path. The only Kubernetes-only value,
/// `DCS_ENABLE_KUBERNETES_API`, becomes `ETCD3_HOST` (Zalando's `etcd_host` form; there is no API server
/// here). The member must lead, accept the Secret's superuser password over TLS, have post-init's roles,
/// and stop with exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinators_rendered_environment_makes_a_working_member() -> anyhow::Result<()> {
    use serde::Deserialize;
    podman::require_image(POSTGRES_IMAGE)?;
    let fixture = tools::repo_root()
        .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml");
    let mut manifest: serde_json::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(fixture)?)?;
    manifest["spec"]["numberOfInstances"] = 1.into();
    manifest["spec"]["postgresql"]["version"] = "15".into();
    let work = tempfile::tempdir()?;
    let path = work.path().join("manifest.yaml");
    std::fs::write(&path, serde_yaml_ng::to_string(&manifest)?)?;
    let out = Command::new(tools::coordinator_bin()?)
        .args(["render", "-f"])
        .arg(&path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "render: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered = String::from_utf8(out.stdout)?;
    let mut objects = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&rendered) {
        objects.push(serde_json::Value::deserialize(doc)?);
    }
    let sts = objects
        .iter()
        .find(|o| o["kind"] == "StatefulSet")
        .ok_or_else(|| anyhow::anyhow!("render made no StatefulSet"))?;
    let pod_name = format!("{}-0", sts["metadata"]["name"].as_str().unwrap_or_default());
    let container = &sts["spec"]["template"]["spec"]["containers"][0];
    // Passwords the coordinator would generate when it creates each Secret.
    let mut secrets: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for s in objects.iter().filter(|o| o["kind"] == "Secret") {
        let name = s["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut data = BTreeMap::new();
        for (k, v) in s["stringData"].as_object().into_iter().flatten() {
            let v = v.as_str().unwrap_or_default();
            let v = if k == "password" {
                random_hex(16)
            } else {
                v.to_string()
            };
            data.insert(k.clone(), v);
        }
        secrets.insert(name, data);
    }

    let network = Network::create("pgherd-render")?;
    let etcd = Etcd::start_on(&network.gateway).await?;
    let ip = network.address(10);
    let mut env = BTreeMap::new();
    for e in container["env"].as_array().into_iter().flatten() {
        let name = e["name"].as_str().unwrap_or_default().to_string();
        let value = if let Some(v) = e["value"].as_str() {
            v.to_string()
        } else if let Some(r) = e["valueFrom"]["secretKeyRef"].as_object() {
            let (secret, key) = (
                r["name"].as_str().unwrap_or(""),
                r["key"].as_str().unwrap_or(""),
            );
            secrets
                .get(secret)
                .and_then(|d| d.get(key))
                .cloned()
                .ok_or_else(|| {
                    anyhow::anyhow!("{name}: secret {secret} key {key} is not rendered")
                })?
        } else if let Some(path) = e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            match path {
                "status.podIP" => ip.clone(),
                "metadata.namespace" => "default".into(),
                "metadata.name" => pod_name.clone(),
                other => anyhow::bail!("{name}: fieldRef {other} is not provided by this test"),
            }
        } else {
            anyhow::bail!("{name}: unsupported env source {e}");
        };
        env.insert(name, value);
    }
    anyhow::ensure!(
        env.remove("DCS_ENABLE_KUBERNETES_API").is_some(),
        "the render no longer asks for the Kubernetes DCS: revisit this test"
    );
    env.insert("ETCD3_HOST".into(), etcd.host());
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["name"] == "pgdata")
        .and_then(|m| m["mountPath"].as_str())
        .ok_or_else(|| anyhow::anyhow!("no pgdata volume mount rendered"))?;
    let volumes = Volumes::new()?;
    let superuser_pw = env["PGPASSWORD_SUPERUSER"].clone();
    let human_role = env.get("HUMAN_ROLE").cloned().unwrap_or_default();
    let started = Instant::now();
    let member = Container::start(
        &network,
        &ContainerSpec {
            image: POSTGRES_IMAGE.into(),
            name: pod_name.clone(),
            ip: ip.clone(),
            env,
            memory: Some("512m".into()),
            volumes: vec![format!("{}:{mount}", volumes.of(&pod_name)?.display())],
        },
    )?;
    wait_ready(&[&ip], 0, None, || member.log_tail(60)).await?;
    eprintln!(
        "{pod_name} leads {:?} after its container started",
        started.elapsed()
    );
    let roles = psql(
        &ip,
        &superuser_pw,
        "postgres",
        &format!(
            "SELECT string_agg(rolname, ',' ORDER BY rolname) FROM pg_roles WHERE rolname IN ('admin', '{human_role}')"
        ),
    )?;
    assert_eq!(roles, format!("admin,{human_role}"), "post-init's roles");
    let ssl = psql(
        &ip,
        &superuser_pw,
        "postgres",
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )?;
    assert_eq!(ssl, "t");
    assert_eq!(member.stop(GRACE)?, 0, "{}", member.log_tail(30));
    assert_eq!(controldata_state(&volumes.of(&pod_name)?)?, "shut down");
    Ok(())
}
