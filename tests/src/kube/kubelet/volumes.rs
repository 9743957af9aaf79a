//! Pod volumes as host directories bind-mounted into the containers: a PVC is `<state>/pvc/<ns>/<claim>`
//! and outlives the pod; emptyDirs and the files of secret, configMap, downwardAPI and projected volumes
//! (and the service-account token) live under `<state>/pods/<uid>/`, which is root-only (0700) on the
//! host, so a secret file is never readable by another host user, and goes with the pod.
//!
//! [`plan`] (pure) decides what each volume is and which files it holds; [`materialize`] writes it,
//! applying `fsGroup` as the kubelet's `SetVolumeOwnership` does (group ownership, group rw, setgid dirs).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::env::{data_value, field_ref, resource_field, ConfigError, Lookup, PodFacts};

/// Where the service-account token, CA and namespace are mounted, as Patroni and kube-rs expect.
pub const SA_MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The name of the service-account volume (the pod spec is not changed to hold it).
pub const SA_VOLUME: &str = "kube-api-access";

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    /// A directory shared by the containers: PVC, emptyDir, hostPath. `keep`: not removed with the pod.
    Dir { keep: bool, memory: bool },
    /// Files the kubelet writes: (relative path, content, mode).
    Files(Vec<(String, Vec<u8>, u32)>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Volume {
    pub name: String,
    pub host: PathBuf,
    pub kind: Kind,
    /// `emptyDir.sizeLimit`, for a memory emptyDir mounted at /dev/shm.
    pub size_limit: Option<String>,
}

/// What the service-account volume holds.
pub struct SaFiles<'a> {
    pub token: &'a str,
    pub ca_pem: &'a str,
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or_default()
}

fn mode_of(v: &Value, k: &str) -> Option<u32> {
    v.get(k).and_then(Value::as_u64).map(|m| m as u32)
}

/// Files of a secret or configMap source: every key, or just `items` (each with its own path and mode).
fn key_files(
    lookup: &dyn Lookup,
    ns: &str,
    src: &Value,
    secret: bool,
    default_mode: u32,
    out: &mut Vec<(String, Vec<u8>, u32)>,
) -> Result<(), ConfigError> {
    let name = if secret {
        s(src, "secretName")
    } else {
        s(src, "name")
    };
    let name = if name.is_empty() {
        s(src, "name")
    } else {
        name
    };
    let optional = src
        .get("optional")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let kind = if secret { "Secret" } else { "ConfigMap" };
    let obj = if secret {
        lookup.secret(name)
    } else {
        lookup.config_map(name)
    };
    let Some(obj) = obj else {
        if optional {
            return Ok(());
        }
        return Err(ConfigError(format!(
            "{} {name:?} not found",
            kind.to_lowercase()
        )));
    };
    match src.get("items").and_then(Value::as_array) {
        Some(items) => {
            for it in items {
                let key = s(it, "key");
                match data_value(&obj, key, secret) {
                    Some(v) => out.push((
                        s(it, "path").to_string(),
                        v.into_bytes(),
                        mode_of(it, "mode").unwrap_or(default_mode),
                    )),
                    None if optional => {}
                    None => {
                        return Err(ConfigError(format!(
                        "configmap references non-existent config key: {key} ({kind} {ns}/{name})"
                    )))
                    }
                }
            }
        }
        None => {
            for (k, v) in super::env::data_entries(&obj, secret) {
                out.push((k, v.into_bytes(), default_mode));
            }
        }
    }
    Ok(())
}

fn downward_files(
    pod: &Value,
    facts: &PodFacts,
    items: &Value,
    default_mode: u32,
    out: &mut Vec<(String, Vec<u8>, u32)>,
) -> Result<(), ConfigError> {
    for it in items.as_array().into_iter().flatten() {
        let value = if let Some(f) = it.pointer("/fieldRef/fieldPath").and_then(Value::as_str) {
            field_ref(pod, facts, f)?
        } else if let Some(r) = it.get("resourceFieldRef") {
            let cname = s(r, "containerName");
            let c = pod
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| s(c, "name") == cname)
                .cloned()
                .unwrap_or(Value::Null);
            resource_field(
                &c,
                facts,
                s(r, "resource"),
                r.get("divisor").and_then(Value::as_str),
            )?
        } else {
            continue;
        };
        out.push((
            s(it, "path").to_string(),
            value.into_bytes(),
            mode_of(it, "mode").unwrap_or(default_mode),
        ));
    }
    Ok(())
}

