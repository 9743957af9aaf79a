use super::*;
use pgherd_shared::crd::Postgresql;

fn pg(yaml_spec: &str) -> Postgresql {
    serde_yaml_ng::from_str(&format!(
        "metadata: {{name: acid-x, namespace: db}}\nspec:\n  teamId: acid\n  volume: {{size: 1Gi}}\n  numberOfInstances: 2\n{yaml_spec}"
    ))
    .unwrap()
}

fn desired(spec: &str) -> DesiredDynamic {
    DesiredDynamic::of(&pg(spec), &OperatorConfig::default())
}

/// What Patroni returns for a cluster bootstrapped from the same manifest.
fn bootstrapped() -> Value {
    json!({
        "ttl": 30, "loop_wait": 10, "retry_timeout": 10,
        "maximum_lag_on_failover": 33554432,
        "postgresql": {"parameters": {"max_connections": 100, "wal_level": "logical",
            "hot_standby": "on"}, "use_pg_rewind": true},
        "slots": {"patroni_only": {"type": "physical"}}
    })
}

const SPEC: &str = "  postgresql:\n    version: '17'\n    parameters: {max_connections: '100', wal_level: logical}\n  patroni: {ttl: 30, loop_wait: 10}\n";

/// SPEC with a parameter of the local class, and the DCS after pgherd's
/// first sync of it.
const LOCAL_SPEC: &str = "  postgresql:\n    version: '17'\n    parameters: {max_connections: '100', wal_level: logical, shared_buffers: 64MB}\n  patroni: {ttl: 30, loop_wait: 10}\n";

fn synced() -> Value {
    let mut v = bootstrapped();
    v["postgresql"]["parameters"]["shared_buffers"] = json!("64MB");
    v
}

#[test]
fn an_unchanged_manifest_patches_nothing() {
    assert_eq!(config_patch(&desired(SPEC), &bootstrapped()), None);
}

#[test]
fn local_parameters_go_to_the_dcs_too() {
    let d = desired(LOCAL_SPEC);
    assert_eq!(d.parameters["shared_buffers"], "64MB");
    assert_eq!(d.parameters["max_connections"], "100");
    assert_eq!(config_patch(&d, &synced()), None);
}

#[test]
fn the_first_sync_after_bootstrap_copies_local_parameters_to_the_dcs() {
    // Bootstrap puts them in the local configuration only (SPILO_CONFIGURATION).
    let patch = config_patch(&desired(LOCAL_SPEC), &bootstrapped()).expect("a patch");
    assert_eq!(patch.changed, ["postgresql.parameters.shared_buffers"]);
}

#[test]
fn a_local_parameter_change_reaches_the_members_later() {
    let spec = LOCAL_SPEC.replace("shared_buffers: 64MB", "shared_buffers: 128MB");
    let patch = config_patch(&desired(&spec), &synced()).expect("a patch");
    assert!(patch.reaches_local);
    assert_eq!(
        patch.body["postgresql"]["parameters"],
        json!({"shared_buffers": "128MB"})
    );
    let spec = LOCAL_SPEC.replace("max_connections: '100'", "max_connections: '90'");
    let patch = config_patch(&desired(&spec), &synced()).expect("a patch");
    assert!(!patch.reaches_local);
}

#[test]
fn a_local_parameter_removed_from_the_manifest_leaves_the_dcs() {
    let patch = config_patch(&desired(SPEC), &synced()).expect("a patch");
    assert_eq!(
        patch.body["postgresql"]["parameters"],
        json!({"shared_buffers": null})
    );
    // A DCS-class parameter removed from the manifest stays, as upstream.
    let spec = SPEC.replace("wal_level: logical", "");
    assert_eq!(config_patch(&desired(&spec), &bootstrapped()), None);
}

