//! Where logical backups live and what a complete one is. Pure: key names, backup ids, the manifest, and
//! the classification of a bucket listing into complete pgherd backups, incomplete ones and Zalando dumps.
//!
//! Under `{prefix}/{SCOPE}{suffix}/logical_backups/` (Zalando's directory, so the user's existing history stays
//! where it is) Zalando's `dump.sh` wrote `{epoch}.sql.gz` files; pgherd writes one directory per backup:
//!
//! ```text
//! 20261205T031500Z/globals.sql.zst              pg_dumpall --globals-only
//! 20261205T031500Z/databases/foo%2Dbar.dump.zst  pg_dump -Fc (uncompressed) | zstd, one per database
//! 20261205T031500Z/manifest.json                written last: the commit point
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The manifest's name inside a backup directory. A directory without it is an interrupted backup.
pub const MANIFEST: &str = "manifest.json";
pub const GLOBALS: &str = "globals.sql.zst";
/// Manifest format written by this version; readers refuse newer ones instead of misreading them.
pub const FORMAT: u32 = 1;

const ID_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// The backup id for a start time: UTC to the second, so ids sort like times and read as one.
pub fn backup_id(at: DateTime<Utc>) -> String {
    at.format(ID_FORMAT).to_string()
}

/// The start time an id stands for; `None` for anything that is not an id.
pub fn parse_id(id: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(id, ID_FORMAT)
        .ok()
        .filter(|_| id.len() == 16)
        .map(|t| Utc.from_utc_datetime(&t))
}

/// `{prefix}/{scope}{suffix}/logical_backups/` as Zalando's `dump.sh` builds it, without the leading slash
/// an empty prefix would give (S3 would keep it as part of the key).
pub fn base_prefix(bucket_prefix: &str, scope: &str, scope_suffix: &str) -> String {
    let prefix = bucket_prefix.trim_matches('/');
    let cluster = format!("{scope}{}", scope_suffix.trim_end_matches('/'));
    let cluster = cluster.trim_start_matches('/');
    if prefix.is_empty() {
        format!("{cluster}/logical_backups/")
    } else {
        format!("{prefix}/{cluster}/logical_backups/")
    }
}

/// A database name as one key segment: ASCII letters, digits, `_` and `-` stay, every other byte becomes
/// `%XX`. Reversible and free of `/`, `.`, `..` and spaces, whatever the name.
pub fn encode_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Key of one database's dump, relative to the backup directory.
pub fn database_object(name: &str) -> String {
    format!("databases/{}.dump.zst", encode_name(name))
}

/// One stored object: what it holds and how to check it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Object {
    /// Relative to the backup directory.
    pub key: String,
    /// Bytes in S3 (compressed).
    pub stored_bytes: u64,
    /// SHA-256 of the stored bytes, hex: checked before (temp file) or after (stream) a restore uses them.
    pub sha256: String,
    /// Bytes pg_dump or pg_dumpall wrote (uncompressed).
    pub size_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Database {
    pub name: String,
    /// Owner when dumped: a restore under a new name creates the database with it.
    pub owner: String,
    #[serde(flatten)]
    pub object: Object,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// `server_version` of the dumped server, and `pg_dump --version`.
    pub server_version: String,
    pub pg_dump_version: String,
    /// The host the dump was taken from (a replica's pod IP, or PGHOST).
    pub host: String,
    pub compression: String,
    pub globals: Object,
    pub databases: Vec<Database>,
}

impl Manifest {
    pub fn stored_bytes(&self) -> u64 {
        self.globals.stored_bytes
            + self
                .databases
                .iter()
                .map(|d| d.object.stored_bytes)
                .sum::<u64>()
    }

    pub fn size_bytes(&self) -> u64 {
        self.globals.size_bytes
            + self
                .databases
                .iter()
                .map(|d| d.object.size_bytes)
                .sum::<u64>()
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a manifest always serializes")
    }

