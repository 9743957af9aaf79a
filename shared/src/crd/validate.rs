//! Semantic validation of a `postgresql` manifest.
//!
//! Upstream silently skips or marks `Invalid` what it cannot use; pgherd
//! reports every problem at once with the JSON path of the offending field, so
//! `render` in CI and the coordinator's status say exactly what to fix.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::postgresql::{PostgresSpec, Postgresql, ResourceDescription, SUPPORTED_MAJOR_VERSIONS};

/// One problem with one field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// JSON path such as `spec.volume.size`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// All problems found in one manifest.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ValidationErrors(pub Vec<FieldError>);

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|e| e.to_string()).collect();
        f.write_str(&parts.join("; "))
    }
}

impl ValidationErrors {
    pub fn fields(&self) -> Vec<&str> {
        self.0.iter().map(|e| e.field.as_str()).collect()
    }
}

/// Longest cluster name for which `{cluster}-repl` is still a valid DNS label.
pub const MAX_CLUSTER_NAME_LEN: usize = 58;

const USER_FLAGS: &[&str] = &[
    "bypassrls",
    "createdb",
    "createrole",
    "inherit",
    "login",
    "nologin",
    "replication",
    "superuser",
    "nobypassrls",
    "nocreatedb",
    "nocreaterole",
    "noinherit",
    "noreplication",
    "nosuperuser",
];

struct Collector(Vec<FieldError>);

impl Collector {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

impl Postgresql {
    /// Validates name and spec; returns every problem found.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector(Vec::new());
        if let Some(name) = self.metadata.name.as_deref() {
            if !is_dns1035_label(name) || name.len() > MAX_CLUSTER_NAME_LEN {
                c.push(
                    "metadata.name",
                    format!(
                        "{name:?} must be a DNS-1035 label of at most {MAX_CLUSTER_NAME_LEN} characters (so that {name}-repl stays valid)"
                    ),
                );
            }
        } else {
            c.push("metadata.name", "is required");
        }
        validate_spec(&self.spec, &mut c);
        if c.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(c.0))
        }
    }
}

impl PostgresSpec {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut c = Collector(Vec::new());
        validate_spec(self, &mut c);
        if c.0.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(c.0))
        }
    }
}

