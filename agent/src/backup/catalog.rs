//! The backup catalog: what a complete backup is, how it is named and found, and which one a restore uses.
//!
//! A base backup is complete when its manifest exists. The manifest is written last, after the data object
//! is fully uploaded, so a backup interrupted at any point (agent killed, S3 down) is never listed, never
//! chosen for a restore and never counted by retention.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};

use super::store::{self, ObjectStore};

/// A PostgreSQL WAL position (`X/Y`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl FromStr for Lsn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (hi, lo) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an LSN (expected X/Y in hex)"))?;
        let p = |x: &str| {
            u64::from_str_radix(x, 16)
                .map_err(|_| format!("{s:?} is not an LSN (expected X/Y in hex)"))
        };
        let (hi, lo) = (p(hi)?, p(lo)?);
        if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
            return Err(format!("{s:?} is out of range for an LSN"));
        }
        Ok(Lsn(hi << 32 | lo))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl Serialize for Lsn {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Lsn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// WAL file name of the segment holding `lsn` on `timeline`.
pub fn wal_file_name(timeline: u32, lsn: Lsn, segment_size: u64) -> String {
    let segno = lsn.0 / segment_size;
    let per_id = 0x1_0000_0000u64 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Everything known about a complete backup. Stored as `manifest.json` next to the data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub name: String,
    /// Major version (`15`), and the full number (`150018`).
    pub pg_version: String,
    pub server_version_num: u32,
    pub system_identifier: String,
    pub timeline: u32,
    pub start_lsn: Lsn,
    pub end_lsn: Lsn,
    pub start_wal: String,
    pub wal_segment_size: u64,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    /// First transaction id not yet assigned when the backup started: every xid below it either committed
    /// or aborted before the backup's consistency point, so a restore to such an xid cannot use this backup.
    pub next_xid: u64,
    /// Key of the data object, relative to the backup's directory.
    pub data: String,
    pub codec: String,
    /// Uncompressed tar size and SHA-256; stored (compressed) size.
    pub size_bytes: u64,
    pub sha256: String,
    pub stored_bytes: u64,
    /// Member that took it.
    pub member: String,
}

pub const MANIFEST: &str = "manifest.json";

/// Name of a backup started at `at` (sortable, unique to the millisecond).
pub fn backup_name(at: DateTime<Utc>) -> String {
    format!("base_{}", at.format("%Y%m%dT%H%M%S%3fZ"))
}

/// Lists complete backups under `store`'s prefix, oldest first.
pub async fn list(store: &impl ObjectStore) -> Result<Vec<Manifest>, store::Error> {
    let prefix = store.settings().backups_prefix();
    let keys = store.list(&prefix).await?;
    let mut out = Vec::new();
    for l in keys
        .iter()
        .filter(|l| l.key.ends_with(&format!("/{MANIFEST}")))
    {
        let Some((_, mut body)) = store.get(&l.key).await? else {
            continue;
        };
        let mut text = Vec::new();
        if tokio::io::AsyncReadExt::read_to_end(&mut body, &mut text)
            .await
            .is_err()
        {
            tracing::warn!(key = %l.key, "unreadable manifest skipped");
            continue;
        }
        match serde_json::from_slice::<Manifest>(&text) {
            Ok(m) => out.push(m),
            Err(e) => tracing::warn!(key = %l.key, "invalid manifest skipped: {e}"),
        }
    }
    out.sort_by(|a, b| {
        a.finished_at
            .cmp(&b.finished_at)
            .then_with(|| a.name.cmp(&b.name))
    });
    Ok(out)
}

/// What a restore should reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Latest,
    Time(DateTime<Utc>),
    Lsn(Lsn),
    Xid(u64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Latest => write!(f, "the latest state"),
            Target::Time(t) => write!(f, "time {}", t.to_rfc3339()),
            Target::Lsn(l) => write!(f, "LSN {l}"),
            Target::Xid(x) => write!(f, "transaction {x}"),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChooseError {
    #[error("no complete backup found under {location}")]
    Empty { location: String },
    #[error(
        "no backup under {location} can reach {target}: the oldest backup, {oldest}, finished at {oldest_finished} \
         (LSN {oldest_end}, next xid {oldest_xid})"
    )]
    TooEarly {
        location: String,
        target: String,
        oldest: String,
        oldest_finished: String,
        oldest_end: Lsn,
        oldest_xid: u64,
    },
}

/// The newest backup from which `target` is reachable by replaying WAL forward: one that became consistent
/// (finished, reached `end_lsn`) before the target. Pure.
pub fn choose<'a>(
    backups: &'a [Manifest],
    target: &Target,
    location: &str,
) -> Result<&'a Manifest, ChooseError> {
    let usable = |m: &&Manifest| match target {
        Target::Latest => true,
        Target::Time(t) => m.finished_at < *t,
        Target::Lsn(l) => m.end_lsn <= *l,
        Target::Xid(x) => m.next_xid <= *x,
    };
    let newest_first = backups.iter().rev();
    if let Some(m) = newest_first.clone().find(usable) {
        return Ok(m);
    }
    let oldest = backups.first().ok_or_else(|| ChooseError::Empty {
        location: location.into(),
    })?;
    Err(ChooseError::TooEarly {
        location: location.into(),
        target: target.to_string(),
        oldest: oldest.name.clone(),
        oldest_finished: oldest.finished_at.to_rfc3339(),
        oldest_end: oldest.end_lsn,
        oldest_xid: oldest.next_xid,
    })
}