    /// Parses and checks what a restore relies on: the format, and keys that stay inside the backup.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let m: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if m.format > FORMAT {
            return Err(format!(
                "manifest format {} is newer than this agent understands ({FORMAT}); use a newer pgherd-agent",
                m.format
            ));
        }
        let keys = std::iter::once(&m.globals.key).chain(m.databases.iter().map(|d| &d.object.key));
        if let Some(bad) = keys
            .into_iter()
            .find(|k| k.starts_with('/') || k.split('/').any(|s| s == ".."))
        {
            return Err(format!("object key {bad:?} leaves the backup directory"));
        }
        Ok(m)
    }
}

/// A Zalando `dump.sh` file: `{epoch}.sql.gz`, a plain `pg_dumpall` script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZalandoDump {
    /// Relative to the base prefix.
    pub name: String,
    pub at: DateTime<Utc>,
    pub size: u64,
}

/// `{epoch}.sql.gz` → its time; `None` for any other name.
pub fn parse_zalando(name: &str) -> Option<DateTime<Utc>> {
    let epoch = name.strip_suffix(".sql.gz")?;
    if epoch.is_empty() || !epoch.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Utc.timestamp_opt(epoch.parse().ok()?, 0).single()
}

/// What is under the base prefix, from a listing (keys relative to the base prefix, with sizes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// Ids of directories with a manifest.
    pub complete: Vec<String>,
    /// Ids of directories without one, with every key inside (what deleting them removes).
    pub incomplete: BTreeMap<String, Vec<String>>,
    /// Every key of each complete backup.
    pub complete_keys: BTreeMap<String, Vec<String>>,
    pub zalando: Vec<ZalandoDump>,
}

