//! Patroni 3.x still works under the agent (users upgrade images and Patroni at their own pace).

use std::time::Duration;

use pgherd_tests::{tools, Cluster, ClusterSpec, Etcd};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni3_cluster_bootstraps_and_streams() -> anyhow::Result<()> {
    let etcd = Etcd::start().await?;
    let mut spec = ClusterSpec::new("p3", 2)?;
    spec.patroni = tools::patroni3()?;
    let cluster = Cluster::start(spec, &etcd.host())?;
    let view = cluster.wait_ready(1, Duration::from_secs(120)).await?;
    let version = cluster
        .member(0)
        .patroni()
        .status()
        .await?
        .patroni
        .map(|p| p.version)
        .unwrap_or_default();
    assert!(version.starts_with("3."), "running Patroni {version}");
    assert_eq!(view.members.len(), 2);
    Ok(())
}
