//! `pgherd-coordinator render`: every object the coordinator would create
//! for a manifest, without a cluster, for review in GitOps pipelines.
//!
//! The output is deterministic: passwords are placeholders (the real ones
//! are generated at creation and never printed), and objects carry the same
//! hash annotation the reconciler writes, so a reviewer sees exactly what
//! will be applied. The logical backup CronJob is shown; the Secret with the
//! configuration's storage keys is not, since it would print them.

use serde::Deserialize;
use serde_json::Value;

use crate::builders::{build_all, ExternalInputs, PlaceholderPasswords};
use crate::config::OperatorConfig;
use crate::reconcile::apply::{desired_list, stamp};

#[derive(Debug, thiserror::Error)]
#[error("document {document}{}: {message}", name.as_ref().map(|n| format!(" ({n})")).unwrap_or_default())]
pub struct RenderError {
    /// 1-based position in the input stream.
    pub document: usize,
    pub name: Option<String>,
    pub message: String,
}

fn is_postgresql(doc: &Value) -> bool {
    doc.get("kind").and_then(Value::as_str) == Some("postgresql")
        && doc
            .get("apiVersion")
            .and_then(Value::as_str)
            .is_some_and(|v| v.starts_with("acid.zalan.do/"))
}

/// Secrets are shown with readable `stringData`; their password is a placeholder anyway.
fn readable(mut obj: Value) -> Value {
    if obj.get("kind").and_then(Value::as_str) == Some("Secret") {
        if let Some(Value::Object(data)) = obj.as_object_mut().and_then(|o| o.remove("data")) {
            let decoded = data
                .iter()
                .filter_map(|(k, v)| {
                    let b64 = v.as_str()?;
                    let bytes: k8s_openapi::ByteString =
                        serde_json::from_value(Value::String(b64.into())).ok()?;
                    Some((
                        k.clone(),
                        Value::String(String::from_utf8_lossy(&bytes.0).into()),
                    ))
                })
                .collect::<serde_json::Map<_, _>>();
            obj["stringData"] = Value::Object(decoded);
        }
    }
    obj
}

/// Renders all `postgresql` documents of a (multi-document) YAML stream.
pub fn render(
    text: &str,
    cfg: &OperatorConfig,
    default_namespace: &str,
) -> Result<String, RenderError> {
    let mut out = String::new();
    let mut found = 0;
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = Value::deserialize(doc).map_err(|e| RenderError {
            document,
            name: None,
            message: format!("not valid YAML: {e}"),
        })?;
        if !is_postgresql(&value) {
            continue;
        }
        found += 1;
        let name = value
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .map(String::from);
        let err = |message: String| RenderError {
            document,
            name: name.clone(),
            message,
        };
        let pg =
            pgherd_shared::crd::load_postgresql(value.clone()).map_err(|e| err(e.to_string()))?;
        let objects = build_all(
            &pg,
            cfg,
            default_namespace,
            &ExternalInputs::default(),
            &mut PlaceholderPasswords,
        )
        .map_err(|e| err(e.to_string()))?;
        let inputs = ExternalInputs::default();
        let c = crate::builders::Cluster::new(&pg, cfg, default_namespace, &inputs);
        let cronjob = crate::builders::logical_backup::logical_backup(&c)
            .map_err(|e| err(e.to_string()))?
            .map(|b| stamp(serde_json::to_value(b.cronjob).expect("k8s objects serialise")));
        let objects = desired_list(&objects).into_iter().map(|d| d.object);
        for object in objects.chain(cronjob) {
            out.push_str("---\n");
            out.push_str(
                &serde_yaml_ng::to_string(&readable(object)).map_err(|e| err(e.to_string()))?,
            );
        }
    }
    if found == 0 {
        return Err(RenderError {
            document: 0,
            name: None,
            message: "no acid.zalan.do postgresql document in the input".into(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_logical_backup_cronjob_is_shown_and_its_keys_are_not() {
        let manifest = "apiVersion: acid.zalan.do/v1\nkind: postgresql\nmetadata: {name: acid-x}\n\
            spec: {teamId: acid, volume: {size: 1Gi}, numberOfInstances: 1, postgresql: {version: '17'}, \
            enableLogicalBackup: true}\n";
        let mut cfg = OperatorConfig::default();
        cfg.raw.logical_backup = Some(Default::default());
        let lb = cfg.raw.logical_backup.as_mut().unwrap();
        lb.logical_backup_s3_secret_access_key = Some("not-for-review-logs".into());
        let out = render(manifest, &cfg, "db").unwrap();
        let last = out.rsplit("---\n").next().unwrap();
        let cronjob: Value = serde_yaml_ng::from_str(last).unwrap();
        assert_eq!(cronjob["kind"], "CronJob");
        assert_eq!(cronjob["metadata"]["name"], "logical-backup-acid-x");
        assert!(crate::reconcile::apply::hash_of(&cronjob).is_some());
        assert!(!out.contains("not-for-review-logs"));
        let off = manifest.replace("enableLogicalBackup: true", "enableLogicalBackup: false");
        assert!(!render(&off, &cfg, "db").unwrap().contains("CronJob"));
    }
}
