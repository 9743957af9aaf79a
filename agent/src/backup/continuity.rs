//! Whether the WAL archive can replay a backup to the end of the newest timeline it knows about.
//!
//! Recovery to "latest" stops quietly at the first WAL file `restore_command` cannot find and promotes
//! there, so a hole in the archive turns into lost transactions with no error. This module finds such
//! holes before anything is restored, and the running agent reports them as metrics. It follows the
//! timeline history the way PostgreSQL does: `recovery_target_timeline = latest` probes history files
//! upward from the backup's timeline one by one, and each segment is read from the newest timeline on the
//! path whose fork point is at or before it (the segment holding a fork is read from the new timeline).
//! The decision is pure; [`load`] is the I/O that lists the archive.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::catalog::{self, Lsn, Manifest};
use super::store::{self, ObjectStore};
use super::wal;

/// How many missing file names a report lists (the count is always complete).
const LISTED: usize = 20;

/// One line of a timeline history file: `timeline` ended at `switchpoint`, where the next one began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fork {
    pub timeline: u32,
    pub switchpoint: Lsn,
}

/// Parses a `<TLI>.history` file: `parentTLI<TAB>switchpoint<TAB>reason` lines, oldest first.
pub fn parse_history(text: &str) -> Result<Vec<Fork>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next().and_then(|t| t.parse().ok());
            let lsn = f.next().and_then(|s| s.parse().ok());
            match (tli, lsn) {
                (Some(timeline), Some(switchpoint)) => Ok(Fork {
                    timeline,
                    switchpoint,
                }),
                _ => Err(format!("unreadable history line {l:?}")),
            }
        })
        .collect()
}

/// Which timeline a restore follows (`recovery_target_timeline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimelineChoice {
    Latest,
    Current,
    Id(u32),
}

impl TimelineChoice {
    pub fn parse(s: &str) -> Result<Self, String> {
        match s.trim() {
            "" | "latest" => Ok(Self::Latest),
            "current" => Ok(Self::Current),
            n => n
                .parse()
                .map(Self::Id)
                .map_err(|_| format!("{s:?} is not a timeline (latest, current or a number)")),
        }
    }
}

/// Where a restore starts: the backup's timeline and segments. Segments up to `contained_through` come with
/// the backup itself (`pg_basebackup -X fetch`), so the archive needs only what follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    pub timeline: u32,
    pub first: u64,
    pub contained_through: u64,
}

impl Start {
    pub fn of_backup(m: &Manifest) -> Self {
        Self {
            timeline: m.timeline,
            first: m.start_lsn.0 / m.wal_segment_size,
            contained_through: m.end_lsn.0 / m.wal_segment_size,
        }
    }
}

/// The archive's WAL objects as names: complete segments and timeline history files.
#[derive(Debug, Clone, Default)]
pub struct Archive {
    segment_size: u64,
    segments: BTreeSet<(u32, u64)>,
    /// History files present, with their content (`None`: could not be read).
    histories: BTreeMap<u32, Option<Vec<Fork>>>,
}

/// The newest complete segment archived on one timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Newest {
    pub timeline: u32,
    pub segment: String,
    /// End of that segment: everything before it on this timeline is archived, if there is no gap.
    pub end_lsn: Lsn,
}

/// What a restore from a given start would find.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The timeline the restore follows.
    pub timeline: u32,
    /// The newest segment on the restore path; a restore to the end must replay into it.
    pub end: Option<String>,
    #[serde(skip)]
    end_segno: Option<u64>,
    /// The first missing files (segments and history files) on the path, in replay order.
    pub missing: Vec<String>,
    pub missing_count: u64,
    /// Why the path cannot be followed at all (e.g. the backup is not on the timeline's history).
    pub problem: Option<String>,
    pub newest: Vec<Newest>,
}

impl Report {
    pub fn complete(&self) -> bool {
        self.missing_count == 0 && self.problem.is_none()
    }

    /// The LSN a restore to the end must reach at least: the start of the newest segment on the path.
    pub fn must_reach(&self, segment_size: u64) -> Option<Lsn> {
        self.end_segno.map(|s| Lsn(s * segment_size))
    }

    /// The check as the metrics publish it. A path that cannot be followed at all (`problem`) counts as
    /// one missing file.
    pub fn metrics(&self) -> crate::metrics::backup::ArchiveCheck {
        crate::metrics::backup::ArchiveCheck {
            missing: self.missing_count + u64::from(self.problem.is_some()),
            first_missing: self.missing.first().cloned(),
            newest: self
                .newest
                .iter()
                .map(|n| (n.timeline, n.end_lsn.0))
                .collect(),
        }
    }

