//! Process-tree inspection through /proc.
//!
//! The agent must never leave postgres processes behind: after a Patroni crash the postmaster keeps running
//! (Patroni adopts it again on restart), and on shutdown anything still alive below the agent is ours to stop.
//! The integration harness uses the same walk to kill a member's whole tree with SIGKILL in one go.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;

/// Parent pid from the contents of /proc/<pid>/stat. The command name is in parentheses and may itself
/// contain spaces and parentheses, so parse from the last ')'.
pub fn parse_ppid(stat: &str) -> Option<i32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let _state = fields.next()?;
    fields.next()?.parse().ok()
}

/// Snapshot of pid → parent pid for every process visible in /proc.
pub fn parent_map() -> BTreeMap<i32, i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        Some((pid, parse_ppid(&stat)?))
    })
    .collect()
}

/// All descendants of `root` (not including it) in a parent map, parents before children.
pub fn descendants_in(map: &BTreeMap<i32, i32>, root: i32) -> Vec<i32> {
    let mut children: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for (&pid, &ppid) in map {
        children.entry(ppid).or_default().push(pid);
    }
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut queue = vec![root];
    while let Some(p) = queue.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if seen.insert(c) {
                out.push(c);
                queue.push(c);
            }
        }
    }
    out
}

/// Live descendants of `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    descendants_in(&parent_map(), root)
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ppid_survives_odd_command_names() {
        assert_eq!(parse_ppid("42 (postgres: a) b) S 7 42 42 0"), Some(7));
        assert_eq!(parse_ppid("1 (init) S 0 1 1"), Some(0));
        assert_eq!(parse_ppid("garbage"), None);
    }

    #[test]
    fn walks_the_whole_tree_only() {
        let map: BTreeMap<i32, i32> = [(2, 1), (3, 2), (4, 3), (5, 2), (9, 8), (10, 9)]
            .into_iter()
            .collect();
        let mut d = descendants_in(&map, 2);
        d.sort();
        assert_eq!(d, [3, 4, 5]);
        assert!(descendants_in(&map, 4).is_empty());
    }

    #[test]
    fn sees_a_real_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        assert!(descendants(me).contains(&(child.id() as i32)));
        assert!(alive(child.id() as i32));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!alive(child.id() as i32));
    }
}
