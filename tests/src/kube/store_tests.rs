//! The store's rules, without HTTP.

use std::sync::Arc;

use serde_json::{json, Value};

use super::resources::ResourceType;
use super::select::Selectors;
use super::watch::{EventType, WatchEvent};
use super::{DeleteOptions, PatchType, Propagation, Store, WriteOptions};

fn store() -> Arc<Store> {
    let s = Store::new(100);
    let ns = s.resource("", "v1", "namespaces").unwrap();
    for n in ["default", "other"] {
        s.create(&ns, "", json!({"metadata": {"name": n}}), &w("setup"))
            .unwrap();
    }
    s
}

fn w(manager: &str) -> WriteOptions {
    WriteOptions {
        manager: manager.into(),
        ..Default::default()
    }
}

fn rt(s: &Store, g: &str, plural: &str) -> Arc<ResourceType> {
    s.resource(g, "v1", plural).unwrap()
}

fn rv(o: &Value) -> String {
    o["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn generation_no_op_writes_and_status_subresource() {
    let s = store();
    let sts = rt(&s, "apps", "statefulsets");
    let obj = json!({"metadata": {"name": "a"}, "spec": {"replicas": 1, "serviceName": "a"}, "status": {"replicas": 9}});
    let o = s.create(&sts, "default", obj, &w("m")).unwrap();
    assert_eq!(o["metadata"]["generation"], 1);
    assert!(o.get("status").is_none(), "status is reset on create");
    assert_eq!(
        o["spec"]["podManagementPolicy"], "OrderedReady",
        "defaulted"
    );
    // The same object again: nothing written.
    let (same, _) = s
        .update(&sts, "default", "a", o.clone(), false, &w("m"))
        .unwrap();
    assert_eq!(rv(&same), rv(&o));
    // A label: new resourceVersion, same generation.
    let (l, _) = s
        .patch(
            &sts,
            "default",
            "a",
            PatchType::Merge,
            &json!({"metadata": {"labels": {"x": "y"}}}),
            false,
            &w("m"),
        )
        .unwrap();
    assert_ne!(rv(&l), rv(&o));
    assert_eq!(l["metadata"]["generation"], 1);
    // Status through /status; status through the main resource is ignored.
    let (st, _) = s
        .patch(
            &sts,
            "default",
            "a",
            PatchType::Merge,
            &json!({"status": {"replicas": 1}}),
            true,
            &w("ctl"),
        )
        .unwrap();
    assert_eq!(
        (
            st["status"]["replicas"].clone(),
            st["metadata"]["generation"].clone()
        ),
        (json!(1), json!(1))
    );
    let mut main = st.clone();
    main["status"]["replicas"] = json!(7);
    main["spec"]["replicas"] = json!(3);
    let (m, _) = s
        .update(&sts, "default", "a", main, false, &w("m"))
        .unwrap();
    assert_eq!(
        (
            m["status"]["replicas"].clone(),
            m["metadata"]["generation"].clone()
        ),
        (json!(1), json!(2))
    );
    // A stale resourceVersion is a conflict, on PUT and on patches carrying one.
    let err = s
        .update(&sts, "default", "a", st.clone(), false, &w("m"))
        .unwrap_err();
    assert_eq!(err.code, 409);
    let p = json!({"metadata": {"resourceVersion": rv(&st)}, "spec": {"replicas": 5}});
    assert_eq!(
        s.patch(
            &sts,
            "default",
            "a",
            PatchType::Strategic,
            &p,
            false,
            &w("m")
        )
        .unwrap_err()
        .code,
        409
    );
    // managedFields: the status writer owns .status under the status subresource.
    let mf = m["metadata"]["managedFields"].as_array().unwrap();
    assert!(
        mf.iter()
            .any(|e| e["manager"] == "ctl" && e["subresource"] == "status"),
        "{mf:?}"
    );
}

#[test]
fn create_rules() {
    let s = store();
    let cm = rt(&s, "", "configmaps");
    let err = s
        .create(&cm, "nope", json!({"metadata": {"name": "a"}}), &w("m"))
        .unwrap_err();
    assert_eq!(
        (err.code, err.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    assert_eq!(
        s.create(
            &cm,
            "default",
            json!({"metadata": {"name": "Bad_Name"}}),
            &w("m")
        )
        .unwrap_err()
        .code,
        422
    );
    let g = s
        .create(
            &cm,
            "default",
            json!({"metadata": {"generateName": "gen-"}}),
            &w("m"),
        )
        .unwrap();
    assert!(
        g["metadata"]["name"].as_str().unwrap().starts_with("gen-")
            && g["metadata"]["name"].as_str().unwrap().len() == 9
    );
    let wrong = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "a"}});
    assert_eq!(
        s.create(&cm, "default", wrong, &w("m")).unwrap_err().code,
        400
    );
    let dry = WriteOptions {
        dry_run: true,
        ..w("m")
    };
    s.create(&cm, "default", json!({"metadata": {"name": "dry"}}), &dry)
        .unwrap();
    assert_eq!(s.get(&cm, "default", "dry").unwrap_err().code, 404);
    // Endpoints (and Leases, Events) are created by a PUT; ConfigMaps are not.
    let ep = rt(&s, "", "endpoints");
    let (_, created) = s
        .update(
            &ep,
            "default",
            "x",
            json!({"metadata": {"name": "x"}}),
            false,
            &w("m"),
        )
        .unwrap();
    assert!(created);
    assert_eq!(
        s.update(
            &cm,
            "default",
            "x",
            json!({"metadata": {"name": "x"}}),
            false,
            &w("m")
        )
        .unwrap_err()
        .code,
        404
    );
}