/// Whether the pod gets the service-account volume: the pod's `automountServiceAccountToken`, else the
/// ServiceAccount's, else yes.
pub fn automount(pod: &Value, sa: Option<&Value>) -> bool {
    pod.pointer("/spec/automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| {
            sa.and_then(|s| s.get("automountServiceAccountToken"))
                .and_then(Value::as_bool)
        })
        .unwrap_or(true)
}

/// Every volume of the pod, plus the service-account volume when `sa` is given.
pub fn plan(
    pod: &Value,
    state: &Path,
    facts: &PodFacts,
    lookup: &dyn Lookup,
    sa: Option<SaFiles<'_>>,
) -> Result<Vec<Volume>, ConfigError> {
    let ns = pod
        .pointer("/metadata/namespace")
        .and_then(Value::as_str)
        .unwrap_or("default");
    let uid = pod
        .pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("nouid");
    let pod_dir = pod_dir(state, uid);
    let mut out = Vec::new();
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(v, "name").to_string();
        let own = pod_dir.join("volumes").join(&name);
        let mut size_limit = None;
        let (host, kind) = if let Some(c) = v.get("persistentVolumeClaim") {
            let claim = s(c, "claimName");
            if lookup.pvc(claim).is_none() {
                return Err(ConfigError(format!(
                    "persistentvolumeclaim {claim:?} not found"
                )));
            }
            (
                state.join("pvc").join(ns).join(claim),
                Kind::Dir {
                    keep: true,
                    memory: false,
                },
            )
        } else if let Some(e) = v.get("emptyDir") {
            size_limit = e.get("sizeLimit").and_then(Value::as_str).map(String::from);
            (
                own,
                Kind::Dir {
                    keep: false,
                    memory: s(e, "medium") == "Memory",
                },
            )
        } else if let Some(h) = v.get("hostPath") {
            (
                PathBuf::from(s(h, "path")),
                Kind::Dir {
                    keep: true,
                    memory: false,
                },
            )
        } else if let Some(src) = v.get("secret") {
            let mut files = Vec::new();
            let mode = mode_of(src, "defaultMode").unwrap_or(0o644);
            key_files(lookup, ns, src, true, mode, &mut files)?;
            (own, Kind::Files(files))
        } else if let Some(src) = v.get("configMap") {
            let mut files = Vec::new();
            let mode = mode_of(src, "defaultMode").unwrap_or(0o644);
            key_files(lookup, ns, src, false, mode, &mut files)?;
            (own, Kind::Files(files))
        } else if let Some(src) = v.get("downwardAPI") {
            let mut files = Vec::new();
            let mode = mode_of(src, "defaultMode").unwrap_or(0o644);
            downward_files(pod, facts, &src["items"], mode, &mut files)?;
            (own, Kind::Files(files))
        } else if let Some(p) = v.get("projected") {
            let mut files = Vec::new();
            let mode = mode_of(p, "defaultMode").unwrap_or(0o644);
            for src in p
                .get("sources")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(x) = src.get("secret") {
                    key_files(lookup, ns, x, true, mode, &mut files)?;
                } else if let Some(x) = src.get("configMap") {
                    key_files(lookup, ns, x, false, mode, &mut files)?;
                } else if let Some(x) = src.get("downwardAPI") {
                    downward_files(pod, facts, &x["items"], mode, &mut files)?;
                } else if let Some(x) = src.get("serviceAccountToken") {
                    let token = sa.as_ref().map(|s| s.token).unwrap_or_default();
                    files.push((s(x, "path").to_string(), token.as_bytes().to_vec(), mode));
                }
            }
            (own, Kind::Files(files))
        } else {
            return Err(ConfigError(format!(
                "volume {name:?}: unsupported type (the pgherd stand-in's kubelet)"
            )));
        };
        out.push(Volume {
            name,
            host,
            kind,
            size_limit,
        });
    }
    if let Some(sa) = sa {
        out.push(Volume {
            name: SA_VOLUME.into(),
            host: pod_dir.join("volumes").join(SA_VOLUME),
            kind: Kind::Files(vec![
                ("token".into(), sa.token.as_bytes().to_vec(), 0o644),
                ("ca.crt".into(), sa.ca_pem.as_bytes().to_vec(), 0o644),
                ("namespace".into(), ns.as_bytes().to_vec(), 0o644),
            ]),
            size_limit: None,
        });
    }
    Ok(out)
}

