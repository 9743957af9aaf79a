//! Segments of an earlier timeline that no one would archive: the promoted member marks them `.ready`.
//!
//! A replica's walreceiver marks a streamed segment for archiving only when it closes the file, which it
//! does when it starts writing the next segment or when the primary ends the timeline cleanly. When the
//! primary dies right after a segment boundary (a `pg_switch_wal()`, or a segment that filled exactly),
//! the replica holds that complete segment with no `.ready` or `.done` at all; after promotion the new
//! timeline starts at the next segment, so nothing ever closes it. PostgreSQL would mark it only once a
//! checkpoint considers removing it, which `wal_keep_size` and replication slots postpone indefinitely,
//! and the archive keeps a gap a restore to "latest" cannot cross. `tests/tests/archive_continuity.rs`
//! reproduces it.
//!
//! The sweep does what PostgreSQL's own `XLogArchiveCheckDone` does for such a file, early: a complete
//! segment of an ancestor timeline, before the point where that timeline ended (from the current
//! timeline's history file), with no archive status, gets an empty `.ready`. Only ancestors: on the
//! current timeline Postgres marks segments itself, and the one being written has no status by design.

use std::collections::{BTreeSet, HashSet};
use std::io;
use std::path::Path;

use super::continuity::{self, Fork};
use super::wal;

/// The segments to mark, by name, oldest first. Pure: `files` are `pg_wal`'s entries, `statuses` the
/// names in `archive_status` (`<segment>.ready`, `<segment>.done`), `forks` the current timeline's
/// history.
///
/// Per ancestor timeline only the unbroken run of status-less segments that ends right before its switch
/// point: that is where an unclosed walreceiver file sits. Older status-less files (a base backup's WAL,
/// segments from before archiving was enabled) were never this member's to archive, and re-pushing them
/// after retention removed them would only add objects, or block archiving on a copy that differs.
pub fn to_mark<'a>(
    files: impl IntoIterator<Item = &'a str>,
    statuses: &HashSet<String>,
    forks: &[Fork],
    segment_size: u64,
) -> Vec<String> {
    let has_status = |name: &str| {
        statuses.contains(&format!("{name}.ready")) || statuses.contains(&format!("{name}.done"))
    };
    let present: BTreeSet<(u32, u64)> = files
        .into_iter()
        .filter_map(|name| continuity::parse_segment(name, segment_size))
        .collect();
    let mut marked = Vec::new();
    for fork in forks {
        // The segment holding the switch point is partial on this timeline (Postgres archives it as
        // `.partial`); only those wholly before it are complete.
        let end = fork.switchpoint.0 / segment_size;
        let mut run: Vec<String> = (0..end)
            .rev()
            .map(|segno| {
                (
                    segno,
                    continuity::segment_name(fork.timeline, segno, segment_size),
                )
            })
            .take_while(|(segno, name)| {
                present.contains(&(fork.timeline, *segno)) && !has_status(name)
            })
            .map(|(_, name)| name)
            .collect();
        run.reverse();
        marked.extend(run);
    }
    marked
}

