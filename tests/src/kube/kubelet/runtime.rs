//! podman as the container runtime: a Pod is a podman pod (its infra container holds the network, IPC
//! and UTS namespaces, with the address the kubelet chose) and each container a podman container in it.
//! The argument builders are pure and unit-tested (above all: no environment value ever reaches argv);
//! the calls are a thin async shell over `crate::podman::podman()` and its configuration.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde_json::Value;

use super::env::Env;
use super::volumes::Mount;

/// Every podman object the stand-in creates carries this label, so leftovers of a crashed run are found.
pub const LABEL: &str = "io.pgherd.standin";
/// The process that created it: leftovers are objects whose process is gone.
pub const LABEL_PID: &str = "io.pgherd.standin.pid";
/// The [`super::Kubelet`] that created it.
pub const LABEL_KUBELET: &str = "io.pgherd.standin.kubelet";
pub const LABEL_POD_UID: &str = "io.pgherd.standin.pod-uid";
pub const LABEL_CONTAINER: &str = "io.pgherd.standin.container";

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

/// The podman pod's name: pod name plus uid prefix, so a recreated pod of the same name never collides
/// with the one still being torn down.
pub fn pod_name(pod: &Value) -> String {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("pod");
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("{name}-{short}")
}

pub fn labels(kubelet: &str, uid: &str) -> Vec<(String, String)> {
    vec![
        (LABEL.into(), "1".into()),
        (LABEL_PID.into(), std::process::id().to_string()),
        (LABEL_KUBELET.into(), kubelet.into()),
        (LABEL_POD_UID.into(), uid.into()),
    ]
}

fn push_labels(args: &mut Vec<String>, labels: &[(String, String)]) {
    for (k, v) in labels {
        args.push("--label".into());
        args.push(format!("{k}={v}"));
    }
}

/// `podman pod create`: address and hostname fixed before any container starts, so `status.podIP`
/// (and the env that refers to it) is known up front. The infra container is `sleep infinity` in an
/// image that is present, since podman's own pause image needs `catatonit`, which these hosts lack.
#[allow(clippy::too_many_arguments)]
pub fn pod_create_args(
    name: &str,
    network: &str,
    ip: &str,
    hostname: &str,
    infra_image: &str,
    shm_size: Option<&str>,
    host_aliases: &Value,
    labels: &[(String, String)],
) -> Vec<String> {
    let mut a: Vec<String> = [
        "pod",
        "create",
        "--name",
        name,
        "--infra-name",
        &format!("{name}-infra"),
        "--network",
        network,
        "--ip",
        ip,
        "--hostname",
        hostname,
        "--infra-image",
        infra_image,
        "--infra-command",
        "sleep infinity",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(shm) = shm_size {
        a.extend(["--shm-size".into(), shm.into()]);
    }
    for alias in host_aliases.as_array().into_iter().flatten() {
        for h in alias
            .get("hostnames")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            a.push("--add-host".into());
            a.push(format!(
                "{}:{}",
                h.as_str().unwrap_or_default(),
                s(alias, "ip")
            ));
        }
    }
    push_labels(&mut a, labels);
    a
}

/// An env file's text (`KEY=value` per line, taken literally by podman). Values with a newline cannot go
/// there: they are returned apart, to be passed through podman's own environment as `--env KEY`.
pub fn env_file(env: &Env) -> (String, Vec<(String, String)>) {
    let mut text = String::new();
    let mut apart = Vec::new();
    for (k, v) in &env.0 {
        if v.contains('\n') || v.contains('\r') {
            apart.push((k.clone(), v.clone()));
        } else {
            text.push_str(&format!("{k}={v}\n"));
        }
    }
    (text, apart)
}

/// The effective security settings of a container: its own `securityContext` over the pod's.
fn sec<'a>(pod: &'a Value, c: &'a Value, k: &str) -> Option<&'a Value> {
    c.pointer(&format!("/securityContext/{k}"))
        .or_else(|| pod.pointer(&format!("/spec/securityContext/{k}")))
}

