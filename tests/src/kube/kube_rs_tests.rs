//! kube-rs (the client pgherd-coordinator is built on) against the stand-in, with the kubeconfig it writes;
//! and pgherd-coordinator's own `KubeClientApi`, so far "verified only by compiling".

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};

use super::{ApiServer, Options};

async fn start() -> (ApiServer, Client) {
    // This crate links rustls with both ring (kube) and aws-lc-rs (aws-sdk-s3), so kube-rs cannot pick a
    // provider by itself; the coordinator binary links only ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let srv = ApiServer::start(Options {
        bookmark_every: Duration::from_millis(300),
        ..Options::default()
    })
    .await
    .unwrap();
    let kc = Kubeconfig::read_from(srv.kubeconfig()).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    (srv, Client::try_from(cfg).unwrap())
}

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn code(e: &kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other:?}"),
    }
}

fn names(list: &[ConfigMap]) -> Vec<String> {
    list.iter()
        .map(|c| c.metadata.name.clone().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crud_selectors_and_optimistic_concurrency() {
    let (_srv, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    api.create(&pp, &cm("a", "x")).await.unwrap();
    api.create(&pp, &cm("b", "y")).await.unwrap();
    assert_eq!(
        code(&api.create(&pp, &cm("a", "x")).await.unwrap_err()),
        409
    );
    assert_eq!(api.get("a").await.unwrap().data.unwrap()["k"], "v");
    assert_eq!(code(&api.get("zz").await.unwrap_err()), 404);

    let l = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(&api.list(&l("app=x")).await.unwrap().items), ["a"]);
    assert_eq!(
        names(&api.list(&l("app in (x,y)")).await.unwrap().items),
        ["a", "b"]
    );
    assert_eq!(names(&api.list(&l("app!=x")).await.unwrap().items), ["b"]);
    let f = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(&api.list(&f).await.unwrap().items), ["b"]);
    let paged = api.list(&ListParams::default().limit(1)).await.unwrap();
    assert_eq!(paged.items.len(), 1);
    let rest = api
        .list(
            &ListParams::default()
                .limit(1)
                .continue_token(paged.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(names(&rest.items), ["b"]);

    let extra = api.create(&pp, &cm("c", "z")).await.unwrap();
    let gone = api
        .delete_collection(&DeleteParams::default(), &l("app=z"))
        .await
        .unwrap();
    assert_eq!(gone.left().map(|l| l.items.len()), Some(1));
    assert_eq!(
        code(
            &api.get(extra.metadata.name.as_deref().unwrap())
                .await
                .unwrap_err()
        ),
        404
    );

    // replace with the current resourceVersion works; with the old one it is a 409 Conflict.
    let v1 = api.get("a").await.unwrap();
    let mut v2 = v1.clone();
    v2.data = Some(BTreeMap::from([("k".into(), "w".into())]));
    let stored = api.replace("a", &pp, &v2).await.unwrap();
    assert_ne!(
        stored.metadata.resource_version,
        v1.metadata.resource_version
    );
    let err = api.replace("a", &pp, &v1).await.unwrap_err();
    assert_eq!(code(&err), 409);
    assert!(
        err.to_string().contains("the object has been modified"),
        "{err}"
    );
    // The same through a merge patch carrying a resourceVersion (Patroni's leader lock).
    let stale =
        json!({"metadata": {"resourceVersion": v1.metadata.resource_version}, "data": {"k": "z"}});
    let err = api
        .patch("a", &PatchParams::default(), &Patch::Merge(&stale))
        .await
        .unwrap_err();
    assert_eq!(code(&err), 409);
    // A Lease too, and a no-op write keeps the resourceVersion.
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(
        json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}}),
    )
    .unwrap();
    let l1 = leases.create(&pp, &lease).await.unwrap();
    let same = leases.replace("leader", &pp, &l1).await.unwrap();
    assert_eq!(same.metadata.resource_version, l1.metadata.resource_version);
    let mut l2 = l1.clone();
    l2.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases.replace("leader", &pp, &l2).await.unwrap();
    assert_eq!(
        code(&leases.replace("leader", &pp, &l2).await.unwrap_err()),
        409
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_bookmarks_and_gone() {
    let (srv, client) = start().await;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    api.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();

    // kube-runtime's watcher, with classic lists and with streaming lists (sendInitialEvents).
    for cfg in [
        watcher::Config::default().labels("app=x"),
        watcher::Config::default().labels("app=x").streaming_lists(),
    ] {
        let mut events = watcher(api.clone(), cfg).boxed();
        let mut seen = Vec::new();
        while !seen.iter().any(|s| s == "InitDone") {
            let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            seen.push(match ev {
                watcher::Event::Init => "Init".to_string(),
                watcher::Event::InitApply(o) => format!("InitApply {}", o.metadata.name.unwrap()),
                watcher::Event::InitDone => "InitDone".into(),
                other => format!("{other:?}"),
            });
        }
        assert_eq!(seen, ["Init", "InitApply a", "InitDone"]);
        let patch = json!({"data": {"k": format!("{:?}", std::time::Instant::now())}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        api.create(&PostParams::default(), &cm("other", "y"))
            .await
            .ok();
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            matches!(ev, watcher::Event::Apply(ref o) if o.metadata.name.as_deref() == Some("a")),
            "{ev:?}"
        );
        // The label stops matching: the watch sees a deletion.
        let patch = json!({"metadata": {"labels": {"app": "gone"}}});
        api.patch("a", &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .unwrap();
        let ev = tokio::time::timeout(Duration::from_secs(10), events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(ev, watcher::Event::Delete(_)), "{ev:?}");
        api.patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(&json!({"metadata": {"labels": {"app": "x"}}})),
        )
        .await
        .unwrap();
    }

    // A raw watch from a version gets bookmarks; one from before a compaction gets 410 Gone.
    let rv = api
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let ev = tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(ev, WatchEvent::Bookmark(_)), "{ev:?}");
    // One more write, then compaction: versions before it are gone.
    api.create(&PostParams::default(), &cm("later", "z"))
        .await
        .unwrap();
    srv.store().compact();
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(5), stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap()
    {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

fn pg_api(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("acid.zalan.do", "v1", "postgresql");
    Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "postgresqls"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_resources_status_generation_finalizers_and_gc() {
    let (_srv, client) = start().await;
    let pgs = pg_api(&client);
    let manifest = std::fs::read_to_string(
        crate::tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )
    .unwrap();
    let obj: Value = serde_yaml_ng::from_str(&manifest).unwrap();
    let ssa = PatchParams::apply("test").force();
    let pg = pgs
        .patch("acid-minimal-cluster", &ssa, &Patch::Apply(&obj))
        .await
        .unwrap();
    assert_eq!(pg.metadata.generation, Some(1));
    // Status through /status: no generation bump; status sent to the main resource is ignored.
    let status = json!({"status": {"PostgresClusterStatus": "Running"}});
    let pg = pgs
        .patch_status(
            "acid-minimal-cluster",
            &PatchParams::default(),
            &Patch::Merge(&status),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            pg.data["status"]["PostgresClusterStatus"].as_str(),
            pg.metadata.generation
        ),
        (Some("Running"), Some(1))
    );
    let bogus = json!({"status": {"PostgresClusterStatus": "Bogus"}});
    let pg = pgs
        .patch(
            "acid-minimal-cluster",
            &PatchParams::default(),
            &Patch::Merge(&bogus),
        )
        .await
        .unwrap();
    assert_eq!(pg.data["status"]["PostgresClusterStatus"], "Running");
    let spec = json!({"spec": {"numberOfInstances": 3}});
    let pg = pgs
        .patch(
            "acid-minimal-cluster",
            &PatchParams::default(),
            &Patch::Merge(&spec),
        )
        .await
        .unwrap();
    assert_eq!(pg.metadata.generation, Some(2));
    // Strategic merge patch is refused for custom resources, as upstream.
    let err = pgs
        .patch(
            "acid-minimal-cluster",
            &PatchParams::default(),
            &Patch::Strategic(&spec),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 415);

    // Finalizers hold a deleted object, with its deletionTimestamp, until they are removed.
    let fin = json!({"metadata": {"finalizers": ["postgres-operator.acid.zalan.do"]}});
    pgs.patch(
        "acid-minimal-cluster",
        &PatchParams::default(),
        &Patch::Merge(&fin),
    )
    .await
    .unwrap();
    pgs.delete("acid-minimal-cluster", &DeleteParams::default())
        .await
        .unwrap();
    let held = pgs.get("acid-minimal-cluster").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let more = json!({"metadata": {"finalizers": ["postgres-operator.acid.zalan.do", "another"]}});
    let err = pgs
        .patch(
            "acid-minimal-cluster",
            &PatchParams::default(),
            &Patch::Merge(&more),
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), 422);
    let none = json!({"metadata": {"finalizers": null}});
    pgs.patch(
        "acid-minimal-cluster",
        &PatchParams::default(),
        &Patch::Merge(&none),
    )
    .await
    .unwrap();
    assert_eq!(
        code(&pgs.get("acid-minimal-cluster").await.unwrap_err()),
        404
    );

    // Owner references: background deletion collects dependents, orphan deletion keeps them.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for (owner, policy) in [
        ("owner-bg", DeleteParams::background()),
        ("owner-orphan", DeleteParams::orphan()),
    ] {
        let o = cms
            .create(&PostParams::default(), &cm(owner, "o"))
            .await
            .unwrap();
        let mut dep = cm(&format!("{owner}-dep"), "d");
        dep.metadata.owner_references = Some(vec![serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": o.metadata.uid.unwrap()}))
        .unwrap()]);
        cms.create(&PostParams::default(), &dep).await.unwrap();
        cms.delete(owner, &policy).await.unwrap();
    }
    assert_eq!(code(&cms.get("owner-bg-dep").await.unwrap_err()), 404);
    let kept = cms.get("owner-orphan-dep").await.unwrap();
    assert!(kept
        .metadata
        .owner_references
        .unwrap_or_default()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgherd_coordinator_kube_client_api() {
    use pgherd_coordinator::kube_api::client::KubeClientApi;
    use pgherd_coordinator::kube_api::{
        Created, Event, EventType, Kind, KubeApi, ObjectKey, Propagation,
    };
    use pgherd_shared::crd::{Postgresql, PostgresqlStatus};

    let (_srv, client) = start().await;
    let api = KubeClientApi::new(client.clone(), Some("test".into()));
    let key = |kind, name: &str| ObjectKey {
        kind,
        namespace: "default".into(),
        name: name.into(),
    };

    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "acid-minimal-cluster", "namespace": "default", "labels": {"cluster-name": "acid-minimal-cluster"}},
        "spec": {"type": "ClusterIP", "ports": [{"name": "postgresql", "port": 5432, "targetPort": 5432}]}});
    let k = key(Kind::Service, "acid-minimal-cluster");
    api.apply(&k, &svc).await.unwrap();
    let live = api.get(&k).await.unwrap().unwrap();
    assert!(live["spec"]["clusterIP"]
        .as_str()
        .unwrap()
        .starts_with("10.96."));
    let rv = live["metadata"]["resourceVersion"].clone();
    api.apply(&k, &svc).await.unwrap();
    assert_eq!(
        api.get(&k).await.unwrap().unwrap()["metadata"]["resourceVersion"],
        rv,
        "re-apply is a no-op"
    );
    let labels = BTreeMap::from([(
        "cluster-name".to_string(),
        "acid-minimal-cluster".to_string(),
    )]);
    let listed = api.list(Kind::Service, "default", &labels).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(ObjectKey::of(&listed[0]), Some(k.clone()));

    let secret = json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "postgres.acid-minimal-cluster.credentials.postgresql.acid.zalan.do", "namespace": "default"},
        "stringData": {"username": "postgres", "password": "pw"}});
    let sk = ObjectKey::of(&secret).unwrap();
    assert_eq!(api.create(&sk, &secret).await.unwrap(), Created::Created);
    assert_eq!(
        api.create(&sk, &secret).await.unwrap(),
        Created::AlreadyExisted
    );
    assert_eq!(
        api.get(&sk).await.unwrap().unwrap()["data"]["password"],
        "cHc="
    );
    api.delete(&sk, Propagation::Orphan).await.unwrap();
    api.delete(&sk, Propagation::Background).await.unwrap();

    let manifest = std::fs::read_to_string(
        crate::tools::repo_root()
            .join("coordinator/tests/fixtures/zalando/minimal-postgres-manifest.yaml"),
    )
    .unwrap();
    let pg: Postgresql = serde_yaml_ng::from_str(&manifest).unwrap();
    let pgs: Api<Postgresql> = Api::namespaced(client.clone(), "default");
    let pg = pgs.create(&PostParams::default(), &pg).await.unwrap();
    api.set_finalizers(&pg, &["postgres-operator.acid.zalan.do".into()])
        .await
        .unwrap();
    // The finalizer patch is a compare-and-swap on the resourceVersion: the stale object fails.
    assert!(api.set_finalizers(&pg, &[]).await.is_err());
    let pg = pgs.get("acid-minimal-cluster").await.unwrap();
    let status = PostgresqlStatus {
        cluster_status: "Running".into(),
        observed_generation: Some(1),
        conditions: vec![],
        last_logical_backup: None,
    };
    api.patch_status(&pg, &status).await.unwrap();
    let raw = pg_api(&client).get("acid-minimal-cluster").await.unwrap();
    assert_eq!(raw.data["status"]["PostgresClusterStatus"], "Running");
    assert_eq!(
        raw.metadata.finalizers.unwrap(),
        ["postgres-operator.acid.zalan.do"]
    );

    let ev = Event {
        type_: EventType::Normal,
        reason: "Create".into(),
        note: "created Service default/acid-minimal-cluster".into(),
    };
    api.publish(&pg, &ev).await.unwrap();
    let core: Api<CoreEvent> = Api::namespaced(client.clone(), "default");
    let events = core.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(events.len(), 1);
    assert_eq!(
        events[0].message.as_deref(),
        Some("created Service default/acid-minimal-cluster")
    );
    assert_eq!(
        events[0].involved_object.name.as_deref(),
        Some("acid-minimal-cluster")
    );
}
