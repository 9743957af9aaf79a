//! pgherd-coordinator: turns `acid.zalan.do/v1` postgresql resources into
//! Kubernetes objects. Pure builders and decisions live in `builders`,
//! `config` and `reconcile::{apply,status,finalizer}` and `rolling`; `kube_api` is the thin
//! shell that talks to the API server, with an in-memory twin in `fake`.

pub mod builders;
pub mod config;
pub mod controller;
pub mod diff;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
#[cfg(any(test, feature = "fake"))]
pub mod fake_patroni;
#[cfg(any(test, feature = "fake"))]
pub mod fake_postgres;
pub mod kube_api;
pub mod leader;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod roles;
pub mod rolling;
pub mod teams;
