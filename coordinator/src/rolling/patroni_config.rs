//! Patroni's dynamic configuration: what the manifest wants against what
//! `GET /config` holds, as one `PATCH /config` body; and in which order
//! members with `pending_restart` are restarted.
//!
//! Follows upstream's `checkAndSetGlobalPostgreSQLConfiguration`
//! (postgres-operator `pkg/cluster/sync.go`), with two differences: the
//! slots pgherd manages are recorded in the configuration itself (upstream
//! kept them in memory, so a restart of the operator forgot which slots to
//! remove), and the restart order is recorded with the parameters that
//! need it, so it survives a restart between the PATCH and the restarts.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use pgherd_shared::crd::Postgresql;
use serde_json::{json, Map, Value};

use crate::builders::spilo_configuration::LOCAL_PARAMETERS;
use crate::config::OperatorConfig;

/// pgherd's own key in the dynamic configuration (Patroni keeps keys it
/// does not know).
pub const PGHERD_KEY: &str = "pgherd";

/// Settings Postgres requires on a standby to be at least the primary's, so
/// a decrease must reach the primary first (PostgreSQL docs, "Hot Standby",
/// administration section).
pub const PRIMARY_FIRST_ON_DECREASE: [&str; 5] = [
    "max_connections",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "max_worker_processes",
    "max_wal_senders",
];

/// The dynamic settings the manifest controls.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DesiredDynamic {
    pub ttl: Option<u32>,
    pub loop_wait: Option<u32>,
    pub retry_timeout: Option<u32>,
    pub maximum_lag_on_failover: Option<i64>,
    pub synchronous_mode: bool,
    pub synchronous_mode_strict: bool,
    pub synchronous_node_count: u32,
    pub failsafe_mode: Option<bool>,
    pub slots: BTreeMap<String, BTreeMap<String, String>>,
    /// The manifest's `postgresql.parameters`, the local class included:
    /// pgherd's agent copies those from the DCS into its local
    /// configuration (`pgherd-agent`'s `live_parameters`), Spilo ignores them
    /// there.
    pub parameters: BTreeMap<String, String>,
}

impl DesiredDynamic {
    pub fn of(pg: &Postgresql, cfg: &OperatorConfig) -> Self {
        let p = pg.spec.patroni.clone().unwrap_or_default();
        let parameters = pg
            .spec
            .postgresql
            .parameters
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let nonzero = |v: Option<u32>| v.filter(|x| *x > 0);
        DesiredDynamic {
            ttl: nonzero(p.ttl),
            loop_wait: nonzero(p.loop_wait),
            retry_timeout: nonzero(p.retry_timeout),
            maximum_lag_on_failover: p.maximum_lag_on_failover.filter(|v| *v > 0),
            synchronous_mode: p.synchronous_mode.unwrap_or(false),
            synchronous_mode_strict: p.synchronous_mode_strict.unwrap_or(false),
            synchronous_node_count: p.synchronous_node_count.filter(|v| *v >= 1).unwrap_or(1),
            failsafe_mode: p.failsafe_mode.or(cfg.enable_patroni_failsafe_mode),
            slots: p.slots.unwrap_or_default(),
            parameters,
        }
    }
}

/// In which order members with a pending restart are restarted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartOrder {
    ReplicasFirst,
    PrimaryFirst,
}

impl RestartOrder {
    fn as_str(self) -> &'static str {
        match self {
            RestartOrder::ReplicasFirst => "replicas_first",
            RestartOrder::PrimaryFirst => "primary_first",
        }
    }

    /// The order recorded in `GET /config`; replicas first when none is.
    pub fn recorded(config: &Value) -> Self {
        match config
            .pointer(&format!("/{PGHERD_KEY}/restart_order"))
            .and_then(Value::as_str)
        {
            Some("primary_first") => RestartOrder::PrimaryFirst,
            _ => RestartOrder::ReplicasFirst,
        }
    }
}

/// One `PATCH /config` and why.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigPatch {
    pub body: Value,
    /// Dotted names of the changed settings, for the event.
    pub changed: Vec<String>,
    /// A parameter of the local class changed: members apply it only after
    /// their agent has copied it and Patroni has reloaded, a loop later.
    pub reaches_local: bool,
}

