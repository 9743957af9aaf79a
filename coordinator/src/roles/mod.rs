//! Roles, databases, schemas and extensions inside the running Postgres (issue 13). What should exist is
//! computed purely from the manifest and the configuration (`desired`, `prepared`) into `model` values;
//! `catalog` reads what Postgres has (trait `Postgres`, with `server` the real one); `diff` turns the
//! difference into statements built by `sql`, with passwords hashed client-side by `password`. All but
//! `server` are pure; the duty that runs them is `reconcile::roles`.

pub mod catalog;
pub mod desired;
pub mod diff;
pub mod infrastructure;
pub mod model;
pub mod password;
pub mod prepared;
pub mod rotation;
pub mod server;
pub mod settings;
pub mod sql;