#[test]
fn server_side_apply_creates_and_conflicts_with_updates() {
    let s = store();
    let cm = rt(&s, "", "configmaps");
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
    let (o, created) = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            &cfg,
            false,
            &w("applier"),
        )
        .unwrap();
    assert!(created && o["data"]["a"] == "1");
    let (_, _) = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Merge,
            &json!({"data": {"a": "9"}}),
            false,
            &w("editor"),
        )
        .unwrap();
    let err = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            &cfg,
            false,
            &w("applier"),
        )
        .unwrap_err();
    assert_eq!(err.code, 409);
    assert!(
        err.message.contains("conflict with \"editor\"") && err.message.contains(".data.a"),
        "{}",
        err.message
    );
    let forced = WriteOptions {
        force: true,
        ..w("applier")
    };
    let mut fewer = cfg.clone();
    fewer["data"].as_object_mut().unwrap().remove("b");
    let (o, _) = s
        .patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            &fewer,
            false,
            &forced,
        )
        .unwrap();
    assert_eq!(
        o["data"],
        json!({"a": "1"}),
        "forced back, and b (no longer applied) removed"
    );
    let no_manager = WriteOptions::default();
    assert_eq!(
        s.patch(
            &cm,
            "default",
            "c",
            PatchType::Apply,
            &cfg,
            false,
            &no_manager
        )
        .unwrap_err()
        .code,
        400
    );
}

#[tokio::test]
async fn deletion_finalizers_gc_and_namespaces() {
    let s = store();
    let cm = rt(&s, "", "configmaps");
    let owner = s
        .create(
            &cm,
            "other",
            json!({"metadata": {"name": "owner"}}),
            &w("m"),
        )
        .unwrap();
    let uid = owner["metadata"]["uid"].clone();
    let dep = json!({"metadata": {"name": "dep", "finalizers": ["x/y"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid}]}});
    s.create(&cm, "other", dep, &w("m")).unwrap();
    let mut watch = s.watch(
        &cm,
        Some("other"),
        Selectors::default(),
        Some(s.resource_version()),
        false,
        None,
    );
    // Foreground: the dependent is deleted first; it has a finalizer, so it only gets a deletionTimestamp.
    let opts = DeleteOptions {
        propagation: Propagation::Foreground,
        ..Default::default()
    };
    let (_, gone) = s.delete(&cm, "other", "owner", &opts).unwrap();
    assert!(gone);
    let held = s.get(&cm, "other", "dep").unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());
    // Deleting the namespace: Terminating until its last object's finalizer goes.
    let ns = rt(&s, "", "namespaces");
    let (n, gone) = s
        .delete(&ns, "", "other", &DeleteOptions::default())
        .unwrap();
    assert!(!gone && n["status"]["phase"] == "Terminating");
    assert_eq!(
        s.create(&cm, "other", json!({"metadata": {"name": "new"}}), &w("m"))
            .unwrap_err()
            .code,
        403
    );
    s.patch(
        &cm,
        "other",
        "dep",
        PatchType::Merge,
        &json!({"metadata": {"finalizers": null}}),
        false,
        &w("m"),
    )
    .unwrap();
    assert_eq!(s.get(&cm, "other", "dep").unwrap_err().code, 404);
    assert_eq!(s.get(&ns, "", "other").unwrap_err().code, 404);
    let mut types = Vec::new();
    while let Ok(Some(WatchEvent::Object(t, o))) =
        tokio::time::timeout(std::time::Duration::from_millis(50), watch.next()).await
    {
        types.push((t, o["metadata"]["name"].as_str().unwrap().to_string()));
    }
    assert_eq!(
        types,
        [
            (EventType::Modified, "dep".to_string()),
            (EventType::Deleted, "owner".into()),
            (EventType::Modified, "dep".into()),
            (EventType::Deleted, "dep".into()),
        ]
    );
}

