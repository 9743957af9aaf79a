//! The legacy ConfigMap format: one flat string per setting.
//!
//! Instead of a second hand-written table of ~150 keys, the nested
//! `OperatorConfigurationData` schema tells us, for every flat key, which
//! group it lives in and what JSON type it has; the string is converted to
//! that type and the result goes through the same typed deserialisation as an
//! `OperatorConfiguration` object. One schema, two input formats.

use std::collections::BTreeMap;

use pgherd_shared::crd::OperatorConfigurationData;
use serde_json::{Map, Value};

use super::ConfigError;

/// JSON type of a setting as the schema declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Bool,
    Integer,
    String,
    List,
    Map,
    ObjectList,
    Object,
}

/// Where a flat key lives: top level (`None`) or inside a group.
struct Slot {
    group: Option<String>,
    kind: Kind,
}

fn kind_of(schema: &Value) -> Kind {
    let ty = match schema.get("type") {
        Some(Value::String(s)) => s.as_str(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null")
            .unwrap_or("string"),
        _ => "object",
    };
    match ty {
        "boolean" => Kind::Bool,
        "integer" | "number" => Kind::Integer,
        "array" => {
            let item_is_object = schema
                .pointer("/items/type")
                .and_then(Value::as_str)
                .is_some_and(|t| t == "object")
                || schema.pointer("/items/$ref").is_some();
            if item_is_object {
                Kind::ObjectList
            } else {
                Kind::List
            }
        }
        "object" if schema.get("additionalProperties").is_some() => Kind::Map,
        "object" => Kind::Object,
        _ => Kind::String,
    }
}

/// Resolves `$ref`s of the generated schema (groups are definitions).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    // Option<T> fields are emitted as `anyOf: [{$ref}, {type: null}]` or a bare `$ref`.
    let target = schema
        .get("anyOf")
        .and_then(Value::as_array)
        .and_then(|a| a.iter().find(|s| s.get("$ref").is_some()))
        .unwrap_or(schema);
    match target.get("$ref").and_then(Value::as_str) {
        Some(r) => r
            .strip_prefix("#/")
            .map(|p| format!("/{p}"))
            .and_then(|p| root.pointer(&p))
            .unwrap_or(target),
        None => target,
    }
}

fn slots() -> BTreeMap<String, Slot> {
    let root = serde_json::to_value(schemars::schema_for!(OperatorConfigurationData))
        .expect("schema serialises");
    let mut out = BTreeMap::new();
    let Some(props) = root.get("properties").and_then(Value::as_object) else {
        return out;
    };
    for (key, schema) in props {
        let schema = resolve(&root, schema);
        let kind = kind_of(schema);
        let group_props = schema.get("properties").and_then(Value::as_object);
        match (kind, group_props) {
            (Kind::Object, Some(gp)) => {
                for (sub, sub_schema) in gp {
                    let sub_schema = resolve(&root, sub_schema);
                    out.insert(
                        sub.clone(),
                        Slot {
                            group: Some(key.clone()),
                            kind: kind_of(sub_schema),
                        },
                    );
                }
            }
            _ => {
                out.insert(key.clone(), Slot { group: None, kind });
            }
        }
    }
    out
}

/// Upstream splits lists on commas and trims blanks.
fn parse_list(v: &str) -> Vec<Value> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| Value::String(s.to_string()))
        .collect()
}

/// `k1:v1,k2:v2`; values may themselves contain `:` (URLs), so split once.
fn parse_map(key: &str, v: &str) -> Result<Map<String, Value>, ConfigError> {
    let mut m = Map::new();
    for pair in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (k, val) = pair.split_once(':').ok_or_else(|| ConfigError::Invalid {
            field: key.to_string(),
            message: format!("{pair:?} is not a key:value pair"),
        })?;
        m.insert(
            k.trim().to_string(),
            Value::String(val.trim().trim_matches('"').to_string()),
        );
    }
    Ok(m)
}