pub fn pod_dir(state: &Path, uid: &str) -> PathBuf {
    state.join("pods").join(uid)
}

/// A bind mount: host path, container path, read-only.
#[derive(Clone, Debug, PartialEq)]
pub struct Mount {
    pub host: PathBuf,
    pub path: String,
    pub read_only: bool,
}

/// The container's mounts; a memory emptyDir at /dev/shm is left out (the pod's `--shm-size` is it).
pub fn mounts(container: &Value, volumes: &[Volume]) -> Result<Vec<Mount>, ConfigError> {
    let mut out = Vec::new();
    for m in container
        .get("volumeMounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = s(m, "name");
        let path = s(m, "mountPath").to_string();
        let v = volumes
            .iter()
            .find(|v| v.name == name)
            .ok_or_else(|| ConfigError(format!("cannot find volume {name:?} to mount")))?;
        if matches!(v.kind, Kind::Dir { memory: true, .. }) && path == "/dev/shm" {
            continue;
        }
        let sub = s(m, "subPath");
        let host = if sub.is_empty() || sub.contains("..") {
            v.host.clone()
        } else {
            v.host.join(sub)
        };
        out.push(Mount {
            host,
            path,
            read_only: m.get("readOnly").and_then(Value::as_bool).unwrap_or(false)
                || matches!(v.kind, Kind::Files(_)),
        });
    }
    let has_sa = volumes.iter().any(|v| v.name == SA_VOLUME);
    if has_sa && !out.iter().any(|m| m.path == SA_MOUNT) {
        let v = volumes.iter().find(|v| v.name == SA_VOLUME).expect("sa");
        out.push(Mount {
            host: v.host.clone(),
            path: SA_MOUNT.into(),
            read_only: true,
        });
    }
    Ok(out)
}

/// `/dev/shm`'s size when a memory emptyDir is mounted there (the kubelet mounts a tmpfs; containers of a
/// podman pod share the pod's IPC namespace and so its /dev/shm).
pub fn shm_size(pod: &Value, volumes: &[Volume]) -> Option<String> {
    let shm: Vec<&str> = ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .flat_map(|c| {
            c.get("volumeMounts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter(|m| s(m, "mountPath") == "/dev/shm")
        .map(|m| s(m, "name"))
        .collect();
    let v = volumes.iter().find(|v| {
        shm.contains(&v.name.as_str()) && matches!(v.kind, Kind::Dir { memory: true, .. })
    })?;
    let limit = v
        .size_limit
        .as_deref()
        .and_then(super::env::quantity)
        .map(|b| format!("{}k", (b / 1024.0).ceil() as u64));
    Some(limit.unwrap_or_else(|| "1g".into()))
}

fn chown_group(p: &Path, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::lchown(p, None, Some(gid))
}

/// Group ownership and group access for `fs_group`, on the whole tree when its root does not have it yet
/// (the kubelet's `OnRootMismatch`; the default `Always` walks every mount).
fn own_tree(root: &Path, gid: u32) -> std::io::Result<()> {
    let meta = std::fs::metadata(root)?;
    if meta.gid() == gid && meta.mode() & 0o2070 == 0o2070 {
        return Ok(());
    }
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p)?;
        if m.file_type().is_symlink() {
            continue;
        }
        chown_group(&p, gid)?;
        let mode = m.mode() & 0o7777;
        if m.is_dir() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o2070))?;
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        } else {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode | 0o060))?;
        }
    }
    Ok(())
}