#[test]
fn table_of_changes() {
    let cases: Vec<(&str, &str, Value, Vec<&str>)> = vec![
        (
            "ttl and loop_wait",
            "  postgresql: {version: '17', parameters: {max_connections: '100', wal_level: logical}}\n  patroni: {ttl: 40, loop_wait: 5}\n",
            json!({"ttl": 40, "loop_wait": 5}),
            vec!["ttl", "loop_wait"],
        ),
        (
            "synchronous mode on",
            "  postgresql: {version: '17', parameters: {max_connections: '100', wal_level: logical}}\n  patroni: {synchronous_mode: true, synchronous_mode_strict: true, synchronous_node_count: 2}\n",
            json!({"synchronous_mode": true, "synchronous_mode_strict": true, "synchronous_node_count": 2}),
            vec!["synchronous_mode", "synchronous_mode_strict", "synchronous_node_count"],
        ),
        (
            "failsafe and maximum lag",
            "  postgresql: {version: '17', parameters: {max_connections: '100', wal_level: logical}}\n  patroni: {failsafe_mode: true, maximum_lag_on_failover: 1024}\n",
            json!({"maximum_lag_on_failover": 1024, "failsafe_mode": true}),
            vec!["maximum_lag_on_failover", "failsafe_mode"],
        ),
        (
            "a restart-only parameter going up",
            "  postgresql: {version: '17', parameters: {max_connections: '200', wal_level: logical}}\n",
            json!({"postgresql": {"parameters": {"max_connections": "200"}},
                   "pgherd": {"restart_order": "replicas_first"}}),
            vec!["postgresql.parameters.max_connections"],
        ),
        (
            "max_connections going down: primary first",
            "  postgresql: {version: '17', parameters: {max_connections: '50', wal_level: logical}}\n",
            json!({"postgresql": {"parameters": {"max_connections": "50"}},
                   "pgherd": {"restart_order": "primary_first"}}),
            vec!["postgresql.parameters.max_connections"],
        ),
        (
            "a new reload-only parameter",
            "  postgresql: {version: '17', parameters: {max_connections: '100', wal_level: logical, work_mem: 8MB}}\n",
            json!({"postgresql": {"parameters": {"work_mem": "8MB"}},
                   "pgherd": {"restart_order": "replicas_first"}}),
            vec!["postgresql.parameters.work_mem"],
        ),
        (
            "a manifest slot",
            "  postgresql: {version: '17', parameters: {max_connections: '100', wal_level: logical}}\n  patroni: {slots: {cdc: {type: logical, database: foo, plugin: pgoutput}}}\n",
            json!({"slots": {"cdc": {"type": "logical", "database": "foo", "plugin": "pgoutput"}},
                   "pgherd": {"managed_slots": ["cdc"]}}),
            vec!["slots.cdc", "pgherd.managed_slots"],
        ),
    ];
    for (name, spec, body, changed) in cases {
        let got = config_patch(&desired(spec), &bootstrapped()).unwrap_or_else(|| panic!("{name}"));
        // Patroni's own keys are never touched.
        assert!(
            got.body.pointer("/postgresql/use_pg_rewind").is_none(),
            "{name}"
        );
        assert!(got.body.pointer("/slots/patroni_only").is_none(), "{name}");
        assert_eq!(got.body, body, "{name}");
        assert_eq!(got.changed, changed, "{name}");
    }
}

#[test]
fn a_removed_manifest_slot_is_removed_and_patronis_own_stay() {
    let mut current = bootstrapped();
    current["slots"]["cdc"] = json!({"type": "logical", "database": "foo", "plugin": "pgoutput"});
    current["pgherd"] = json!({"managed_slots": ["cdc"]});
    let d = desired(SPEC);
    let p = config_patch(&d, &current).unwrap();
    assert_eq!(
        p.body,
        json!({"slots": {"cdc": null}, "pgherd": {"managed_slots": []}})
    );
    // Once removed, nothing more to do.
    current["slots"].as_object_mut().unwrap().remove("cdc");
    current["pgherd"] = json!({"managed_slots": []});
    assert_eq!(config_patch(&d, &current), None);
}

