//! `pgherd-coordinator run`, the real binary as a host process, against the Kubernetes API stand-in
//! (docs/kube-standin.md): a restart writes nothing but its Lease, and of two replicas only the Lease holder
//! acts; it hands over on SIGKILL (after the lease duration), on SIGTERM (at once), and stops at once when
//! the Lease is taken from it. Pods never start (there is no kubelet here), so clusters stay
//! `InstancesNotReady`; that is what an in-sync cluster looks like to the coordinator.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use pgherd_tests::coordinator::{
    create_cluster, credentials, in_sync, install_config, is_lease, is_write, lease_holder, poll,
    requests_by, steal_lease, Coordinator,
};
use pgherd_tests::kube::select::Selectors;
use pgherd_tests::kube::{ApiServer, Options};

async fn standin() -> anyhow::Result<(ApiServer, tempfile::TempDir)> {
    let srv = ApiServer::start(Options::default()).await?;
    install_config(&srv, "30m")?;
    let mut dir = tempfile::Builder::new()
        .prefix("pgherd-coordinator-test-")
        .tempdir()?;
    // The coordinators' logs and kubeconfigs, for a failure's post-mortem.
    if std::env::var_os("PGHERD_KEEP").is_some() {
        dir.disable_cleanup(true);
        eprintln!("keeping {}", dir.path().display());
    }
    Ok((srv, dir))
}

/// Waits until `user` has made no request other than for the Lease for two seconds: the reconciles that
/// its own writes triggered (status, StatefulSet watch) have run.
async fn quiet(srv: &ApiServer, user: &str) -> anyhow::Result<()> {
    let count = || {
        requests_by(srv, user)
            .iter()
            .filter(|r| !is_lease(r))
            .count()
    };
    let mut last = (count(), Instant::now());
    poll(
        Duration::from_secs(60),
        &format!("{user} to go quiet"),
        || {
            let now = count();
            if now != last.0 {
                last = (now, Instant::now());
            }
            (last.1.elapsed() >= Duration::from_secs(2)).then_some(())
        },
    )
    .await
}