/// Converts ConfigMap `data` into the nested configuration object.
///
/// Returns the configuration and the keys that pgherd does not know, which
/// the caller logs (upstream silently ignores them too).
pub fn from_configmap_data(
    data: &BTreeMap<String, String>,
) -> Result<(OperatorConfigurationData, Vec<String>), ConfigError> {
    let slots = slots();
    let mut root = Map::new();
    let mut unknown = Vec::new();
    for (key, raw) in data {
        let Some(slot) = slots.get(key) else {
            unknown.push(key.clone());
            continue;
        };
        let invalid = |message: String| ConfigError::Invalid {
            field: key.clone(),
            message,
        };
        let value = match slot.kind {
            Kind::Bool => match raw.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                other => return Err(invalid(format!("{other:?} is not true or false"))),
            },
            Kind::Integer => {
                let n: i64 = raw
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("{raw:?} is not an integer")))?;
                Value::from(n)
            }
            Kind::String => Value::String(raw.clone()),
            Kind::List => Value::Array(parse_list(raw)),
            Kind::Map => Value::Object(parse_map(key, raw)?),
            // `secretname:x,userkey:y` describes one object; several are separated by `;`.
            Kind::ObjectList => Value::Array(
                raw.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|item| parse_map(key, item).map(Value::Object))
                    .collect::<Result<_, _>>()?,
            ),
            Kind::Object => {
                return Err(invalid(
                    "cannot be set in a ConfigMap; use an OperatorConfiguration object".into(),
                ))
            }
        };
        match &slot.group {
            None => {
                root.insert(key.clone(), value);
            }
            Some(g) => {
                let group = root
                    .entry(g.clone())
                    .or_insert_with(|| Value::Object(Map::new()));
                if let Value::Object(gm) = group {
                    gm.insert(key.clone(), value);
                }
            }
        }
    }
    let data: OperatorConfigurationData = serde_path_to_error::deserialize(Value::Object(root))
        .map_err(|e| {
            let path = e.path().to_string();
            ConfigError::Invalid {
                field: path.rsplit('.').next().unwrap_or(&path).to_string(),
                message: e.into_inner().to_string(),
            }
        })?;
    Ok((data, unknown))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cm(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn flat_keys_land_in_their_groups_with_types() {
        let (d, unknown) = from_configmap_data(&cm(&[
            ("docker_image", "img:1"),
            ("workers", "4"),
            ("enable_pod_antiaffinity", "true"),
            ("cluster_labels", "application:spilo,env:prod"),
            ("protected_role_names", "admin, cron_admin"),
            ("super_username", "pgadmin"),
            ("resync_period", "10m"),
            ("some_future_key", "x"),
            (
                "infrastructure_roles_secrets",
                "secretname:monitoring-roles,userkey:user,passwordkey:password,rolekey:inrole",
            ),
        ]))
        .unwrap();
        assert_eq!(d.docker_image.as_deref(), Some("img:1"));
        assert_eq!(d.workers, Some(4));
        let k = d.kubernetes.unwrap();
        assert_eq!(k.enable_pod_antiaffinity, Some(true));
        assert_eq!(k.cluster_labels.unwrap().get("env").unwrap(), "prod");
        assert_eq!(
            k.infrastructure_roles_secrets.unwrap()[0]
                .secretname
                .as_deref(),
            Some("monitoring-roles")
        );
        assert_eq!(
            d.teams_api.unwrap().protected_role_names.unwrap(),
            ["admin", "cron_admin"]
        );
        assert_eq!(d.users.unwrap().super_username.as_deref(), Some("pgadmin"));
        assert_eq!(unknown, ["some_future_key"]);
    }

    #[test]
    fn bad_values_name_the_key() {
        let err = from_configmap_data(&cm(&[("workers", "eight")])).unwrap_err();
        assert!(err.to_string().contains("workers"), "{err}");
        let err = from_configmap_data(&cm(&[("enable_sidecars", "yes")])).unwrap_err();
        assert!(err.to_string().contains("enable_sidecars"), "{err}");
        let err = from_configmap_data(&cm(&[("cluster_labels", "nocolon")])).unwrap_err();
        assert!(err.to_string().contains("cluster_labels"), "{err}");
    }
}