#[test]
fn a_manual_edit_of_synchronous_mode_is_reverted() {
    let mut current = bootstrapped();
    current["synchronous_mode"] = json!("on");
    let p = config_patch(&desired(SPEC), &current).unwrap();
    assert_eq!(p.body, json!({"synchronous_mode": false}));
    // Patroni 4's quorum mode counts as synchronous.
    let spec = format!("{SPEC}  patroni: {{ttl: 30, loop_wait: 10, synchronous_mode: true}}\n")
        .replace("  patroni: {ttl: 30, loop_wait: 10}\n", "");
    current["synchronous_mode"] = json!("quorum");
    assert_eq!(config_patch(&desired(&spec), &current), None);
}

#[test]
fn values_compare_as_settings_not_as_json() {
    let mut current = bootstrapped();
    current["postgresql"]["parameters"]["hot_standby"] = json!(true);
    current["postgresql"]["parameters"]["max_connections"] = json!("100");
    let spec = "  postgresql: {version: '17', parameters: {max_connections: '100', wal_level: Logical, hot_standby: 'on'}}\n  patroni: {ttl: 30, loop_wait: 10}\n";
    assert_eq!(config_patch(&desired(spec), &current), None);
}

#[test]
fn restart_order_table() {
    let ch = |list: &[(&str, Value, &str)]| -> BTreeMap<String, (Option<Value>, String)> {
        list.iter()
            .map(|(k, old, new)| (k.to_string(), (Some(old.clone()), new.to_string())))
            .collect()
    };
    use RestartOrder::*;
    let cases = [
        (ch(&[("max_connections", json!(100), "50")]), PrimaryFirst),
        (ch(&[("max_wal_senders", json!("10"), "5")]), PrimaryFirst),
        (ch(&[("max_connections", json!(100), "200")]), ReplicasFirst),
        // A decrease together with an unrelated change: still primary first.
        (
            ch(&[
                ("max_worker_processes", json!(8), "4"),
                ("wal_level", json!("replica"), "logical"),
            ]),
            PrimaryFirst,
        ),
        // Up and down at once has no safe order; the default applies.
        (
            ch(&[
                ("max_connections", json!(100), "50"),
                ("max_locks_per_transaction", json!(64), "128"),
            ]),
            ReplicasFirst,
        ),
        (
            ch(&[("shared_buffers", json!("1GB"), "128MB")]),
            ReplicasFirst,
        ),
    ];
    for (changes, want) in cases {
        assert_eq!(restart_order(&changes), want, "{changes:?}");
    }
    assert_eq!(
        RestartOrder::recorded(&json!({"pgherd": {"restart_order": "primary_first"}})),
        PrimaryFirst
    );
    assert_eq!(RestartOrder::recorded(&json!({})), ReplicasFirst);
}

#[test]
fn a_parameter_patch_settles_until_patroni_has_applied_it() {
    let t0: Timestamp = "2026-08-01T10:00:00Z".parse().unwrap();
    let until: Timestamp = "2026-08-01T10:00:15Z".parse().unwrap();
    let mut body = json!({"postgresql": {"parameters": {"work_mem": "8MB"}},
        "pgherd": {"restart_order": "replicas_first"}});
    mark_settling(&mut body, until);
    assert_eq!(
        body["pgherd"]["settle_until"],
        json!("2026-08-01T10:00:15Z")
    );
    assert_eq!(body["pgherd"]["restart_order"], json!("replicas_first"));
    assert!(settling(&body, t0));
    assert!(!settling(&body, until));
    // Without parameters there is nothing for Patroni to restart for.
    let mut ttl = json!({"ttl": 20});
    mark_settling(&mut ttl, until);
    assert_eq!(ttl, json!({"ttl": 20}));
    assert!(!settling(&ttl, t0));
}