/// Parses a recovery target time the way users write it for Postgres: it must carry a time zone (a time
/// without one would be read in the server's zone, which is a guess).
pub fn parse_time(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    let iso = s.replacen(' ', "T", 1);
    if let Ok(t) = DateTime::parse_from_rfc3339(&iso) {
        return Ok(t.with_timezone(&Utc));
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f%#z",
        "%Y-%m-%dT%H:%M:%S%#z",
        "%Y-%m-%dT%H:%M%#z",
    ] {
        if let Ok(t) = DateTime::parse_from_str(&iso, fmt) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Some(naive) = iso.strip_suffix("UTC").or_else(|| iso.strip_suffix('Z')) {
        let naive = naive.trim_end();
        for fmt in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
            if let Ok(t) = NaiveDateTime::parse_from_str(naive, fmt) {
                return Ok(t.and_utc());
            }
        }
    }
    if NaiveDateTime::parse_from_str(&iso, "%Y-%m-%dT%H:%M:%S%.f").is_ok() {
        return Err(format!("{s:?} has no time zone; add one, e.g. {s}+00:00"));
    }
    Err(format!(
        "{s:?} is not a timestamp with time zone (e.g. 2026-11-21 06:00:00+00:00)"
    ))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A complete backup ending at LSN `end` (its WAL starts in the segment before), for tests elsewhere too.
    pub(crate) fn m(name: &str, finished: &str, end: u64, xid: u64) -> Manifest {
        Manifest {
            format: 1,
            name: name.into(),
            pg_version: "15".into(),
            server_version_num: 150018,
            system_identifier: "1".into(),
            timeline: 1,
            start_lsn: Lsn(end - 1),
            end_lsn: Lsn(end),
            start_wal: wal_file_name(1, Lsn(end - 1), 16 << 20),
            wal_segment_size: 16 << 20,
            started_at: parse_time(finished).unwrap(),
            finished_at: parse_time(finished).unwrap(),
            next_xid: xid,
            data: "data.tar.zst".into(),
            codec: "zstd".into(),
            size_bytes: 1,
            sha256: String::new(),
            stored_bytes: 1,
            member: "m".into(),
        }
    }

    #[test]
    fn lsn_round_trips_and_orders() {
        let l: Lsn = "16/B374D848".parse().unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!("0/1".parse::<Lsn>().unwrap() < "1/0".parse().unwrap());
        assert!("x".parse::<Lsn>().is_err() && "1/100000000".parse::<Lsn>().is_err());
        assert_eq!(serde_json::to_string(&l).unwrap(), "\"16/B374D848\"");
    }

    #[test]
    fn wal_names_follow_postgres() {
        assert_eq!(
            wal_file_name(1, "0/2000028".parse().unwrap(), 16 << 20),
            "000000010000000000000002"
        );
        assert_eq!(
            wal_file_name(3, "1/FF000000".parse().unwrap(), 16 << 20),
            "0000000300000001000000FF"
        );
        assert_eq!(
            wal_file_name(1, "1/40000000".parse().unwrap(), 1 << 30),
            "000000010000000100000001"
        );
    }

    #[test]
    fn chooses_newest_backup_before_the_target() {
        let all = [
            m("a", "2026-11-01 00:00:00+00", 100, 10),
            m("b", "2026-11-02 00:00:00+00", 200, 20),
            m("c", "2026-11-03 00:00:00+00", 300, 30),
        ];
        let t = |s| Target::Time(parse_time(s).unwrap());
        assert_eq!(choose(&all, &Target::Latest, "x").unwrap().name, "c");
        assert_eq!(
            choose(&all, &t("2026-11-02 12:00:00+00"), "x")
                .unwrap()
                .name,
            "b"
        );
        assert_eq!(
            choose(&all, &t("2026-11-02 00:00:00+00"), "x")
                .unwrap()
                .name,
            "a",
            "finished strictly before"
        );
        assert_eq!(choose(&all, &Target::Lsn(Lsn(250)), "x").unwrap().name, "b");
        assert_eq!(choose(&all, &Target::Xid(30), "x").unwrap().name, "c");
        let e = choose(&all, &t("2026-10-01 00:00:00+00"), "s3://b/p").unwrap_err();
        assert!(
            e.to_string()
                .contains("oldest backup, a, finished at 2026-11-01"),
            "{e}"
        );
        assert_eq!(
            choose(&[], &Target::Latest, "s3://b/p").unwrap_err(),
            ChooseError::Empty {
                location: "s3://b/p".into()
            }
        );
    }

    #[test]
    fn target_times_need_a_zone() {
        for ok in [
            "2026-11-21 06:00:00+00:00",
            "2026-11-21T06:00:00Z",
            "2026-11-21 06:00:00.123+01",
            "2026-11-21 06:00:00 UTC",
        ] {
            assert!(parse_time(ok).is_ok(), "{ok}");
        }
        assert_eq!(
            parse_time("2026-11-21 07:00:00+01").unwrap(),
            parse_time("2026-11-21 06:00:00+00:00").unwrap()
        );
        assert!(parse_time("2026-11-21 06:00:00")
            .unwrap_err()
            .contains("no time zone"));
        assert!(parse_time("yesterday").is_err());
    }
}
