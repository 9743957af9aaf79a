//! Whether a switchover may happen now, by the manifest's `maintenanceWindows`.
//!
//! Evaluated in UTC on the minute of the week, so a window that crosses
//! midnight (`Sat:23:00-01:00`, which runs into Sunday) is one window.
//! Upstream compared wall-clock times in the operator's local zone and
//! treated an end before the start as never open (postgres-operator
//! `pkg/cluster/util.go` `isInMaintenanceWindow`).

use jiff::Timestamp;
use pgherd_shared::crd::validate::{parse_maintenance_window, MaintenanceWindow};

const DAY: u32 = 24 * 60;
const WEEK: u32 = 7 * DAY;

/// Minute of the week (0 = Sunday 00:00 UTC).
fn minute_of_week(now: Timestamp) -> u32 {
    let secs = now.as_second().rem_euclid(i64::from(WEEK) * 60);
    // 1970-01-01 was a Thursday (day 4 of a week starting on Sunday).
    ((secs / 60) as u32 + 4 * DAY) % WEEK
}

fn contains(w: &MaintenanceWindow, now: u32) -> bool {
    let days: Vec<u32> = match w.weekday {
        Some(d) => vec![u32::from(d)],
        None => (0..7).collect(),
    };
    let (start, end) = (u32::from(w.start_minute), u32::from(w.end_minute));
    // A window crossing midnight ends on the next day.
    let length = if end >= start {
        end - start
    } else {
        DAY - start + end
    };
    days.iter().any(|d| {
        let from = d * DAY + start;
        // Inclusive end, so `22:00-23:59` covers the minute 23:59.
        (now + WEEK - from) % WEEK <= length
    })
}

/// True when no windows are set (switchovers are always allowed), or when
/// `now` lies in one of them. Windows that do not parse were already
/// rejected by validation; here they never open.
pub fn switchover_allowed(windows: &[String], now: Timestamp) -> bool {
    if windows.is_empty() {
        return true;
    }
    let m = minute_of_week(now);
    windows
        .iter()
        .filter_map(|w| parse_maintenance_window(w).ok())
        .any(|w| contains(&w, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn allowed(windows: &[&str], now: &str) -> bool {
        let w: Vec<String> = windows.iter().map(|s| s.to_string()).collect();
        switchover_allowed(&w, at(now))
    }

    #[test]
    fn weekdays_are_counted_from_sunday_in_utc() {
        // 2026-08-01 is a Saturday.
        assert_eq!(minute_of_week(at("2026-08-01T00:00:00Z")), 6 * DAY);
        assert_eq!(minute_of_week(at("2026-08-02T00:01:00Z")), 1);
        // An offset is converted, not ignored: 01:30+02:00 is Friday 23:30 UTC.
        assert_eq!(
            minute_of_week(at("2026-08-01T01:30:00+02:00")),
            5 * DAY + 23 * 60 + 30
        );
    }

    #[test]
    fn windows_table() {
        let cases: &[(&[&str], &str, bool)] = &[
            (&[], "2026-08-01T12:00:00Z", true),
            (&["Sat:22:00-23:59"], "2026-08-01T22:00:00Z", true),
            (&["Sat:22:00-23:59"], "2026-08-01T23:59:30Z", true),
            (&["Sat:22:00-23:59"], "2026-08-01T21:59:00Z", false),
            (&["Sat:22:00-23:59"], "2026-08-08T22:30:00Z", true),
            (&["Sun:22:00-23:59"], "2026-08-01T22:30:00Z", false),
            (&["01:00-06:00"], "2026-08-04T03:00:00Z", true),
            (&["01:00-06:00"], "2026-08-04T06:01:00Z", false),
            // Crossing midnight: Saturday 23:00 to Sunday 01:00.
            (&["Sat:23:00-01:00"], "2026-08-01T23:30:00Z", true),
            (&["Sat:23:00-01:00"], "2026-08-02T00:30:00Z", true),
            (&["Sat:23:00-01:00"], "2026-08-02T01:01:00Z", false),
            (&["Sat:23:00-01:00"], "2026-08-01T00:30:00Z", false),
            // Every day across midnight, also from Saturday into Sunday.
            (&["22:00-02:00"], "2026-08-02T01:59:00Z", true),
            (&["22:00-02:00"], "2026-08-02T12:00:00Z", false),
            // Saturday into Sunday wraps the week.
            (&["Sat:23:00-01:00"], "2026-08-09T00:10:00Z", true),
            // Any of several.
            (
                &["Mon:01:00-02:00", "Sat:10:00-11:00"],
                "2026-08-01T10:30:00Z",
                true,
            ),
            (&["bogus"], "2026-08-01T10:30:00Z", false),
        ];
        for (windows, now, want) in cases {
            assert_eq!(allowed(windows, now), *want, "{windows:?} at {now}");
        }
    }
}