/// Every object the coordinator could write, with its resourceVersion.
fn versions(srv: &ApiServer) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for (group, plural) in [
        ("acid.zalan.do", "postgresqls"),
        ("apps", "statefulsets"),
        ("", "services"),
        ("", "endpoints"),
        ("", "secrets"),
        ("", "serviceaccounts"),
        ("", "configmaps"),
        ("", "events"),
        ("rbac.authorization.k8s.io", "rolebindings"),
        ("policy", "poddisruptionbudgets"),
    ] {
        let rt = srv.store().resource(group, "v1", plural).unwrap();
        let (items, _, _) = srv
            .store()
            .list(&rt, None, &Selectors::default(), None, None);
        for o in items {
            out.insert(
                format!(
                    "{plural} {}/{}",
                    o["metadata"]["namespace"].as_str().unwrap_or_default(),
                    o["metadata"]["name"].as_str().unwrap_or_default()
                ),
                o["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        }
    }
    out
}

fn writes_except_lease(srv: &ApiServer, user: &str) -> Vec<String> {
    requests_by(srv, user)
        .into_iter()
        .filter(|r| is_write(r) && !is_lease(r))
        .collect()
}

async fn all_in_sync(srv: &ApiServer, names: &[&str]) -> anyhow::Result<()> {
    poll(
        Duration::from_secs(90),
        &format!("{names:?} in sync"),
        || names.iter().all(|n| in_sync(srv, n)).then_some(()),
    )
    .await
}

async fn holder_is(srv: &ApiServer, who: &str, timeout: Duration) -> anyhow::Result<Duration> {
    let t0 = Instant::now();
    poll(timeout, &format!("{who} to hold the lease"), || {
        (lease_holder(srv).as_deref() == Some(who)).then_some(())
    })
    .await?;
    Ok(t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_writes_nothing_but_the_lease() -> anyhow::Result<()> {
    let (srv, dir) = standin().await?;
    let names = ["acid-one", "acid-two", "acid-three"];
    for n in names {
        create_cluster(&srv, n)?;
    }
    let mut first = Coordinator::start(&srv, "coordinator-1", dir.path(), &[])?;
    all_in_sync(&srv, &names).await?;
    quiet(&srv, "coordinator-1").await?;
    let created = writes_except_lease(&srv, "coordinator-1");
    assert!(!created.is_empty(), "the first run created the objects");
    let status = first
        .service
        .stop_with(Signal::SIGTERM, Duration::from_secs(20))?
        .expect("the coordinator stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", first.log());
    assert!(
        first.log().contains("released the leader lease"),
        "{}",
        first.log()
    );
    assert_eq!(lease_holder(&srv), None, "released");

    let before = versions(&srv);
    let rv_before = srv.store().resource_version();
    let secrets_before = credentials(&srv);

    let mut second = Coordinator::start(&srv, "coordinator-2", dir.path(), &[])?;
    holder_is(&srv, "coordinator-2", Duration::from_secs(10)).await?;
    // A full resync: every cluster's StatefulSet was read (it is read after everything the builders take
    // as input, and before the status is compared), then nothing more happened for a while.
    poll(Duration::from_secs(60), "a full resync", || {
        let reqs = requests_by(&srv, "coordinator-2");
        names
            .iter()
            .all(|n| {
                let get = format!("GET /apis/apps/v1/namespaces/default/statefulsets/{n} ");
                reqs.iter().any(|r| r.starts_with(&get))
            })
            .then_some(())
    })
    .await?;
    quiet(&srv, "coordinator-2").await?;

    let writes = writes_except_lease(&srv, "coordinator-2");
    assert!(
        writes.is_empty(),
        "the restarted coordinator wrote:\n{}",
        writes.join("\n")
    );
    assert_eq!(versions(&srv), before, "no object but the Lease changed");
    assert!(
        srv.store().resource_version() > rv_before,
        "the Lease was taken"
    );
    assert_eq!(credentials(&srv), secrets_before, "the passwords are kept");
    let counts = srv.request_counts().user("coordinator-2");
    eprintln!(
        "restart: {} requests by the new coordinator ({} writes, all to its Lease)",
        counts.total(),
        counts.writes()
    );
    second
        .service
        .stop_with(Signal::SIGTERM, Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_act_at_once() -> anyhow::Result<()> {
    let (srv, dir) = standin().await?;
    let mut a = Coordinator::start(&srv, "coordinator-a", dir.path(), &[])?;
    let mut b = Coordinator::start(&srv, "coordinator-b", dir.path(), &[])?;
    let leader = poll(Duration::from_secs(10), "a leader", || lease_holder(&srv)).await?;
    let (leader, follower) = if leader == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };

    create_cluster(&srv, "acid-first")?;
    all_in_sync(&srv, &["acid-first"]).await?;
    quiet(&srv, &leader.name).await?;
    // The follower only ever tried the Lease (it may have lost the race to create it): no watches, no
    // reads of clusters, no writes.
    let other: Vec<String> = requests_by(&srv, &follower.name)
        .into_iter()
        .filter(|r| !is_lease(r))
        .collect();
    assert!(
        other.is_empty(),
        "the follower acted:\n{}",
        other.join("\n")
    );
    let sts_applies = requests_by(&srv, &leader.name)
        .iter()
        .filter(|r| {
            r.starts_with("PATCH /apis/apps/v1/namespaces/default/statefulsets/acid-first?")
        })
        .count();
    assert_eq!(sts_applies, 1, "the StatefulSet was written once");

    // SIGKILL: nothing is released, so the follower waits out the lease (15 s from its last sight of a
    // renewal) and takes it on its next look (every 2 s).
    let killed = Instant::now();
    leader.service.kill_tree();
    holder_is(&srv, &follower.name, Duration::from_secs(30)).await?;
    let takeover = killed.elapsed();
    eprintln!("takeover after SIGKILL of the leader: {takeover:?}");
    assert!(takeover <= Duration::from_secs(20), "{takeover:?}");

    create_cluster(&srv, "acid-second")?;
    all_in_sync(&srv, &["acid-first", "acid-second"]).await?;
    quiet(&srv, &follower.name).await?;
    let new_writes = writes_except_lease(&srv, &follower.name);
    assert!(
        new_writes
            .iter()
            .any(|r| r
                .starts_with("PATCH /apis/apps/v1/namespaces/default/statefulsets/acid-second?")),
        "the new leader reconciled the new cluster:\n{}",
        new_writes.join("\n")
    );
    let rewritten: Vec<&String> = new_writes
        .iter()
        .filter(|r| r.contains("acid-first"))
        .collect();
    assert!(rewritten.is_empty(), "resync rewrote: {rewritten:?}");

    // Writers never interleave: all of the first leader's writes come before the second's.
    let writers: Vec<String> = srv
        .requests()
        .iter()
        .filter(|r| is_write(r) && !is_lease(r))
        .filter_map(|r| r.rsplit_once(" by ").map(|(_, u)| u.to_string()))
        .filter(|u| u.starts_with("coordinator-"))
        .collect();
    let mut runs = writers.clone();
    runs.dedup();
    assert_eq!(
        runs,
        [leader.name.clone(), follower.name.clone()],
        "writers in order"
    );

    // SIGTERM of a leader with a standby: released, and the standby takes it on its next look.
    let mut c = Coordinator::start(&srv, "coordinator-c", dir.path(), &[])?;
    poll(Duration::from_secs(10), "coordinator-c to stand by", || {
        requests_by(&srv, "coordinator-c")
            .iter()
            .any(|r| is_lease(r))
            .then_some(())
    })
    .await?;
    let stopped = Instant::now();
    let status = follower
        .service
        .stop_with(Signal::SIGTERM, Duration::from_secs(20))?
        .expect("the leader stops on SIGTERM");
    assert!(status.success(), "{status:?}\n{}", follower.log());
    assert!(
        follower.log().contains("released the leader lease"),
        "{}",
        follower.log()
    );
    holder_is(&srv, "coordinator-c", Duration::from_secs(10)).await?;
    let handover = stopped.elapsed();
    eprintln!("hand-over after SIGTERM of the leader: {handover:?}");
    assert!(handover < Duration::from_secs(5), "{handover:?}");
    c.service
        .stop_with(Signal::SIGTERM, Duration::from_secs(20))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_leader_whose_lease_is_taken_stops_at_once() -> anyhow::Result<()> {
    let (srv, dir) = standin().await?;
    create_cluster(&srv, "acid-lost")?;
    let mut a = Coordinator::start(&srv, "coordinator-a", dir.path(), &[])?;
    holder_is(&srv, "coordinator-a", Duration::from_secs(10)).await?;
    all_in_sync(&srv, &["acid-lost"]).await?;

    // Another writer takes the Lease: the next renewal (within 5 s) conflicts, the re-read names someone
    // else, and the process exits non-zero instead of acting on.
    let taken = Instant::now();
    steal_lease(&srv, "intruder")?;
    poll(Duration::from_secs(15), "coordinator-a to exit", || {
        (!a.service.is_running()).then_some(())
    })
    .await?;
    eprintln!("exit after the lease was taken: {:?}", taken.elapsed());
    let status = a
        .service
        .stop_with(Signal::SIGTERM, Duration::from_secs(1))?
        .expect("exited");
    assert!(!status.success(), "{status:?}");
    let log = a.log();
    let last = log.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: lost the leader lease default/pgherd-coordinator-leader")
            && last.contains("held by intruder"),
        "{log}"
    );
    assert_eq!(lease_holder(&srv).as_deref(), Some("intruder"));

    // With leader election off it acts at once, without a Lease (single replica, as before).
    let solo = Coordinator::start(
        &srv,
        "coordinator-solo",
        dir.path(),
        &["--no-leader-election"],
    )?;
    create_cluster(&srv, "acid-solo")?;
    all_in_sync(&srv, &["acid-solo"]).await?;
    assert!(requests_by(&srv, &solo.name).iter().all(|r| !is_lease(r)));
    Ok(())
}