/// Marks the orphaned ancestor segments in `data_dir`'s `pg_wal` for archiving and returns their names.
/// `timeline` is the one the server runs on now.
pub fn mark(data_dir: &Path, timeline: u32) -> io::Result<Vec<String>> {
    let wal = data_dir.join("pg_wal");
    let history = match std::fs::read_to_string(wal.join(format!("{timeline:08X}.history"))) {
        Ok(text) => text,
        // Timeline 1, or a history Postgres has not written yet: no ancestors to look at.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let forks = continuity::parse_history(&history).map_err(|problem| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{timeline:08X}.history: {problem}"),
        )
    })?;
    let mut files = Vec::new();
    let mut segment_size = None;
    for entry in std::fs::read_dir(&wal)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Every segment file has the cluster's segment size; the first one tells it.
        if segment_size.is_none() && wal::is_segment(&name) {
            segment_size = Some(entry.metadata()?.len());
        }
        files.push(name);
    }
    let Some(segment_size) = segment_size.filter(|s| s.is_power_of_two() && *s >= 1 << 20) else {
        return Ok(Vec::new());
    };
    let status_dir = wal.join("archive_status");
    let statuses: HashSet<String> = std::fs::read_dir(&status_dir)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<io::Result<_>>()?;
    let names = to_mark(
        files.iter().map(String::as_str),
        &statuses,
        &forks,
        segment_size,
    );
    for name in &names {
        std::fs::File::create(status_dir.join(format!("{name}.ready")))?;
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::catalog::Lsn;

    const SEG: u64 = 16 << 20;

    fn fork(timeline: u32, switchpoint: u64) -> Fork {
        Fork {
            timeline,
            switchpoint: Lsn(switchpoint),
        }
    }

    fn statuses(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_complete_segment_before_the_fork_without_status_is_marked() {
        // Timeline 1 ended exactly at the start of segment 0C: 0B is complete, nobody closed it.
        let files = [
            "00000001000000000000000A",
            "00000001000000000000000B",
            "00000002000000000000000C",
            "00000002.history",
            "archive_status",
        ];
        let st = statuses(&["00000001000000000000000A.done"]);
        assert_eq!(
            to_mark(files, &st, &[fork(1, 0xC00_0000)], SEG),
            ["00000001000000000000000B"]
        );
    }

    #[test]
    fn the_switch_segment_the_current_timeline_and_marked_segments_are_left_alone() {
        let files = [
            "000000010000000000000009",
            "00000001000000000000000B",
            "00000001000000000000000B.partial",
            "00000002000000000000000B",
            "00000002000000000000000C",
            "00000002000000000000000D",
        ];
        // Timeline 1 ended inside 0B: that file is partial on timeline 1.
        let st = statuses(&["000000010000000000000009.ready"]);
        assert!(to_mark(files, &st, &[fork(1, 0xB00_00A0)], SEG).is_empty());
    }

    #[test]
    fn every_ancestor_uses_its_own_switch_point_and_the_result_is_ordered() {
        let files = [
            "000000020000000000000007",
            "000000020000000000000006",
            "000000010000000000000004",
            "000000020000000000000005",
            "000000030000000000000008",
        ];
        let forks = [fork(1, 0x500_0000), fork(2, 0x800_0000)];
        assert_eq!(
            to_mark(files, &HashSet::new(), &forks, SEG),
            [
                "000000010000000000000004",
                "000000020000000000000005",
                "000000020000000000000006",
                "000000020000000000000007"
            ]
        );
    }

    #[test]
    fn only_the_run_right_before_the_fork_is_marked() {
        // 02 came with a base backup and 03..0A were archived: 02 is not this member's to push.
        let mut files: Vec<String> = (2..=0xB)
            .map(|s| continuity::segment_name(1, s, SEG))
            .collect();
        files.push("00000001000000000000000C".into());
        let st: HashSet<String> = (3..=0xA)
            .map(|s| format!("{}.done", continuity::segment_name(1, s, SEG)))
            .collect();
        assert_eq!(
            to_mark(
                files.iter().map(String::as_str),
                &st,
                &[fork(1, 0xC00_0000)],
                SEG
            ),
            ["00000001000000000000000B"]
        );
        // A missing segment ends the run too.
        let files = ["000000010000000000000009", "00000001000000000000000B"];
        assert_eq!(
            to_mark(files, &HashSet::new(), &[fork(1, 0xB00_0000)], SEG),
            Vec::<String>::new()
        );
    }

    #[test]
    fn marks_files_in_a_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let wal = dir.path().join("pg_wal");
        std::fs::create_dir_all(wal.join("archive_status")).unwrap();
        let segment = vec![0u8; 1 << 20];
        for name in ["000000010000000000000003", "000000020000000000000004"] {
            std::fs::write(wal.join(name), &segment).unwrap();
        }
        // 1 MiB segments: 0/400000 is the start of segment 4.
        std::fs::write(
            wal.join("00000002.history"),
            "1\t0/400000\tno recovery target specified\n",
        )
        .unwrap();
        assert!(mark(dir.path(), 1).unwrap().is_empty());
        assert_eq!(mark(dir.path(), 2).unwrap(), ["000000010000000000000003"]);
        assert!(wal
            .join("archive_status/000000010000000000000003.ready")
            .exists());
        // Marked once: the next sweep finds its status.
        assert!(mark(dir.path(), 2).unwrap().is_empty());
    }
}