fn validate_spec(s: &PostgresSpec, c: &mut Collector) {
    if s.team_id.trim().is_empty() {
        c.push("spec.teamId", "must not be empty");
    }
    if s.number_of_instances < 0 {
        c.push(
            "spec.numberOfInstances",
            format!("must be 0 or more, got {}", s.number_of_instances),
        );
    }
    if !SUPPORTED_MAJOR_VERSIONS.contains(&s.postgresql.version.as_str()) {
        c.push(
            "spec.postgresql.version",
            format!(
                "unknown major version {:?}; supported: {}",
                s.postgresql.version,
                SUPPORTED_MAJOR_VERSIONS.join(", ")
            ),
        );
    }
    if !is_memory_quantity(&s.volume.size) {
        c.push(
            "spec.volume.size",
            format!("{:?} is not a size such as 10Gi", s.volume.size),
        );
    }
    if let Some(iops) = s.volume.iops {
        if !(0..=80000).contains(&iops) {
            c.push("spec.volume.iops", "must be between 0 and 80000");
        }
    }
    if let Some(t) = s.volume.throughput {
        if !(0..=2000).contains(&t) {
            c.push("spec.volume.throughput", "must be between 0 and 2000");
        }
    }
    if let Some(r) = &s.resources {
        check_resources("spec.resources", r.requests.as_ref(), r.limits.as_ref(), c);
    }
    if s.clone.is_some() && s.standby.is_some() {
        c.push(
            "spec.standby",
            "clone and standby are mutually exclusive; remove one of spec.clone or spec.standby",
        );
    }
    if let Some(clone) = &s.clone {
        validate_clone(clone, c);
    }
    if let Some(sb) = &s.standby {
        let set = |v: &Option<String>| v.as_deref().is_some_and(|x| !x.is_empty());
        if !set(&sb.s3_wal_path) && !set(&sb.gs_wal_path) && !set(&sb.standby_host) {
            c.push(
                "spec.standby",
                "needs one of s3_wal_path, gs_wal_path or standby_host",
            );
        }
        if set(&sb.s3_wal_path) && set(&sb.gs_wal_path) {
            c.push(
                "spec.standby.gs_wal_path",
                "s3_wal_path and gs_wal_path are mutually exclusive",
            );
        }
        if let Some(port) = sb.standby_port.as_deref().filter(|p| !p.is_empty()) {
            if port.parse::<u16>().map_or(true, |p| p == 0) {
                c.push(
                    "spec.standby.standby_port",
                    format!("{port:?} is not a TCP port"),
                );
            }
        }
    }
    for (i, w) in s.maintenance_windows.iter().flatten().enumerate() {
        if let Err(e) = parse_maintenance_window(w) {
            c.push(format!("spec.maintenanceWindows[{i}]"), e);
        }
    }
    if let Some(cron) = s.logical_backup_schedule.as_deref() {
        if !is_cron(cron) {
            c.push(
                "spec.logicalBackupSchedule",
                format!("{cron:?} is not a five-field cron schedule"),
            );
        }
    }
    if let Some(r) = s.logical_backup_retention.as_deref() {
        if !is_retention_time(r) {
            c.push(
                "spec.logicalBackupRetention",
                format!(
                    "{r:?} is not a retention time such as \"7 days\", \"2 weeks\" or \"3 months\""
                ),
            );
        }
    }
    for (i, r) in s.allowed_source_ranges.iter().flatten().enumerate() {
        if !is_cidr(r) {
            c.push(
                format!("spec.allowedSourceRanges[{i}]"),
                format!("{r:?} is not an IPv4 or IPv6 CIDR"),
            );
        }
    }
    if let Some(p) = &s.connection_pooler {
        if p.number_of_instances.is_some_and(|n| n < 1) {
            c.push(
                "spec.connectionPooler.numberOfInstances",
                "must be 1 or more",
            );
        }
        if let Some(m) = p.mode.as_deref() {
            if m != "session" && m != "transaction" {
                c.push(
                    "spec.connectionPooler.mode",
                    format!("{m:?} must be session or transaction"),
                );
            }
        }
        if let Some(r) = &p.resources {
            check_resources(
                "spec.connectionPooler.resources",
                r.requests.as_ref(),
                r.limits.as_ref(),
                c,
            );
        }
    }
    for (i, v) in s.additional_volumes.iter().flatten().enumerate() {
        if v.name.is_empty() {
            c.push(
                format!("spec.additionalVolumes[{i}].name"),
                "must not be empty",
            );
        }
        if v.mount_path.is_empty() {
            c.push(
                format!("spec.additionalVolumes[{i}].mountPath"),
                "must not be empty",
            );
        }
        if !v.volume_source.is_object() {
            c.push(
                format!("spec.additionalVolumes[{i}].volumeSource"),
                "must be an object such as {emptyDir: {}}",
            );
        }
    }
    for (i, ct) in s.init_containers.iter().flatten().enumerate() {
        if ct.name.is_empty() {
            c.push(
                format!("spec.initContainers[{i}].name"),
                "must not be empty",
            );
        }
        if ct.image.as_deref().unwrap_or_default().is_empty() {
            c.push(
                format!("spec.initContainers[{i}].image"),
                "must not be empty",
            );
        }
    }
    for (i, sc) in s.sidecars.iter().flatten().enumerate() {
        if sc.image.as_deref().unwrap_or_default().is_empty() {
            c.push(format!("spec.sidecars[{i}].image"), "must not be empty");
        }
        if let Some(r) = &sc.resources {
            check_resources(
                &format!("spec.sidecars[{i}].resources"),
                r.requests.as_ref(),
                r.limits.as_ref(),
                c,
            );
        }
    }
    // Postgres takes any role name; the credentials Secret's name needs the user's name lowercased with
    // `_` as `-` (upstream's mapping) to be a valid Kubernetes name, and two users must not share one.
    let mut secret_names: BTreeMap<String, &str> = BTreeMap::new();
    for user in s.users.iter().flatten().map(|(u, _)| u) {
        let mapped = secret_part(user);
        if !is_valid_username(user) {
            c.push(
                format!("spec.users.{user}"),
                "is not a valid role name (1 to 63 bytes)",
            );
        } else if !is_valid_secret_part(&mapped) {
            c.push(
                format!("spec.users.{user}"),
                format!("its credentials Secret would be named after {mapped:?}, which is not a valid Kubernetes name (letters, digits, '-', '_' and '.')"),
            );
        } else if let Some(other) = secret_names.insert(mapped.clone(), user) {
            c.push(
                format!("spec.users.{user}"),
                format!("its credentials Secret would have the same name as the one of user {other:?} ({mapped:?})"),
            );
        }
    }
    for (user, flags) in s.users.iter().flatten() {
        let lower: Vec<String> = flags.iter().map(|f| f.to_lowercase()).collect();
        for f in &lower {
            if !USER_FLAGS.contains(&f.as_str()) {
                c.push(
                    format!("spec.users.{user}"),
                    format!("unknown role flag {f:?}"),
                );
            } else if let Some(base) = f.strip_prefix("no") {
                if lower.iter().any(|o| o == base) {
                    c.push(
                        format!("spec.users.{user}"),
                        format!("conflicting flags {base:?} and {f:?}"),
                    );
                }
            }
        }
    }
    for (db, owner) in s.databases.iter().flatten() {
        if !is_valid_username(owner) {
            c.push(
                format!("spec.databases.{db}"),
                format!("owner {owner:?} is not a valid role name"),
            );
        }
    }
}