/// Postgres settings compare as text: Patroni stores what it was given
/// (`100` or `"100"`), and booleans have several spellings.
fn setting_text(v: &Value) -> String {
    let text = match v {
        Value::Bool(true) => return "on".into(),
        Value::Bool(false) => return "off".into(),
        Value::String(s) => s.trim().to_lowercase(),
        other => other.to_string(),
    };
    match text.as_str() {
        "true" | "yes" => "on".into(),
        "false" | "no" => "off".into(),
        _ => text,
    }
}

fn as_bool(v: Option<&Value>) -> Option<bool> {
    match v? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.to_lowercase().as_str() {
            "on" | "true" | "yes" => Some(true),
            "off" | "false" | "no" => Some(false),
            // `quorum` (Patroni 4) is a synchronous mode too.
            "quorum" => Some(true),
            _ => None,
        },
        _ => None,
    }
}

fn integer(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The order restarts for `changes` need: primary first when one of
/// [`PRIMARY_FIRST_ON_DECREASE`] goes down and none goes up (a mix has no
/// safe order; replicas first is Patroni's and upstream's default).
pub fn restart_order(changes: &BTreeMap<String, (Option<Value>, String)>) -> RestartOrder {
    let (mut down, mut up) = (false, false);
    for (name, (old, new)) in changes {
        if !PRIMARY_FIRST_ON_DECREASE.contains(&name.as_str()) {
            continue;
        }
        match (integer(old.as_ref()), new.trim().parse::<i64>().ok()) {
            (Some(o), Some(n)) if n < o => down = true,
            (Some(o), Some(n)) if n > o => up = true,
            _ => {}
        }
    }
    if down && !up {
        RestartOrder::PrimaryFirst
    } else {
        RestartOrder::ReplicasFirst
    }
}

fn slot_matches(want: &BTreeMap<String, String>, have: Option<&Value>) -> bool {
    let Some(have) = have.and_then(Value::as_object) else {
        return false;
    };
    want.iter()
        .all(|(k, v)| have.get(k).map(setting_text) == Some(setting_text(&json!(v))))
}

/// The `PATCH /config` body that makes `current` match `desired`, or `None`
/// when it already does (a no-op sync writes nothing).
pub fn config_patch(desired: &DesiredDynamic, current: &Value) -> Option<ConfigPatch> {
    let mut body = Map::new();
    let mut changed = Vec::new();
    let mut set = |key: &str, v: Value, body: &mut Map<String, Value>| {
        changed.push(key.to_string());
        body.insert(key.into(), v);
    };

    let numbers = [
        ("ttl", desired.ttl.map(i64::from)),
        ("loop_wait", desired.loop_wait.map(i64::from)),
        ("retry_timeout", desired.retry_timeout.map(i64::from)),
        ("maximum_lag_on_failover", desired.maximum_lag_on_failover),
    ];
    for (key, want) in numbers {
        if let Some(want) = want {
            if integer(current.get(key)) != Some(want) {
                set(key, json!(want), &mut body);
            }
        }
    }
    // Always compared, so a `patronictl edit-config` is reverted, as upstream.
    if as_bool(current.get("synchronous_mode")).unwrap_or(false) != desired.synchronous_mode {
        set(
            "synchronous_mode",
            json!(desired.synchronous_mode),
            &mut body,
        );
    }
    if as_bool(current.get("synchronous_mode_strict")).unwrap_or(false)
        != desired.synchronous_mode_strict
    {
        set(
            "synchronous_mode_strict",
            json!(desired.synchronous_mode_strict),
            &mut body,
        );
    }
    if integer(current.get("synchronous_node_count")).unwrap_or(1)
        != i64::from(desired.synchronous_node_count)
    {
        set(
            "synchronous_node_count",
            json!(desired.synchronous_node_count),
            &mut body,
        );
    }
    if let Some(want) = desired.failsafe_mode {
        if as_bool(current.get("failsafe_mode")).unwrap_or(false) != want {
            set("failsafe_mode", json!(want), &mut body);
        }
    }

    // Slots: the manifest's are set; slots pgherd set before and the
    // manifest dropped are removed; slots only Patroni knows stay.
    let current_slots = current.get("slots").and_then(Value::as_object);
    let recorded: BTreeSet<String> = current
        .pointer(&format!("/{PGHERD_KEY}/managed_slots"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect();
    let mut slots = Map::new();
    for (name, want) in &desired.slots {
        if !slot_matches(want, current_slots.and_then(|s| s.get(name))) {
            slots.insert(name.clone(), json!(want));
        }
    }
    for name in &recorded {
        let present = current_slots.is_some_and(|s| s.contains_key(name));
        if !desired.slots.contains_key(name) && present {
            slots.insert(name.clone(), Value::Null);
        }
    }
    if !slots.is_empty() {
        changed.extend(slots.keys().map(|k| format!("slots.{k}")));
        body.insert("slots".into(), Value::Object(slots));
    }
    let mut pgherd = Map::new();
    let wanted_names: BTreeSet<String> = desired.slots.keys().cloned().collect();
    if wanted_names != recorded {
        pgherd.insert("managed_slots".into(), json!(wanted_names));
    }

    // Parameters: the manifest's are compared; removing one from the
    // manifest leaves Patroni's value (upstream does the same), except for
    // the local class, which only pgherd writes to the DCS: a value left
    // there would outlive the manifest on members that follow the DCS.
    let current_params = current
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object);
    let mut params = Map::new();
    let mut param_changes = BTreeMap::new();
    for (name, want) in &desired.parameters {
        let have = current_params.and_then(|p| p.get(name));
        if have.map(setting_text) != Some(setting_text(&json!(want))) {
            params.insert(name.clone(), json!(want));
            param_changes.insert(name.clone(), (have.cloned(), want.clone()));
        }
    }
    for name in LOCAL_PARAMETERS {
        let present = current_params
            .and_then(|p| p.get(*name))
            .is_some_and(|v| !v.is_null());
        if present && !desired.parameters.contains_key(*name) {
            params.insert(name.to_string(), Value::Null);
        }
    }
    let reaches_local = params
        .keys()
        .any(|k| LOCAL_PARAMETERS.contains(&k.as_str()));
    if !params.is_empty() {
        changed.extend(params.keys().map(|k| format!("postgresql.parameters.{k}")));
        body.insert("postgresql".into(), json!({ "parameters": params }));
        pgherd.insert(
            "restart_order".into(),
            json!(restart_order(&param_changes).as_str()),
        );
    }
    if pgherd.contains_key("managed_slots") {
        // Written once after a migration too, so a slot the manifest drops
        // later is known to be pgherd's.
        changed.push(format!("{PGHERD_KEY}.managed_slots"));
    }
    if !pgherd.is_empty() {
        body.insert(PGHERD_KEY.into(), Value::Object(pgherd));
    }
    if body.is_empty() {
        return None;
    }
    Some(ConfigPatch {
        body: Value::Object(body),
        changed,
        reaches_local,
    })
}

/// Marks a patch that changes parameters with the time until which
/// Patroni may not have applied it yet (its next loop). Until then, "no
/// member has `pending_restart`" proves nothing, and the update is not
/// done. Kept in the configuration rather than in memory because a watch
/// event can start the next pass at once, and a restart of the coordinator
/// must not lose it either.
pub fn mark_settling(body: &mut Value, until: Timestamp) {
    if body.get("postgresql").is_none() {
        return;
    }
    let Some(b) = body.as_object_mut() else {
        return;
    };
    let pgherd = b
        .entry(PGHERD_KEY)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(p) = pgherd.as_object_mut() {
        p.insert("settle_until".into(), json!(until.to_string()));
    }
}

/// Whether a parameter change may still be on its way to the members.
pub fn settling(config: &Value, now: Timestamp) -> bool {
    config
        .pointer(&format!("/{PGHERD_KEY}/settle_until"))
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<Timestamp>().ok())
        .is_some_and(|until| now < until)
}

#[cfg(test)]
#[path = "patroni_config_tests.rs"]
mod tests;