/// Creates the pod's directories and files. The pod directory is 0700 on the host; PVC and emptyDir
/// directories are 0777 inside it, as local-path provisioners and the kubelet make them.
pub fn materialize(
    state: &Path,
    uid: &str,
    volumes: &[Volume],
    fs_group: Option<u32>,
) -> std::io::Result<()> {
    let pod_dir = pod_dir(state, uid);
    for d in [
        state.to_path_buf(),
        state.join("pods"),
        state.join("pvc"),
        pod_dir.clone(),
    ] {
        std::fs::create_dir_all(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    }
    for v in volumes {
        match &v.kind {
            Kind::Dir { .. } => {
                if !v.host.exists() {
                    std::fs::create_dir_all(&v.host)?;
                    std::fs::set_permissions(&v.host, std::fs::Permissions::from_mode(0o777))?;
                }
                if let Some(g) = fs_group {
                    own_tree(&v.host, g)?;
                }
            }
            Kind::Files(files) => {
                let _ = std::fs::remove_dir_all(&v.host);
                std::fs::create_dir_all(&v.host)?;
                std::fs::set_permissions(&v.host, std::fs::Permissions::from_mode(0o755))?;
                for (rel, content, mode) in files {
                    if rel.contains("..") || rel.starts_with('/') {
                        continue;
                    }
                    let p = v.host.join(rel);
                    if let Some(parent) = p.parent() {
                        std::fs::create_dir_all(parent)?;
                    }
                    std::fs::write(&p, content)?;
                    let mut mode = mode & 0o777;
                    if let Some(g) = fs_group {
                        chown_group(&p, g)?;
                        mode |= 0o040;
                    }
                    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))?;
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Objs;
    impl Lookup for Objs {
        fn secret(&self, name: &str) -> Option<Value> {
            (name == "creds").then(|| json!({"data": {"password": "czNjcjN0"}}))
        }
        fn config_map(&self, name: &str) -> Option<Value> {
            (name == "cfg").then(|| json!({"data": {"a.yaml": "x: 1"}}))
        }
        fn pvc(&self, name: &str) -> Option<Value> {
            (name == "data").then(|| json!({}))
        }
    }

    fn pod(volumes: Value) -> Value {
        json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"a": "b"}},
               "spec": {"volumes": volumes, "containers": [{"name": "c", "volumeMounts": [
                   {"name": "data", "mountPath": "/data"},
                   {"name": "shm", "mountPath": "/dev/shm"},
                   {"name": "creds", "mountPath": "/creds"}]}]}})
    }

    #[test]
    fn plans_volumes_and_mounts() {
        let p = pod(json!([
            {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "shm", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
            {"name": "creds", "secret": {"secretName": "creds", "defaultMode": 0o400,
                "items": [{"key": "password", "path": "pw"}]}},
            {"name": "info", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}]}},
        ]));
        let sa = SaFiles {
            token: "tok",
            ca_pem: "CA",
        };
        let vols = plan(&p, Path::new("/st"), &PodFacts::default(), &Objs, Some(sa)).unwrap();
        assert_eq!(vols[0].host, Path::new("/st/pvc/ns/data"));
        assert_eq!(
            vols[2].kind,
            Kind::Files(vec![("pw".into(), b"s3cr3t".to_vec(), 0o400)])
        );
        assert_eq!(
            vols[3].kind,
            Kind::Files(vec![("labels".into(), b"a=\"b\"".to_vec(), 0o644)])
        );
        assert_eq!(
            vols[4].host,
            Path::new("/st/pods/u1/volumes/kube-api-access")
        );
        assert_eq!(shm_size(&p, &vols).as_deref(), Some("65536k"));
        let m = mounts(&p["spec"]["containers"][0], &vols).unwrap();
        let paths: Vec<(&str, bool)> = m.iter().map(|m| (m.path.as_str(), m.read_only)).collect();
        assert_eq!(
            paths,
            vec![("/data", false), ("/creds", true), (SA_MOUNT, true)]
        );
    }

    #[test]
    fn missing_objects_wait() {
        let e = plan(
            &pod(json!([{"name": "data", "persistentVolumeClaim": {"claimName": "other"}}])),
            Path::new("/st"),
            &PodFacts::default(),
            &Objs,
            None,
        );
        assert_eq!(
            e,
            Err(ConfigError(
                "persistentvolumeclaim \"other\" not found".into()
            ))
        );
        let e = plan(
            &pod(json!([{"name": "x", "secret": {"secretName": "gone"}}])),
            Path::new("/st"),
            &PodFacts::default(),
            &Objs,
            None,
        );
        assert!(e.is_err());
        let ok = plan(
            &pod(json!([{"name": "x", "secret": {"secretName": "gone", "optional": true}}])),
            Path::new("/st"),
            &PodFacts::default(),
            &Objs,
            None,
        );
        assert_eq!(ok.unwrap()[0].kind, Kind::Files(vec![]));
    }

    #[test]
    fn automount_rules() {
        let sa = json!({"automountServiceAccountToken": false});
        assert!(automount(&json!({"spec": {}}), None));
        assert!(!automount(&json!({"spec": {}}), Some(&sa)));
        assert!(automount(
            &json!({"spec": {"automountServiceAccountToken": true}}),
            Some(&sa)
        ));
    }
}