fn validate_clone(clone: &super::postgresql::CloneDescription, c: &mut Collector) {
    if clone.cluster.is_empty() {
        c.push("spec.clone.cluster", "must not be empty");
    }
    match clone.timestamp.as_deref().filter(|t| !t.is_empty()) {
        Some(ts) => {
            if !is_rfc3339_with_offset(ts) {
                c.push(
                    "spec.clone.timestamp",
                    format!(
                        "{ts:?} must be RFC 3339 with a UTC offset, e.g. 2017-12-19T12:40:33+01:00"
                    ),
                );
            }
        }
        None => {
            if !clone.cluster.is_empty()
                && (!is_dns1035_label(&clone.cluster) || clone.cluster.len() > 63)
            {
                c.push(
                    "spec.clone.cluster",
                    "must be a DNS-1035 label of at most 63 characters when cloning a running cluster",
                );
            }
        }
    }
    if let Some(uid) = clone.uid.as_deref().filter(|u| !u.is_empty()) {
        if !is_uuid(uid) {
            c.push("spec.clone.uid", format!("{uid:?} is not a UUID"));
        }
    }
}

fn check_resources(
    base: &str,
    requests: Option<&ResourceDescription>,
    limits: Option<&ResourceDescription>,
    c: &mut Collector,
) {
    for (kind, rd) in [("requests", requests), ("limits", limits)] {
        let Some(rd) = rd else { continue };
        if let Some(cpu) = rd.cpu.as_deref() {
            if !is_empty_resource(cpu) && !is_cpu_quantity(cpu) {
                c.push(
                    format!("{base}.{kind}.cpu"),
                    format!("{cpu:?} is not a CPU quantity such as 500m or 1.5"),
                );
            }
        }
        for (name, v) in [
            ("memory", &rd.memory),
            ("hugepages-2Mi", &rd.hugepages_2mi),
            ("hugepages-1Gi", &rd.hugepages_1gi),
        ] {
            if let Some(v) = v.as_deref() {
                if !is_empty_resource(v) && !is_memory_quantity(v) {
                    c.push(
                        format!("{base}.{kind}.{name}"),
                        format!("{v:?} is not a quantity such as 512Mi"),
                    );
                }
            }
        }
    }
}

