//! Replica-creation methods Patroni calls (`create_replica_methods`).

pub mod basebackup;
