//! `pgherd-coordinator render`: every object the coordinator would create
//! for a manifest, without a cluster, for review in GitOps pipelines.
//!
//! The output is deterministic: passwords are placeholders (the real ones
//! are generated at creation and never printed), and objects carry the same
//! hash annotation the reconciler writes, so a reviewer sees exactly what
//! will be applied.

use serde::Deserialize;
use serde_json::Value;

use crate::builders::{build_all, ExternalInputs, PlaceholderPasswords};
use crate::config::OperatorConfig;
use crate::reconcile::apply::desired_list;

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
        for d in desired_list(&objects) {
            out.push_str("---\n");
            out.push_str(
                &serde_yaml_ng::to_string(&readable(d.object)).map_err(|e| err(e.to_string()))?,
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