    /// One line for an operator: what is missing and what it means.
    pub fn describe(&self) -> String {
        if let Some(p) = &self.problem {
            return p.clone();
        }
        if self.missing_count == 0 {
            return format!(
                "complete through {} on timeline {}",
                self.end.as_deref().unwrap_or("the backup's own WAL"),
                self.timeline
            );
        }
        let more =
            self.missing_count as usize - self.missing.len().min(self.missing_count as usize);
        format!(
            "missing {} WAL file{} before {} on timeline {}: {}{}",
            self.missing_count,
            if self.missing_count == 1 { "" } else { "s" },
            self.end.as_deref().unwrap_or("the end"),
            self.timeline,
            self.missing.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    }
}

pub fn segment_name(timeline: u32, segno: u64, segment_size: u64) -> String {
    let per_id = 0x1_0000_0000u64 / segment_size;
    format!("{timeline:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Timeline and segment number of a complete segment's name (not `.partial`, `.backup` or history).
pub fn parse_segment(name: &str, segment_size: u64) -> Option<(u32, u64)> {
    if name.len() != 24 || !name.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u32::from_str_radix(&name[..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..], 16).ok()?;
    let per_id = 0x1_0000_0000u64 / segment_size;
    (seg < per_id).then_some((tli, log * per_id + seg))
}

fn history_name(tli: u32) -> String {
    format!("{tli:08X}.history")
}

impl Archive {
    /// The archive from object names (relative to the WAL prefix). Returns the history files whose content
    /// [`Archive::set_history`] still needs.
    pub fn from_names<'a>(
        names: impl IntoIterator<Item = &'a str>,
        segment_size: u64,
    ) -> (Self, Vec<u32>) {
        let mut a = Archive {
            segment_size,
            ..Default::default()
        };
        let mut histories = Vec::new();
        for name in names {
            if let Some(s) = parse_segment(name, segment_size) {
                a.segments.insert(s);
            } else if let Some(tli) = name
                .strip_suffix(".history")
                .filter(|t| t.len() == 8)
                .and_then(|t| u32::from_str_radix(t, 16).ok())
            {
                a.histories.insert(tli, None);
                histories.push(tli);
            }
        }
        (a, histories)
    }

    pub fn set_history(&mut self, tli: u32, forks: Option<Vec<Fork>>) {
        self.histories.insert(tli, forks);
    }

    pub fn segment_size(&self) -> u64 {
        self.segment_size
    }

    /// The oldest complete segment on the lowest timeline: where a check starts when there is no backup.
    pub fn oldest(&self) -> Option<Start> {
        self.segments.iter().next().map(|&(timeline, s)| Start {
            timeline,
            first: s,
            contained_through: s.saturating_sub(1),
        })
    }

    fn newest(&self) -> Vec<Newest> {
        let mut by_tli: BTreeMap<u32, u64> = BTreeMap::new();
        for &(t, s) in &self.segments {
            by_tli.insert(t, s);
        }
        by_tli
            .into_iter()
            .map(|(timeline, s)| Newest {
                timeline,
                segment: segment_name(timeline, s, self.segment_size),
                end_lsn: Lsn((s + 1) * self.segment_size),
            })
            .collect()
    }

    /// Checks the path a restore from `start` follows for `choice`. Pure.
    pub fn check(&self, start: Start, choice: TimelineChoice) -> Report {
        let mut report = Report {
            timeline: start.timeline,
            end: None,
            end_segno: None,
            missing: Vec::new(),
            missing_count: 0,
            problem: None,
            newest: self.newest(),
        };
        let missing_history = |r: &mut Report, tli: u32| {
            r.missing_count += 1;
            r.missing.push(history_name(tli));
        };
        let target = match choice {
            TimelineChoice::Current => start.timeline,
            TimelineChoice::Id(t) => {
                if t != start.timeline && !self.histories.contains_key(&t) {
                    missing_history(&mut report, t);
                }
                t
            }
            TimelineChoice::Latest => {
                // PostgreSQL's findNewestTimeLine: consecutive history files from the backup's timeline.
                let mut t = start.timeline;
                while self.histories.contains_key(&(t + 1)) {
                    t += 1;
                }
                let known = self
                    .segments
                    .iter()
                    .map(|s| s.0)
                    .chain(self.histories.keys().copied())
                    .max()
                    .unwrap_or(t);
                if known > t {
                    missing_history(&mut report, t + 1);
                }
                t
            }
        };
        report.timeline = target;
        let path = match self.path(target) {
            Ok(p) => p,
            Err(problem) => {
                report.problem = Some(problem);
                return report;
            }
        };
        let Some(k) = path.iter().position(|p| p.0 == start.timeline) else {
            report.problem = Some(format!(
                "the backup is on timeline {}, which is not in the history of timeline {target}",
                start.timeline
            ));
            return report;
        };
        let path = &path[k..];
        if let Some(next) = path.get(1) {
            if start.first > next.1 {
                report.problem = Some(format!(
                    "the backup started on timeline {} after timeline {} branched off at segment {}",
                    start.timeline,
                    next.0,
                    segment_name(next.0, next.1, self.segment_size)
                ));
                return report;
            }
        }
        // Each timeline on the path covers [begin, next begin); the first from the backup's start.
        let ranges: Vec<(u32, u64, u64)> = path
            .iter()
            .enumerate()
            .map(|(i, &(tli, begin))| {
                let lo = if i == 0 { start.first } else { begin };
                let hi = path.get(i + 1).map_or(u64::MAX, |n| n.1);
                (tli, lo, hi)
            })
            .filter(|(_, lo, hi)| lo < hi)
            .collect();
        let end = ranges
            .iter()
            .filter_map(|&(tli, lo, hi)| {
                self.segments
                    .range((tli, lo)..(tli, hi))
                    .next_back()
                    .map(|s| s.1)
            })
            .max();
        // A history file proves its parent timeline went on up to the fork: those segments existed even
        // if none of them reached the archive.
        let forked = path
            .last()
            .filter(|_| path.len() > 1)
            .and_then(|p| p.1.checked_sub(1));
        let end = end.max(forked);
        let Some(end) = end.filter(|e| *e > start.contained_through) else {
            return report;
        };
        let end_tli = ranges
            .iter()
            .rev()
            .find(|r| r.1 <= end)
            .map_or(target, |r| r.0);
        report.end = Some(segment_name(end_tli, end, self.segment_size));
        report.end_segno = Some(end);
        let needed_from = start.contained_through + 1;
        for &(tli, lo, hi) in &ranges {
            let (lo, hi) = (lo.max(needed_from), hi.min(end + 1));
            if lo >= hi {
                continue;
            }
            let mut expect = lo;
            let present = self.segments.range((tli, lo)..(tli, hi)).map(|s| s.1);
            for s in present.chain(std::iter::once(hi)) {
                if s > expect {
                    report.missing_count += s - expect;
                    for m in expect..s {
                        if report.missing.len() >= LISTED {
                            break;
                        }
                        report.missing.push(segment_name(tli, m, self.segment_size));
                    }
                }
                expect = s + 1;
            }
        }
        report
    }

    /// `(timeline, first segment read from it)` from the oldest ancestor to `target`.
    fn path(&self, target: u32) -> Result<Vec<(u32, u64)>, String> {
        let forks = match self.histories.get(&target) {
            None => return Ok(vec![(target, 0)]),
            Some(None) => {
                return Err(format!(
                    "{} cannot be read, so the timeline's history is unknown",
                    history_name(target)
                ))
            }
            Some(Some(f)) => f,
        };
        let mut path = Vec::with_capacity(forks.len() + 1);
        let mut begin = 0;
        for f in forks {
            path.push((f.timeline, begin));
            begin = f.switchpoint.0 / self.segment_size;
        }
        path.push((target, begin));
        Ok(path)
    }
}

/// Lists the archive under `store`'s WAL prefix and reads the history files not yet in `cache` (their
/// content never changes, so a monitor reads each once).
pub async fn load(
    store: &impl ObjectStore,
    segment_size: u64,
    cache: &mut BTreeMap<u32, Option<Vec<Fork>>>,
) -> Result<Archive, store::Error> {
    let prefix = format!("{}/wal/", store.settings().root());
    let listed = store.list(&prefix).await?;
    let names = listed.iter().filter_map(|l| l.key.strip_prefix(&prefix));
    let (mut archive, histories) = Archive::from_names(names, segment_size);
    for tli in histories {
        if let std::collections::btree_map::Entry::Vacant(slot) = cache.entry(tli) {
            let forks = match wal::fetch_bytes(store, &history_name(tli)).await {
                Ok(Some(bytes)) => parse_history(&String::from_utf8_lossy(&bytes)).ok(),
                Ok(None) => None,
                Err(wal::Error::Store(e)) => return Err(e),
                Err(e) => {
                    tracing::warn!("{e}");
                    None
                }
            };
            slot.insert(forks);
        }
        archive.set_history(tli, cache[&tli].clone());
    }
    Ok(archive)
}

/// The archive as a restore to the latest state from the oldest complete backup would follow it (from the
/// oldest archived segment when there is no backup yet).
pub async fn verify(
    store: &impl ObjectStore,
    cache: &mut BTreeMap<u32, Option<Vec<Fork>>>,
) -> Result<Report, store::Error> {
    let backups = catalog::list(store).await?;
    let segment_size = backups
        .first()
        .map_or(DEFAULT_SEGMENT_SIZE, |m| m.wal_segment_size);
    let archive = load(store, segment_size, cache).await?;
    let start = backups
        .first()
        .map(Start::of_backup)
        .or_else(|| archive.oldest())
        .unwrap_or(Start {
            timeline: 1,
            first: 0,
            contained_through: 0,
        });
    Ok(archive.check(start, TimelineChoice::Latest))
}

/// PostgreSQL's default, for an archive without any backup that would record the real size.
const DEFAULT_SEGMENT_SIZE: u64 = 16 << 20;

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn seg(tli: u32, s: u64) -> String {
        segment_name(tli, s, SEG)
    }

    fn archive(names: &[String], histories: &[(u32, &str)]) -> Archive {
        let (mut a, _) = Archive::from_names(names.iter().map(String::as_str), SEG);
        for (tli, text) in histories {
            a.set_history(*tli, Some(parse_history(text).unwrap()));
        }
        a
    }

    fn start(tli: u32, first: u64) -> Start {
        Start {
            timeline: tli,
            first,
            contained_through: first,
        }
    }

    #[test]
    fn names_round_trip() {
        assert_eq!(seg(1, 2), "000000010000000000000002");
        assert_eq!(seg(3, 0x1FF), "0000000300000001000000FF");
        assert_eq!(
            parse_segment("0000000300000001000000FF", SEG),
            Some((3, 0x1FF))
        );
        assert_eq!(parse_segment("000000010000000000000100", SEG), None);
        assert_eq!(parse_segment("000000010000000000000002.partial", SEG), None);
        let (a, h) = Archive::from_names(
            [
                "00000002.history",
                "000000010000000000000003.00000028.backup",
                "junk",
            ],
            SEG,
        );
        assert_eq!(h, [2]);
        assert!(a.segments.is_empty());
    }

    #[test]
    fn history_files_parse() {
        let forks = parse_history("1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tx\n")
            .unwrap();
        assert_eq!(
            forks,
            [
                Fork {
                    timeline: 1,
                    switchpoint: "0/3000000".parse().unwrap()
                },
                Fork {
                    timeline: 2,
                    switchpoint: "0/5000A0".parse().unwrap()
                },
            ]
        );
        assert!(parse_history("1 nonsense").is_err());
    }

    #[test]
    fn a_contiguous_single_timeline_is_complete() {
        let names: Vec<String> = (2..=9).map(|s| seg(1, s)).collect();
        let r = archive(&names, &[]).check(start(1, 2), TimelineChoice::Latest);
        assert!(r.complete(), "{r:?}");
        assert_eq!(r.end.as_deref(), Some("000000010000000000000009"));
        assert_eq!(r.must_reach(SEG), Some(Lsn(9 * SEG)));
        assert_eq!(r.newest[0].end_lsn, Lsn(10 * SEG));
    }

    #[test]
    fn a_hole_in_the_middle_is_named() {
        let names: Vec<String> = [2, 3, 4, 6, 7, 9].iter().map(|&s| seg(1, s)).collect();
        let r = archive(&names, &[]).check(start(1, 2), TimelineChoice::Latest);
        assert_eq!(r.missing, [seg(1, 5), seg(1, 8)]);
        assert_eq!(r.missing_count, 2);
        assert!(
            r.describe()
                .starts_with("missing 2 WAL files before 000000010000000000000009"),
            "{}",
            r.describe()
        );
    }

    #[test]
    fn segments_inside_the_backup_are_not_needed() {
        let names = vec![seg(1, 5), seg(1, 6)];
        let s = Start {
            timeline: 1,
            first: 2,
            contained_through: 4,
        };
        assert!(archive(&names, &[])
            .check(s, TimelineChoice::Latest)
            .complete());
        let s = Start {
            timeline: 1,
            first: 2,
            contained_through: 3,
        };
        assert_eq!(
            archive(&names, &[])
                .check(s, TimelineChoice::Latest)
                .missing,
            [seg(1, 4)]
        );
    }

    #[test]
    fn after_a_failover_the_fork_segment_comes_from_the_new_timeline() {
        // Timeline 1 until 0/5000100 (inside segment 5); timeline 2 from segment 5 on.
        let h2 = "1\t0/5000100\tno recovery target specified\n";
        let mut names: Vec<String> = (2..=4).map(|s| seg(1, s)).collect();
        names.push(format!("{}.partial", seg(1, 5)));
        names.extend((5..=7).map(|s| seg(2, s)));
        names.push("00000002.history".into());
        let a = archive(&names, &[(2, h2)]);
        let r = a.check(start(1, 2), TimelineChoice::Latest);
        assert!(r.complete(), "{r:?}");
        assert_eq!(
            (r.timeline, r.end.as_deref()),
            (2, Some("000000020000000000000007"))
        );
        // The old leader's unarchived segment 4 is the data-loss case.
        let without: Vec<String> = names.iter().filter(|n| **n != seg(1, 4)).cloned().collect();
        let r = archive(&without, &[(2, h2)]).check(start(1, 2), TimelineChoice::Latest);
        assert_eq!(r.missing, [seg(1, 4)]);
        // Segment 5 of timeline 1 does not stand in for segment 5 of timeline 2.
        let mut wrong: Vec<String> = names.iter().filter(|n| **n != seg(2, 5)).cloned().collect();
        wrong.push(seg(1, 5));
        let r = archive(&wrong, &[(2, h2)]).check(start(1, 2), TimelineChoice::Latest);
        assert_eq!(r.missing, [seg(2, 5)]);
        // Following timeline 1 only, the archive ends at its last segment before the fork.
        let r = a.check(start(1, 2), TimelineChoice::Current);
        assert!(r.complete());
        assert_eq!(r.end.as_deref(), Some("000000010000000000000004"));
    }

    #[test]
    fn segments_before_a_known_fork_are_needed_even_if_none_arrived() {
        // Timeline 2 forked in segment 9, but timeline 1 reached the archive only up to segment 5.
        let h2 = "1\t0/9000100\tno recovery target specified\n";
        let mut names: Vec<String> = (2..=5).map(|s| seg(1, s)).collect();
        names.push("00000002.history".into());
        let r = archive(&names, &[(2, h2)]).check(start(1, 2), TimelineChoice::Latest);
        assert_eq!(r.missing, [seg(1, 6), seg(1, 7), seg(1, 8)]);
        assert_eq!(r.end.as_deref(), Some("000000010000000000000008"));
    }

    #[test]
    fn a_missing_history_file_hides_the_newer_timelines() {
        let h3 = "1\t0/3000000\tx\n2\t0/5000000\ty\n";
        let names = vec![seg(1, 2), seg(1, 3), seg(3, 5), "00000003.history".into()];
        let r = archive(&names, &[(3, h3)]).check(start(1, 2), TimelineChoice::Latest);
        assert_eq!(r.missing, ["00000002.history"]);
        assert_eq!(r.timeline, 1);
    }

    #[test]
    fn a_backup_past_the_fork_on_the_old_timeline_is_reported() {
        let h2 = "1\t0/3000000\tx\n";
        let names = vec![seg(1, 6), seg(2, 3), seg(2, 4), "00000002.history".into()];
        let r = archive(&names, &[(2, h2)]).check(start(1, 6), TimelineChoice::Latest);
        assert!(r.problem.unwrap().contains("after timeline 2 branched off"));
        let r = archive(&names, &[(2, h2)]).check(start(5, 6), TimelineChoice::Id(2));
        assert!(r
            .problem
            .unwrap()
            .contains("not in the history of timeline 2"));
    }

    #[test]
    fn nothing_archived_after_the_backup_is_complete() {
        let r = archive(&[], &[]).check(start(1, 2), TimelineChoice::Latest);
        assert!(r.complete() && r.end.is_none() && r.must_reach(SEG).is_none());
        assert!(TimelineChoice::parse("x").is_err());
        assert_eq!(TimelineChoice::parse("3"), Ok(TimelineChoice::Id(3)));
    }
}