/// `podman create` of one container of the pod. `command`/`args` are already `$(VAR)`-expanded; `env_file`
/// holds the values, `apart` names the ones podman takes from its own environment.
#[allow(clippy::too_many_arguments)]
pub fn container_create_args(
    pod: &Value,
    c: &Value,
    podman_pod: &str,
    name: &str,
    command: Option<&[String]>,
    args: Option<&[String]>,
    mounts: &[Mount],
    env_file: &Path,
    apart: &[String],
    labels: &[(String, String)],
) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "create".into(),
        "--pod".into(),
        podman_pod.into(),
        "--name".into(),
        name.into(),
        "--env-file".into(),
        env_file.display().to_string(),
    ];
    for k in apart {
        a.extend(["--env".into(), k.clone()]);
    }
    push_labels(&mut a, labels);
    a.push("--label".into());
    a.push(format!("{LABEL_CONTAINER}={}", s(c, "name")));
    if let Some(cmd) = command {
        a.push("--entrypoint".into());
        a.push(serde_json::to_string(cmd).unwrap_or_default());
    }
    let wd = s(c, "workingDir");
    if !wd.is_empty() {
        a.extend(["--workdir".into(), wd.into()]);
    }
    let uid = sec(pod, c, "runAsUser").and_then(Value::as_i64);
    let gid = sec(pod, c, "runAsGroup").and_then(Value::as_i64);
    match (uid, gid) {
        (Some(u), Some(g)) => a.extend(["--user".into(), format!("{u}:{g}")]),
        (Some(u), None) => a.extend(["--user".into(), u.to_string()]),
        (None, Some(g)) => a.extend(["--group-add".into(), g.to_string()]),
        (None, None) => {}
    }
    let mut groups: Vec<i64> = pod
        .pointer("/spec/securityContext/supplementalGroups")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_i64)
        .collect();
    if let Some(g) = pod
        .pointer("/spec/securityContext/fsGroup")
        .and_then(Value::as_i64)
    {
        groups.push(g);
    }
    for g in groups {
        a.extend(["--group-add".into(), g.to_string()]);
    }
    let flag = |k: &str| {
        c.pointer(&format!("/securityContext/{k}"))
            .and_then(Value::as_bool)
    };
    if flag("readOnlyRootFilesystem") == Some(true) {
        a.push("--read-only".into());
    }
    if flag("privileged") == Some(true) {
        a.push("--privileged".into());
    }
    if flag("allowPrivilegeEscalation") == Some(false) {
        a.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for (field, opt) in [("drop", "--cap-drop"), ("add", "--cap-add")] {
        for cap in c
            .pointer(&format!("/securityContext/capabilities/{field}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            a.extend([opt.into(), cap.into()]);
        }
    }
    let limit = |k: &str| {
        c.pointer(&format!("/resources/limits/{k}"))
            .and_then(|v| v.as_str().map(String::from).or_else(|| Some(v.to_string())))
            .and_then(|q| super::env::quantity(&q))
    };
    if let Some(m) = limit("memory") {
        a.extend(["--memory".into(), format!("{}", m as u64)]);
    }
    if let Some(cpu) = limit("cpu") {
        a.extend(["--cpus".into(), format!("{cpu}")]);
    }
    for m in mounts {
        let ro = if m.read_only { ",ro=true" } else { "" };
        a.push("--mount".into());
        a.push(format!(
            "type=bind,source={},destination={}{ro}",
            m.host.display(),
            m.path
        ));
    }
    a.push(s(c, "image").to_string());
    if let Some(args) = args {
        a.extend(args.iter().cloned());
    }
    a
}

/// One container as `podman ps --format json` reports it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PsEntry {
    pub id: String,
    pub name: String,
    /// created, running, exited, stopped, paused, …
    pub state: String,
    pub exit_code: i64,
    /// Unix seconds; 0 when never started.
    pub started_at: i64,
    pub exited_at: i64,
    pub image_id: String,
    pub pod_uid: String,
    /// The pod's container name (`io.pgherd.standin.container`); empty for infra containers.
    pub container: String,
}

