//! Pod volumes and mounts in upstream's order: data, shm, shared socket,
//! additional secret, then additional (and TLS) volumes.

use k8s_openapi::api::core::v1::{
    EmptyDirVolumeSource, EnvVar, PodSpec, SecretVolumeSource, Volume, VolumeMount,
};
use pgherd_shared::crd::postgresql::{AdditionalVolume, PostgresSpec};
use serde_json::{Map, Value};

use super::env::lit;
use super::BuildError;

pub const DATA_MOUNT: &str = "/home/postgres/pgdata";
pub const POSTGRES_CONTAINER: &str = "postgres";

/// An additional volume after defaulting and source parsing.
#[derive(Clone, Debug)]
pub struct ResolvedVolume {
    pub name: String,
    pub mount_path: String,
    pub sub_path: Option<String>,
    pub is_sub_path_expr: bool,
    pub targets: Vec<String>,
    /// The volume without its name: exactly one `core/v1.VolumeSource` member.
    pub source: Volume,
}

fn mount(name: &str, path: &str, sub_path: Option<&str>, expr: bool) -> VolumeMount {
    let sub = sub_path.filter(|s| !s.is_empty()).map(String::from);
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        sub_path: if expr { None } else { sub.clone() },
        sub_path_expr: if expr { sub } else { None },
        ..Default::default()
    }
}

pub fn data_mount(spec: &PostgresSpec) -> VolumeMount {
    mount(
        pgherd_shared::naming::DATA_VOLUME,
        DATA_MOUNT,
        spec.volume.sub_path.as_deref(),
        spec.volume.is_sub_path_expr.unwrap_or(false),
    )
}

fn memory_empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: Some("Memory".into()),
            size_limit: None,
        }),
        ..Default::default()
    }
}

pub fn add_shm(pod: &mut PodSpec) {
    pod.volumes
        .get_or_insert_with(Vec::new)
        .push(memory_empty_dir("dshm"));
    if let Some(c) = pod
        .containers
        .iter_mut()
        .find(|c| c.name == POSTGRES_CONTAINER)
    {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount("dshm", "/dev/shm", None, false));
    }
}

pub fn add_var_run(pod: &mut PodSpec) {
    pod.volumes
        .get_or_insert_with(Vec::new)
        .push(memory_empty_dir("postgresql-run"));
    for c in &mut pod.containers {
        c.volume_mounts.get_or_insert_with(Vec::new).push(mount(
            "postgresql-run",
            "/var/run/postgresql",
            None,
            false,
        ));
    }
}

pub fn add_secret_mount(pod: &mut PodSpec, secret: &str, path: &str) {
    pod.volumes.get_or_insert_with(Vec::new).push(Volume {
        name: secret.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            ..Default::default()
        }),
        ..Default::default()
    });
    for c in &mut pod.containers {
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(mount(secret, path, None, false));
    }
}

/// Go decodes JSON keys case-insensitively, so upstream examples write
/// `PersistentVolumeClaim:`; map such keys onto the real field names.
pub fn volume_source(field: &str, raw: &Value) -> Result<Volume, BuildError> {
    let Value::Object(obj) = raw else {
        return Err(BuildError::field(field, "must be an object"));
    };
    let mut normalised = Map::new();
    for (k, v) in obj {
        let canonical = VOLUME_SOURCE_KEYS
            .iter()
            .find(|known| known.eq_ignore_ascii_case(k))
            .map(|s| s.to_string())
            .unwrap_or_else(|| k.clone());
        normalised.insert(canonical, v.clone());
    }
    normalised.insert("name".into(), Value::String(String::new()));
    serde_json::from_value(Value::Object(normalised))
        .map_err(|e| BuildError::field(field, format!("not a volume source: {e}")))
}

/// Field names of `core/v1.VolumeSource`.
const VOLUME_SOURCE_KEYS: &[&str] = &[
    "awsElasticBlockStore",
    "azureDisk",
    "azureFile",
    "cephfs",
    "cinder",
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "fc",
    "flexVolume",
    "flocker",
    "gcePersistentDisk",
    "gitRepo",
    "glusterfs",
    "hostPath",
    "image",
    "iscsi",
    "nfs",
    "persistentVolumeClaim",
    "photonPersistentDisk",
    "portworxVolume",
    "projected",
    "quobyte",
    "rbd",
    "scaleIO",
    "secret",
    "storageos",
    "vsphereVolume",
];

