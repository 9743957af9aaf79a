//! The user's Patroni configuration (`SPILO_CONFIGURATION`) and how it is laid over ours.

use serde_json::{Map, Value};

use super::env::{yaml_error, Env};
use super::Error;

/// `SPILO_CONFIGURATION`, or `PATRONI_CONFIGURATION` when the former is unset, as a mapping.
///
/// Parsed as YAML 1.2 (JSON is a subset, and the operator always sends JSON). Spilo used PyYAML (YAML 1.1), where
/// an unquoted `on`/`off`/`yes`/`no` is a boolean; here it stays a string. Postgres reads both the same way, so
/// inside `parameters` nothing changes; elsewhere (Patroni's own switches) a warning points at the value.
pub fn user_config(env: &Env) -> Result<(String, Map<String, Value>), Error> {
    let (var, text) = match env.get("SPILO_CONFIGURATION") {
        Some(text) => ("SPILO_CONFIGURATION", text),
        None => (
            "PATRONI_CONFIGURATION",
            env.get("PATRONI_CONFIGURATION").unwrap_or(""),
        ),
    };
    // JSON first: a YAML parser treats U+0085/U+2028 inside JSON strings as line breaks.
    let value: Value = match serde_json::from_str(text) {
        Ok(value) => value,
        Err(_) if text.trim().is_empty() => Value::Null,
        Err(_) => serde_yaml_ng::from_str(text).map_err(|e| Error::invalid(var, yaml_error(&e)))?,
    };
    let map = match value {
        Value::Null => Map::new(),
        Value::Object(map) => map,
        other => {
            return Err(Error::invalid(
                var,
                format!("must be a mapping, got {}", kind(&other)),
            ))
        }
    };
    for section in ["postgresql", "bootstrap"] {
        if let Some(v) = map.get(section).filter(|v| !v.is_object() && !v.is_null()) {
            return Err(Error::invalid(
                var,
                format!("{section} must be a mapping, got {}", kind(v)),
            ));
        }
    }
    if let Some(params) = map.get("postgresql").and_then(|p| p.get("parameters")) {
        if !params.is_object() && !params.is_null() {
            return Err(Error::invalid(
                var,
                format!(
                    "postgresql.parameters must be a mapping, got {}",
                    kind(params)
                ),
            ));
        }
    }
    if let Some(data_dir) = map.get("postgresql").and_then(|p| p.get("data_dir")) {
        if !data_dir.is_string() && !data_dir.is_null() {
            return Err(Error::invalid(var, "postgresql.data_dir must be a string"));
        }
    }
    warn_yaml11_words(env, var, "", &Value::Object(map.clone()));
    Ok((var.to_string(), map))
}

fn warn_yaml11_words(env: &Env, var: &str, path: &str, value: &Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                // Postgres parses on/off/yes/no itself; only Patroni's own keys care about the type.
                if k != "parameters" {
                    let child = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    warn_yaml11_words(env, var, &child, v);
                }
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                warn_yaml11_words(env, var, &format!("{path}[{i}]"), v);
            }
        }
        Value::String(s) if is_yaml11_bool_word(s) => env.warn(format!(
            "{var}: {path} is the string {s:?}; Spilo (YAML 1.1) read an unquoted {s} as a boolean, write true/false"
        )),
        _ => {}
    }
}

fn is_yaml11_bool_word(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "yes" | "no" | "on" | "off" | "y" | "n"
    )
}

pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Spilo's `deep_update(user, ours)`: mappings merge recursively, the user's value wins for everything else and
/// a user list replaces ours whole (so the operator's `initdb` list drops our `data-checksums`). A user `null`
/// does not delete our value.
pub fn deep_merge(user: Value, ours: Value) -> Value {
    match (user, ours) {
        (Value::Object(mut user), Value::Object(ours)) => {
            for (key, ours_value) in ours {
                let merged = match user.remove(&key) {
                    Some(user_value) => deep_merge(user_value, ours_value),
                    None => ours_value,
                };
                user.insert(key, merged);
            }
            Value::Object(user)
        }
        (Value::Null, ours) => ours,
        (user, _) => user,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_scalars_win_maps_merge_lists_replace() {
        let ours = json!({
            "bootstrap": {"initdb": ["data-checksums", {"encoding": "UTF8"}], "dcs": {"ttl": 30, "loop_wait": 10}},
            "postgresql": {"parameters": {"shared_buffers": "1GB", "ssl": "on"}},
            "scope": "x"
        });
        let user = json!({
            "bootstrap": {"initdb": [{"auth-host": "scram-sha-256"}], "dcs": {"ttl": 20, "synchronous_mode": true}},
            "postgresql": {"parameters": {"shared_buffers": "64MB"}, "bin_dir": "/opt/bin"},
            "scope": null,
            "extra": {"a": 1}
        });
        assert_eq!(
            deep_merge(user, ours),
            json!({
                "bootstrap": {"initdb": [{"auth-host": "scram-sha-256"}], "dcs": {"ttl": 20, "loop_wait": 10, "synchronous_mode": true}},
                "postgresql": {"parameters": {"shared_buffers": "64MB", "ssl": "on"}, "bin_dir": "/opt/bin"},
                "scope": "x",
                "extra": {"a": 1}
            })
        );
    }

    #[test]
    fn type_mismatch_keeps_the_users_value() {
        assert_eq!(
            deep_merge(json!({"a": "scalar"}), json!({"a": {"b": 1}})),
            json!({"a": "scalar"})
        );
        assert_eq!(
            deep_merge(json!({"a": {"b": 1}}), json!({"a": [1]})),
            json!({"a": {"b": 1}})
        );
    }

    use crate::testutil::map as vars;

    #[test]
    fn parses_json_and_yaml_and_empty() {
        let v = vars(&[(
            "SPILO_CONFIGURATION",
            "{\"postgresql\": {\"bin_dir\": \"/x\"}}",
        )]);
        assert_eq!(
            user_config(&Env::new(&v)).unwrap().1["postgresql"]["bin_dir"],
            "/x"
        );
        let v = vars(&[("PATRONI_CONFIGURATION", "bootstrap:\n  dcs:\n    ttl: 20\n")]);
        let (var, map) = user_config(&Env::new(&v)).unwrap();
        assert_eq!(
            (var.as_str(), &map["bootstrap"]["dcs"]["ttl"]),
            ("PATRONI_CONFIGURATION", &json!(20))
        );
        assert!(user_config(&Env::new(&vars(&[]))).unwrap().1.is_empty());
        assert!(
            user_config(&Env::new(&vars(&[("SPILO_CONFIGURATION", "")])))
                .unwrap()
                .1
                .is_empty()
        );
    }

    #[test]
    fn errors_name_the_variable_and_position() {
        let v = vars(&[("SPILO_CONFIGURATION", "{a: [1, 2}")]);
        let msg = user_config(&Env::new(&v)).unwrap_err().to_string();
        assert!(
            msg.starts_with("SPILO_CONFIGURATION: not valid YAML/JSON at line 1 column"),
            "{msg}"
        );
        let v = vars(&[("SPILO_CONFIGURATION", "[1, 2]")]);
        assert_eq!(
            user_config(&Env::new(&v)).unwrap_err().to_string(),
            "SPILO_CONFIGURATION: must be a mapping, got a list"
        );
        let v = vars(&[("SPILO_CONFIGURATION", "postgresql: 5")]);
        assert_eq!(
            user_config(&Env::new(&v)).unwrap_err().to_string(),
            "SPILO_CONFIGURATION: postgresql must be a mapping, got a number"
        );
    }

    #[test]
    fn warns_about_yaml11_booleans_outside_parameters() {
        let v = vars(&[(
            "SPILO_CONFIGURATION",
            "postgresql:\n  use_pg_rewind: off\n  parameters:\n    ssl: on\n",
        )]);
        let env = Env::new(&v);
        user_config(&env).unwrap();
        let warnings = env.take_warnings();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].contains("postgresql.use_pg_rewind is the string \"off\""),
            "{warnings:?}"
        );
    }
}