/// Upstream treats these as "not set" (`fillResourceList`).
pub fn is_empty_resource(v: &str) -> bool {
    matches!(v, "" | "0" | "null")
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `^(\d+m|\d+(\.\d{1,3})?)$`
pub fn is_cpu_quantity(s: &str) -> bool {
    if let Some(m) = s.strip_suffix('m') {
        return digits(m);
    }
    match s.split_once('.') {
        Some((i, f)) => digits(i) && digits(f) && f.len() <= 3,
        None => digits(s),
    }
}

/// `^(\d+(e\d+)?|\d+(\.\d+)?(e\d+)?[EPTGMK]i?)$`
pub fn is_memory_quantity(s: &str) -> bool {
    fn number(s: &str, allow_fraction: bool) -> bool {
        let (mantissa, exp) = match s.split_once('e') {
            Some((m, e)) => (m, Some(e)),
            None => (s, None),
        };
        if exp.is_some_and(|e| !digits(e)) {
            return false;
        }
        match mantissa.split_once('.') {
            Some((i, f)) => allow_fraction && digits(i) && digits(f),
            None => digits(mantissa),
        }
    }
    let body = s.strip_suffix('i').unwrap_or(s);
    if let Some(last) = body.chars().last() {
        if "EPTGMK".contains(last) {
            return number(&body[..body.len() - 1], true);
        }
    }
    // A bare 'i' suffix without a unit is not allowed.
    body.len() == s.len() && number(s, false)
}

/// `^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$`
pub fn is_cron(s: &str) -> bool {
    if s.starts_with(char::is_whitespace) {
        return false;
    }
    let fields: Vec<&str> = s.split_whitespace().collect();
    fields.len() == 5
        && !s.ends_with(char::is_whitespace)
        && fields.iter().all(|f| {
            let (base, step) = match f.split_once('/') {
                Some((b, st)) => (b, Some(st)),
                None => (*f, None),
            };
            (base == "*" || digits(base)) && step.is_none_or(digits)
        })
}

/// A logical backup retention time (`logicalBackupRetention`,
/// `logical_backup_s3_retention_time`): `<number> <unit>` terms such as
/// "7 days", "2 weeks", "1 month" or "1 year 6 months", with units from
/// seconds to years, an optional trailing "ago", and "7days" read as "7 days".
/// Upstream's dump script hands the value to `date -d "<value> ago"`
/// unchecked, so a typo silently disables retention or fails every run. The
/// job program applies the same parser (`crate::age`). Empty means no
/// retention by age.
pub fn is_retention_time(s: &str) -> bool {
    crate::age::parse(s).is_ok()
}

pub fn is_cidr(s: &str) -> bool {
    let Some((addr, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(bits) = bits.parse::<u8>() else {
        return false;
    };
    if addr.parse::<Ipv4Addr>().is_ok() {
        bits <= 32
    } else {
        addr.parse::<Ipv6Addr>().is_ok() && bits <= 128
    }
}

/// DNS-1035 label: `^[a-z]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters.
pub fn is_dns1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && !s.ends_with('-')
}

/// Upstream's role-name rule:
/// `^[a-z0-9]([-_a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-_a-z0-9]*[a-z0-9])?)*$`.
/// A role name Postgres keeps as given: not empty, at most 63 bytes (longer ones are truncated, so the role
/// would never match its name), no NUL.
pub fn is_valid_username(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && !s.contains('\0')
}

/// The part of a credentials Secret's name a user contributes (upstream's `_` → `-`, lowercased).
pub fn secret_part(user: &str) -> String {
    user.to_lowercase().replace('_', "-")
}

fn is_valid_secret_part(s: &str) -> bool {
    !s.is_empty()
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && b.iter().all(|c| {
                    c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_'
                })
                && b[0].is_ascii_alphanumeric()
                && b[b.len() - 1].is_ascii_alphanumeric()
        })
}

fn is_uuid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn is_rfc3339_with_offset(s: &str) -> bool {
    // date 'T' time (fraction)? offset, offset mandatory and not 'Z'.
    let Some((date, rest)) = s.split_once(['T', 't']) else {
        return false;
    };
    let d: Vec<&str> = date.split('-').collect();
    let date_ok = d.len() == 3
        && digits(d[0])
        && d[1].len() == 2
        && digits(d[1])
        && (1..=12).contains(&d[1].parse::<u32>().unwrap_or(0))
        && d[2].len() == 2
        && digits(d[2])
        && (1..=31).contains(&d[2].parse::<u32>().unwrap_or(0));
    let Some(pos) = rest.rfind(['+', '-']) else {
        return false;
    };
    let (time, offset) = rest.split_at(pos);
    let time = time
        .split_once('.')
        .map_or(time, |(t, frac)| if digits(frac) { t } else { "" });
    let hms = |t: &str, parts: usize, max_sec: u32| {
        let p: Vec<&str> = t.split(':').collect();
        p.len() == parts
            && p.iter().all(|x| x.len() == 2 && digits(x))
            && p[0].parse::<u32>().unwrap_or(99) < 24
            && p[1].parse::<u32>().unwrap_or(99) < 60
            && (parts == 2 || p[2].parse::<u32>().unwrap_or(99) <= max_sec)
    };
    date_ok && hms(time, 3, 60) && hms(&offset[1..], 2, 0)
}

/// A parsed maintenance window (`Sat:22:00-23:59` or `01:00-06:00`, UTC).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MaintenanceWindow {
    /// `None` means every day; otherwise 0 = Sunday .. 6 = Saturday.
    pub weekday: Option<u8>,
    pub start_minute: u16,
    pub end_minute: u16,
}