pub fn resolve_additional(volumes: &[AdditionalVolume]) -> Result<Vec<ResolvedVolume>, BuildError> {
    volumes
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let targets = match v.target_containers.as_deref() {
                None | Some([]) => vec![POSTGRES_CONTAINER.to_string()],
                Some(t) => {
                    if t.len() > 1 && t.iter().any(|x| x == "all") {
                        return Err(BuildError::field(
                            format!("spec.additionalVolumes[{i}].targetContainers"),
                            "use either [all] or a list of container names, not both",
                        ));
                    }
                    t.to_vec()
                }
            };
            Ok(ResolvedVolume {
                name: v.name.clone(),
                mount_path: v.mount_path.clone(),
                sub_path: v.sub_path.clone(),
                is_sub_path_expr: v.is_sub_path_expr.unwrap_or(false),
                targets,
                source: volume_source(
                    &format!("spec.additionalVolumes[{i}].volumeSource"),
                    &v.volume_source,
                )?,
            })
        })
        .collect()
}

/// Adds volumes and mounts; a second volume on the same path, or one on the
/// data directory, is skipped as upstream does (with a returned warning).
pub fn add_additional(pod: &mut PodSpec, volumes: &[ResolvedVolume]) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut used_paths: Vec<&str> = Vec::new();
    let mut accepted = Vec::new();
    for v in volumes {
        if used_paths.contains(&v.mount_path.as_str()) {
            warnings.push(format!(
                "volume {} skipped: another volume is mounted at {}",
                v.name, v.mount_path
            ));
            continue;
        }
        if v.mount_path == DATA_MOUNT {
            warnings.push(format!(
                "volume {} skipped: cannot mount on the data directory",
                v.name
            ));
            continue;
        }
        used_paths.push(&v.mount_path);
        pod.volumes.get_or_insert_with(Vec::new).push(Volume {
            name: v.name.clone(),
            ..v.source.clone()
        });
        accepted.push(v);
    }
    for c in &mut pod.containers {
        for v in &accepted {
            if v.targets.iter().any(|t| t == "all" || *t == c.name) {
                c.volume_mounts.get_or_insert_with(Vec::new).push(mount(
                    &v.name,
                    &v.mount_path,
                    v.sub_path.as_deref(),
                    v.is_sub_path_expr,
                ));
            }
        }
    }
    warnings
}

/// TLS secret volumes and the SSL_* variables pointing into them.
pub fn tls(spec: &PostgresSpec) -> (Vec<EnvVar>, Vec<ResolvedVolume>) {
    let Some(tls) = spec.tls.as_ref().filter(|t| !t.secret_name.is_empty()) else {
        return (Vec::new(), Vec::new());
    };
    let secret_volume = |name: &str, path: &str| ResolvedVolume {
        name: name.into(),
        mount_path: path.into(),
        sub_path: None,
        is_sub_path_expr: false,
        targets: vec![POSTGRES_CONTAINER.into()],
        source: Volume {
            secret: Some(SecretVolumeSource {
                secret_name: Some(name.into()),
                default_mode: Some(0o640),
                ..Default::default()
            }),
            ..Default::default()
        },
    };
    let path_in = |file: Option<&str>, dir: &str, default: &str| {
        let f = file.filter(|f| !f.is_empty()).unwrap_or(default);
        if f.starts_with('/') {
            f.to_string()
        } else {
            format!("{dir}/{f}")
        }
    };
    let mut env = vec![
        lit(
            "SSL_CERTIFICATE_FILE",
            path_in(tls.certificate_file.as_deref(), "/tls", "tls.crt"),
        ),
        lit(
            "SSL_PRIVATE_KEY_FILE",
            path_in(tls.private_key_file.as_deref(), "/tls", "tls.key"),
        ),
    ];
    let mut vols = vec![secret_volume(&tls.secret_name, "/tls")];
    if let Some(ca) = tls.ca_file.as_deref().filter(|f| !f.is_empty()) {
        let ca_secret = tls.ca_secret_name.as_deref().filter(|s| !s.is_empty());
        let dir = if ca_secret.is_some() {
            "/tlsca"
        } else {
            "/tls"
        };
        env.push(lit("SSL_CA_FILE", path_in(Some(ca), dir, "")));
        if let Some(s) = ca_secret {
            vols.push(secret_volume(s, "/tlsca"));
        }
    }
    (env, vols)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_style_volume_source_keys_are_accepted() {
        let raw =
            serde_json::json!({"PersistentVolumeClaim": {"claimName": "data", "readOnly": false}});
        let vs = volume_source("f", &raw).unwrap();
        assert_eq!(vs.persistent_volume_claim.unwrap().claim_name, "data");
        let raw = serde_json::json!({"emptyDir": {}});
        assert!(volume_source("f", &raw).unwrap().empty_dir.is_some());
    }
}