#[test]
fn graceful_pod_deletion_waits_for_the_kubelet() {
    let s = store();
    s.set_graceful_pod_deletion(true);
    let pods = rt(&s, "", "pods");
    let pod = json!({"metadata": {"name": "p"}, "spec": {"terminationGracePeriodSeconds": 10, "containers": [{"name": "c", "image": "i"}]}});
    s.create(&pods, "default", pod, &w("m")).unwrap();
    let (p, gone) = s
        .delete(&pods, "default", "p", &DeleteOptions::default())
        .unwrap();
    assert!(!gone && p["metadata"]["deletionGracePeriodSeconds"] == 10);
    let zero = DeleteOptions {
        grace_period: Some(0),
        ..Default::default()
    };
    let (_, gone) = s.delete(&pods, "default", "p", &zero).unwrap();
    assert!(gone);
}

#[test]
fn crds_through_the_api_and_events_in_two_apis() {
    let s = store();
    let crds = rt(&s, "apiextensions.k8s.io", "customresourcedefinitions");
    let crd = json!({"metadata": {"name": "widgets.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
        "names": {"kind": "Widget", "plural": "widgets"},
        "versions": [{"name": "v1", "served": true, "storage": true, "subresources": {"status": {}}}]}});
    let c = s.create(&crds, "", crd, &w("m")).unwrap();
    assert_eq!(c["status"]["conditions"][1]["type"], "Established");
    let widgets = s.resource("example.com", "v1", "widgets").unwrap();
    assert!(widgets.status);
    s.create(
        &widgets,
        "default",
        json!({"metadata": {"name": "w"}, "spec": {"size": 1}}),
        &w("m"),
    )
    .unwrap();
    s.delete(&crds, "", "widgets.example.com", &DeleteOptions::default())
        .unwrap();
    assert!(s.resource("example.com", "v1", "widgets").is_none());
    assert!(s
        .list(&widgets, None, &Selectors::default(), None, None)
        .0
        .is_empty());

    let new = s.resource("events.k8s.io", "v1", "events").unwrap();
    let ev = json!({"metadata": {"name": "e"}, "note": "hello", "reason": "R", "type": "Normal",
                    "regarding": {"kind": "Pod", "name": "p"}, "eventTime": "2026-01-01T00:00:00.000000Z",
                    "reportingController": "c", "reportingInstance": "i", "action": "A"});
    let created = s.create(&new, "default", ev, &w("m")).unwrap();
    assert_eq!(
        (created["apiVersion"].as_str(), created["note"].as_str()),
        (Some("events.k8s.io/v1"), Some("hello"))
    );
    let core = s.get(&rt(&s, "", "events"), "default", "e").unwrap();
    assert_eq!(
        (core["apiVersion"].as_str(), core["message"].as_str()),
        (Some("v1"), Some("hello"))
    );
    let (p, _) = s
        .patch(
            &new,
            "default",
            "e",
            PatchType::Merge,
            &json!({"series": {"count": 2}}),
            false,
            &w("m"),
        )
        .unwrap();
    assert_eq!(p["series"]["count"], 2);
    assert_eq!(
        s.get(&rt(&s, "", "events"), "default", "e").unwrap()["series"]["count"],
        2
    );
}