pub fn parse_maintenance_window(s: &str) -> Result<MaintenanceWindow, String> {
    const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
    let t = s.trim();
    let (from, to) = t
        .split_once('-')
        .ok_or_else(|| format!("{s:?} must look like Sat:01:00-04:00 or 01:00-04:00"))?;
    let (weekday, from) = match from.split_once(':') {
        Some((d, rest)) if DAYS.contains(&d) => (DAYS.iter().position(|x| *x == d), rest),
        _ => (None, from),
    };
    let minute = |hm: &str| -> Result<u16, String> {
        let (h, m) = hm
            .split_once(':')
            .ok_or_else(|| format!("{hm:?} is not HH:MM"))?;
        let ok = h.len() == 2 && m.len() == 2 && digits(h) && digits(m);
        let (h, m): (u16, u16) = (h.parse().unwrap_or(99), m.parse().unwrap_or(99));
        if !ok || h > 23 || m > 59 {
            return Err(format!("{hm:?} is not a time between 00:00 and 23:59"));
        }
        Ok(h * 60 + m)
    };
    // An end before the start crosses midnight (`Sat:23:00-01:00` runs into
    // Sunday); upstream rejected or mis-evaluated those.
    let (start, end) = (minute(from)?, minute(to)?);
    Ok(MaintenanceWindow {
        weekday: weekday.map(|d| d as u8),
        start_minute: start,
        end_minute: end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        for ok in ["500m", "1", "1.5", "1.250"] {
            assert!(is_cpu_quantity(ok), "{ok}");
        }
        for bad in ["1.2345", "m", "1Gi", "-1", ""] {
            assert!(!is_cpu_quantity(bad), "{bad}");
        }
        for ok in ["1Gi", "100Mi", "1e3", "1.5Gi", "512M", "1000"] {
            assert!(is_memory_quantity(ok), "{ok}");
        }
        for bad in ["1GB", "ten", "1i", "-1Gi", "1.5", ""] {
            assert!(!is_memory_quantity(bad), "{bad}");
        }
    }

    #[test]
    fn cron_cidr_names() {
        assert!(is_cron("30 00 * * *"));
        assert!(is_cron("*/5 * * * 1"));
        assert!(!is_cron("30 00 * *"));
        assert!(!is_cron("@daily"));
        assert!(is_cidr("127.0.0.1/32"));
        assert!(is_cidr("fd00::/8"));
        assert!(!is_cidr("127.0.0.1"));
        assert!(!is_cidr("10.0.0.0/33"));
        assert!(is_dns1035_label("acid-minimal-cluster"));
        assert!(!is_dns1035_label("1abc"));
        assert!(!is_dns1035_label("abc-"));
        assert!(is_valid_username("foo_user"));
        assert!(is_valid_username("appns.db_user"));
        assert!(is_valid_username("Data.Team"));
        assert!(!is_valid_username(""));
        assert!(!is_valid_username(&"x".repeat(64)));
        assert!(is_valid_secret_part(&secret_part("Data.Team")));
        assert!(!is_valid_secret_part(&secret_part("a b")));
        assert!(!is_valid_secret_part(&secret_part("_foo")));
    }

    #[test]
    fn retention_times() {
        for ok in [
            "",
            "3 days",
            "1 week",
            "2 Weeks",
            "1 month",
            "12hours",
            "1 year 6 months",
            "90 mins",
            "7 days ago",
        ] {
            assert!(is_retention_time(ok), "{ok:?}");
        }
        for bad in [
            "3",
            "days",
            "3 dayz",
            "-1 day",
            "1.5 days",
            "1 week,",
            "7days3hours",
            "a week",
        ] {
            assert!(!is_retention_time(bad), "{bad:?}");
        }
        let spec = |retention: &str| -> PostgresSpec {
            serde_json::from_value(serde_json::json!({
                "teamId": "acid", "volume": {"size": "1Gi"}, "numberOfInstances": 1,
                "postgresql": {"version": "17"}, "logicalBackupRetention": retention,
            }))
            .unwrap()
        };
        assert_eq!(spec("2 weeks").validate(), Ok(()));
        let err = spec("2 weeks,").validate().unwrap_err();
        assert_eq!(err.fields(), ["spec.logicalBackupRetention"]);
        assert!(err.to_string().contains("\"2 weeks,\""), "{err}");
    }

    #[test]
    fn timestamps_and_windows() {
        assert!(is_rfc3339_with_offset("2017-12-19T12:40:33+01:00"));
        assert!(is_rfc3339_with_offset("1996-12-19T16:39:57.123-08:00"));
        assert!(!is_rfc3339_with_offset("2017-12-19T12:40:33Z"));
        assert!(!is_rfc3339_with_offset("2017-13-19T12:40:33+01:00"));
        assert_eq!(
            parse_maintenance_window("Sat:22:00-23:59").unwrap(),
            MaintenanceWindow {
                weekday: Some(6),
                start_minute: 22 * 60,
                end_minute: 23 * 60 + 59
            }
        );
        assert_eq!(
            parse_maintenance_window("01:00-06:00").unwrap().weekday,
            None
        );
        // Crossing midnight is one window, evaluated by the coordinator.
        assert_eq!(
            parse_maintenance_window("Sat:23:00-01:00").unwrap(),
            MaintenanceWindow {
                weekday: Some(6),
                start_minute: 23 * 60,
                end_minute: 60
            }
        );
        assert!(parse_maintenance_window("Foo:01:00-02:00").is_err());
    }
}
