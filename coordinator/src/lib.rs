//! pgherd-coordinator: turns `acid.zalan.do/v1` postgresql resources into
//! Kubernetes objects. Pure builders and decisions live in `builders`,
//! `config` and `reconcile::plan`; `kube_api` is the thin shell that talks to
//! the API server, with an in-memory twin in `fake` for tests.

pub mod builders;
pub mod config;
