//! Integration harness: real etcd, Garage (S3), PostgreSQL and Patroni on loopback, each on random ports in
//! temp dirs, driven through `pgherd-agent run` with a Spilo-style environment. Every process started here
//! is killed and every directory removed when its guard drops, also when a test panics.

pub mod cluster;
pub mod coordinator;
pub mod deploy_check;
pub mod etcd;
pub mod garage;
pub mod kube;
pub mod podman;
pub mod rolling;
pub mod service;
pub mod system;
pub mod tools;
pub mod upgrade;
pub mod wait;

pub use cluster::{archive_now, sample, Cluster, ClusterSpec, Member};
pub use etcd::Etcd;
pub use garage::{garage_spec, Garage};
