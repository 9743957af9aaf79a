//! pgherd's backup engine: WAL archiving, base backups, retention, restore and clone on S3, plus the
//! WAL-G/WAL-E compatibility mode for clusters that keep Spilo's tools.
//!
//! Layout (one prefix per cluster, Spilo's `spilo/<prefix><scope><suffix>/wal/<major>`, with pgherd's
//! objects under `pgherd/` so WAL-G's `basebackups_005`/`wal_005` can live beside them):
//! `<prefix>/pgherd/wal/<WAL file>` and `<prefix>/pgherd/basebackups/<name>/{data.tar.<codec>,manifest.json}`.

pub mod bootstrap;
pub mod catalog;
pub mod cli;
pub mod codec;
pub mod engine;
pub mod push;
pub mod restore;
pub mod retention;
pub mod settings;
pub mod socket;
pub mod store;
pub mod wal;