/// Sorts a listing into its parts. Keys that are neither a backup directory nor a Zalando file (a user's
/// own files) are left out, so nothing pgherd did not write is ever deleted by pgherd.
pub fn classify<'a>(relative: impl IntoIterator<Item = (&'a str, u64)>) -> Listing {
    let mut dirs: BTreeMap<String, (bool, Vec<String>)> = BTreeMap::new();
    let mut zalando = Vec::new();
    for (key, size) in relative {
        if let Some((dir, rest)) = key.split_once('/') {
            if parse_id(dir).is_some() {
                let e = dirs.entry(dir.to_string()).or_default();
                e.0 |= rest == MANIFEST;
                e.1.push(key.to_string());
            }
        } else if let Some(at) = parse_zalando(key) {
            zalando.push(ZalandoDump {
                name: key.to_string(),
                at,
                size,
            });
        }
    }
    let mut listing = Listing {
        zalando,
        ..Default::default()
    };
    for (id, (complete, keys)) in dirs {
        if complete {
            listing.complete.push(id.clone());
            listing.complete_keys.insert(id, keys);
        } else {
            listing.incomplete.insert(id, keys);
        }
    }
    listing.zalando.sort_by_key(|z| std::cmp::Reverse(z.at));
    listing.complete.reverse();
    listing
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let obj = |key: &str| Object {
            key: key.into(),
            stored_bytes: 10,
            sha256: "ab".repeat(32),
            size_bytes: 40,
        };
        Manifest {
            format: FORMAT,
            id: "20261205T031500Z".into(),
            started_at: parse_id("20261205T031500Z").unwrap(),
            finished_at: parse_id("20261205T031502Z").unwrap(),
            server_version: "15.10".into(),
            pg_dump_version: "pg_dump (PostgreSQL) 15.10".into(),
            host: "10.0.0.7".into(),
            compression: "zstd".into(),
            globals: obj(GLOBALS),
            databases: vec![Database {
                name: "foo-bar".into(),
                owner: "app".into(),
                object: obj(&database_object("foo-bar")),
            }],
        }
    }

    #[test]
    fn ids_sort_like_times_and_round_trip() {
        let t = Utc.with_ymd_and_hms(2026, 12, 5, 3, 15, 0).unwrap();
        assert_eq!(backup_id(t), "20261205T031500Z");
        assert_eq!(parse_id("20261205T031500Z"), Some(t));
        let later = backup_id(t + chrono::Duration::seconds(61));
        assert!(later.as_str() > "20261205T031500Z");
        for bad in [
            "",
            "20261205T031500",
            "20261305T031500Z",
            "x0261205T031500Z",
            "1733370000.sql.gz",
        ] {
            assert_eq!(parse_id(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn prefix_as_zalando_builds_it() {
        assert_eq!(
            base_prefix("spilo", "acid-x", "/1f2e"),
            "spilo/acid-x/1f2e/logical_backups/"
        );
        assert_eq!(
            base_prefix("", "acid-x", "/1f2e"),
            "acid-x/1f2e/logical_backups/"
        );
        assert_eq!(
            base_prefix("/a/b/", "acid-x", ""),
            "a/b/acid-x/logical_backups/"
        );
    }

    #[test]
    fn database_names_become_safe_reversible_segments() {
        assert_eq!(database_object("foo-bar"), "databases/foo-bar.dump.zst");
        assert_eq!(encode_name("my db"), "my%20db");
        assert_eq!(encode_name("a\"b'c/.."), "a%22b%27c%2F%2E%2E");
        assert_eq!(encode_name("ü"), "%C3%BC");
        assert_ne!(
            encode_name("a b"),
            encode_name("a%20b"),
            "the escape character is escaped too"
        );
    }

    #[test]
    fn manifest_round_trips_and_is_checked() {
        let m = manifest();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
        assert_eq!(m.stored_bytes(), 20);
        assert_eq!(m.size_bytes(), 80);
        let mut newer = m.clone();
        newer.format = FORMAT + 1;
        assert!(Manifest::from_json(&newer.to_json())
            .unwrap_err()
            .contains("newer"));
        let mut evil = m.clone();
        evil.databases[0].object.key = "../../other/x".into();
        assert!(Manifest::from_json(&evil.to_json())
            .unwrap_err()
            .contains("leaves"));
        assert!(Manifest::from_json(b"{}").is_err());
    }

    #[test]
    fn zalando_names() {
        assert_eq!(
            parse_zalando("1733370000.sql.gz"),
            Utc.timestamp_opt(1733370000, 0).single()
        );
        for bad in [
            ".sql.gz",
            "x1.sql.gz",
            "1733370000.sql",
            "1733370000.sql.gz.tmp",
        ] {
            assert_eq!(parse_zalando(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn listing_is_sorted_into_complete_incomplete_and_zalando() {
        let l = classify([
            ("20261201T000000Z/globals.sql.zst", 1),
            ("20261201T000000Z/manifest.json", 1),
            ("20261203T000000Z/globals.sql.zst", 1),
            ("20261203T000000Z/databases/a.dump.zst", 1),
            ("20261202T000000Z/manifest.json", 1),
            ("1733370000.sql.gz", 7),
            ("1733456400.sql.gz", 8),
            ("notes.txt", 1),
            ("other/manifest.json", 1),
        ]);
        assert_eq!(
            l.complete,
            ["20261202T000000Z", "20261201T000000Z"],
            "newest first"
        );
        assert_eq!(
            l.incomplete["20261203T000000Z"],
            [
                "20261203T000000Z/globals.sql.zst",
                "20261203T000000Z/databases/a.dump.zst"
            ]
        );
        assert_eq!(l.incomplete.len(), 1);
        assert_eq!(l.complete_keys["20261201T000000Z"].len(), 2);
        assert_eq!(
            l.zalando
                .iter()
                .map(|z| z.name.as_str())
                .collect::<Vec<_>>(),
            ["1733456400.sql.gz", "1733370000.sql.gz"]
        );
    }
}