/// `podman ps -a --format json` → entries by podman container name.
pub fn parse_ps(json: &str) -> anyhow::Result<BTreeMap<String, PsEntry>> {
    let v: Value = serde_json::from_str(if json.trim().is_empty() { "[]" } else { json })
        .context("parsing podman ps")?;
    let mut out = BTreeMap::new();
    for e in v.as_array().into_iter().flatten() {
        let name = e
            .get("Names")
            .and_then(Value::as_array)
            .and_then(|n| n.first())
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let label = |k: &str| e.pointer(&format!("/Labels/{k}")).and_then(Value::as_str);
        let started = e.get("StartedAt").and_then(Value::as_i64).unwrap_or(0);
        let exited = e.get("ExitedAt").and_then(Value::as_i64).unwrap_or(0);
        out.insert(
            name.clone(),
            PsEntry {
                id: s(e, "Id").into(),
                name,
                state: s(e, "State").into(),
                exit_code: e.get("ExitCode").and_then(Value::as_i64).unwrap_or(0),
                started_at: started.max(0),
                exited_at: exited.max(0),
                image_id: s(e, "ImageID").into(),
                pod_uid: label(LABEL_POD_UID).unwrap_or_default().into(),
                container: label(LABEL_CONTAINER).unwrap_or_default().into(),
            },
        );
    }
    Ok(out)
}

/// `podman` with the project's configuration, as a tokio command killed if its future is dropped.
fn command(args: &[String]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::from(crate::podman::podman());
    cmd.args(args).kill_on_drop(true);
    cmd.stdin(std::process::Stdio::null());
    cmd
}

