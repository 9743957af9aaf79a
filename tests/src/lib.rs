//! Integration harness: real etcd, Garage, PostgreSQL and Patroni on loopback, torn down on drop.