/// Runs podman; `env` goes to podman's own environment (never to argv). Fails with podman's stderr.
pub async fn podman(args: &[String], env: &[(String, String)]) -> anyhow::Result<String> {
    let mut cmd = command(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await.context("running podman")?;
    anyhow::ensure!(
        out.status.success(),
        "podman {} failed: {}",
        args.first().map(String::as_str).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub async fn run(args: &[&str]) -> anyhow::Result<String> {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    podman(&args, &[]).await
}

/// Every container of one kubelet, in one call.
pub async fn ps(kubelet: &str) -> anyhow::Result<BTreeMap<String, PsEntry>> {
    let out = run(&[
        "ps",
        "-a",
        "--filter",
        &format!("label={LABEL_KUBELET}={kubelet}"),
        "--format",
        "json",
    ])
    .await?;
    parse_ps(&out)
}

pub async fn image_exists(image: &str) -> bool {
    run(&["image", "exists", image]).await.is_ok()
}

/// `podman exec` with a deadline; the exit code (or an error when it could not run or timed out).
pub async fn exec(
    container: &str,
    cmd: &[String],
    timeout: std::time::Duration,
) -> anyhow::Result<i32> {
    let mut args = vec!["exec".to_string(), container.to_string()];
    args.extend(cmd.iter().cloned());
    let out = tokio::time::timeout(timeout, command(&args).output())
        .await
        .context("timed out")??;
    Ok(out.status.code().unwrap_or(-1))
}

/// The output of `podman logs` (both streams) of a container, for `pods/log`.
pub async fn logs(container: &str, tail: Option<i64>) -> anyhow::Result<String> {
    let mut args = vec!["logs".to_string()];
    if let Some(n) = tail {
        args.extend(["--tail".into(), n.to_string()]);
    }
    args.push(container.into());
    let out = command(&args).output().await?;
    anyhow::ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
    s.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok(s)
}

/// Pod ids (and whether their creating process is gone) of every podman pod with [`LABEL`].
pub fn leftover_pods(kubelet: Option<&str>) -> Vec<String> {
    let filter = match kubelet {
        Some(k) => format!("label={LABEL_KUBELET}={k}"),
        None => format!("label={LABEL}=1"),
    };
    let Ok(out) = crate::podman::podman()
        .args(["pod", "ps", "--filter", &filter, "--format", "json"])
        .output()
    else {
        return vec![];
    };
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    v.as_array()
        .into_iter()
        .flatten()
        .filter(|p| {
            kubelet.is_some()
                || p.pointer(&format!("/Labels/{}", LABEL_PID.replace('/', "~1")))
                    .and_then(Value::as_str)
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_none_or(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .filter_map(|p| p.get("Id").and_then(Value::as_str).map(String::from))
        .collect()
}

/// Removes podman pods at once (blocking: also used from `Drop`).
pub fn remove_pods_now(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    let mut args = vec!["pod", "rm", "-f", "-t", "0"];
    args.extend(ids.iter().map(String::as_str));
    let _ = crate::podman::podman().args(&args).output();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    #[test]
    fn container_args_keep_values_out_of_argv() {
        let pod = json!({"metadata": {"name": "db-0", "uid": "1234-5678-9abc"},
            "spec": {"securityContext": {"runAsUser": 101, "fsGroup": 103}}});
        let c = json!({"name": "pg", "image": "localhost/pgherd-postgres:dev", "workingDir": "/w",
            "securityContext": {"readOnlyRootFilesystem": true, "runAsGroup": 5,
                                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}},
            "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}}});
        let env = Env(vec![
            ("PGPASSWORD".into(), "s3cr3t-value".into()),
            ("PEM".into(), "line1\nline2-secret".into()),
        ]);
        let (text, apart) = env_file(&env);
        assert_eq!(text, "PGPASSWORD=s3cr3t-value\n");
        let apart_names: Vec<String> = apart.iter().map(|(k, _)| k.clone()).collect();
        let mounts = vec![Mount {
            host: PathBuf::from("/st/pvc/ns/data"),
            path: "/data".into(),
            read_only: false,
        }];
        let cmd = vec!["sh".to_string(), "-c".into()];
        let args = vec!["echo $(X)".to_string()];
        let a = container_create_args(
            &pod,
            &c,
            &pod_name(&pod),
            "db-0-12345678-pg",
            Some(&cmd),
            Some(&args),
            &mounts,
            Path::new("/tmp/env"),
            &apart_names,
            &labels("k1", "1234-5678-9abc"),
        );
        let joined = a.join(" ");
        assert!(
            !joined.contains("s3cr3t") && !joined.contains("line2"),
            "{joined}"
        );
        assert_eq!(pod_name(&pod), "db-0-12345678");
        for want in [
            "--pod db-0-12345678",
            "--env-file /tmp/env",
            "--env PEM",
            "--entrypoint [\"sh\",\"-c\"]",
            "--workdir /w",
            "--user 101:5",
            "--group-add 103",
            "--read-only",
            "--cap-drop ALL",
            "--cap-add NET_BIND_SERVICE",
            "--memory 67108864",
            "--cpus 0.5",
            "--mount type=bind,source=/st/pvc/ns/data,destination=/data",
            "--label io.pgherd.standin.container=pg",
        ] {
            assert!(joined.contains(want), "{want} missing in {joined}");
        }
        assert!(joined.ends_with("localhost/pgherd-postgres:dev echo $(X)"));
        // Without command, the image's ENTRYPOINT stays and args are its CMD.
        let a = container_create_args(
            &json!({}),
            &json!({"name": "c", "image": "img"}),
            "p",
            "p-c",
            None,
            None,
            &[],
            Path::new("/e"),
            &[],
            &[],
        );
        assert!(!a.contains(&"--entrypoint".to_string()) && a.last().unwrap() == "img");
    }

    #[test]
    fn pod_args() {
        let a = pod_create_args(
            "p-1",
            "net",
            "10.89.0.9",
            "db-0",
            "debian",
            Some("64m"),
            &json!([{"ip": "1.2.3.4", "hostnames": ["a", "b"]}]),
            &[("io.pgherd.standin".into(), "1".into())],
        )
        .join(" ");
        assert!(a.contains("--ip 10.89.0.9 --hostname db-0"));
        assert!(a.contains("--shm-size 64m --add-host a:1.2.3.4 --add-host b:1.2.3.4"));
        assert!(a.contains("--infra-command sleep infinity"));
    }

    #[test]
    fn ps_json() {
        let ps = parse_ps(
            r#"[{"Id": "abc", "Names": ["p-1-c"], "State": "exited", "ExitCode": 3,
                "StartedAt": 1796417578, "ExitedAt": 1796417580, "ImageID": "img1",
                "Labels": {"io.pgherd.standin.pod-uid": "u1", "io.pgherd.standin.container": "c"}},
               {"Id": "def", "Names": ["p-1-infra"], "State": "running", "ExitedAt": -62135596800}]"#,
        )
        .unwrap();
        let c = &ps["p-1-c"];
        assert_eq!(
            (c.exit_code, c.started_at, c.exited_at, c.container.as_str()),
            (3, 1796417578, 1796417580, "c")
        );
        assert_eq!(ps["p-1-infra"].exited_at, 0);
        assert!(parse_ps("").unwrap().is_empty());
    }
}
