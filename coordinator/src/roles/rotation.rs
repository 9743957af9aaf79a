//! Password rotation, as upstream has it (postgres-operator `pkg/cluster/sync.go` `updateSecret` /
//! `rotatePasswordInSecret`, docs/administrator.md "Password rotation in K8s secrets"): which users rotate,
//! when, what the credentials Secret says afterwards, and which old rotation roles have outlived the
//! retention period. Pure; `reconcile::rotation` reads and writes the Secrets.
//!
//! Two modes. *New user*: every interval a role `{user}{YYMMDD}` is created, member of `{user}` (so it has the
//! same privileges), and the Secret names it with a new password; the previous rotation role keeps working
//! until the retention period ends, so applications that have not re-read the Secret keep their
//! connections and logins. *In place*: the user keeps its name and gets a new password; old passwords stop
//! working at once.

use std::collections::{BTreeMap, BTreeSet};

use jiff::{civil::Date, Timestamp, ToSpan};

use super::desired::MAX_IDENTIFIER_BYTES;
use super::model::{Desired, Origin, Password, Role};
use crate::config::OperatorConfig;
use pgherd_shared::crd::PostgresSpec;

/// Upstream's defaults (`password_rotation_interval`, `password_rotation_user_retention`), in days.
const DEFAULT_INTERVAL_DAYS: u32 = 90;
const DEFAULT_RETENTION_DAYS: u32 = 180;
/// `YYMMDD`.
const SUFFIX_LEN: usize = 6;

/// Who rotates, and how often, for one cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// `enable_password_rotation`: manifest and preparedDatabases users that do not own a database.
    pub global: bool,
    pub interval_days: u32,
    /// At least twice the interval (upstream raises it), so the previous rotation role survives the next
    /// rotation.
    pub retention_days: u32,
    pub new_user: BTreeSet<String>,
    pub in_place: BTreeSet<String>,
    pub ignoring: BTreeSet<String>,
    /// The superuser is never rotated: Patroni and the agent hold its password.
    pub superuser: String,
    /// The replication user rotates in place only, and upstream then replaces every pod (Patroni reads its
    /// password from the environment); pgherd does not rotate it (see [`Refusal::System`]).
    pub replication: String,
}

impl Policy {
    pub fn new(cfg: &OperatorConfig, spec: &PostgresSpec) -> Self {
        let users = cfg.raw.users.clone().unwrap_or_default();
        let interval_days = users
            .password_rotation_interval
            .filter(|d| *d > 0)
            .unwrap_or(DEFAULT_INTERVAL_DAYS);
        let retention_days = users
            .password_rotation_user_retention
            .unwrap_or(DEFAULT_RETENTION_DAYS)
            .max(2 * interval_days);
        let set = |v: &Option<Vec<String>>| v.iter().flatten().cloned().collect();
        Policy {
            global: users.enable_password_rotation.unwrap_or(false),
            interval_days,
            retention_days,
            new_user: set(&spec.users_with_secret_rotation),
            in_place: set(&spec.users_with_in_place_secret_rotation),
            ignoring: set(&spec.users_ignoring_secret_rotation),
            superuser: cfg.super_username.clone(),
            replication: cfg.replication_username.clone(),
        }
    }

    /// How `role` rotates, `None` when it does not; `Err` when it was asked for but cannot be done.
    pub fn mode(&self, role: &Role) -> Result<Option<Mode>, Refusal> {
        let name = &role.name;
        if self.ignoring.contains(name) {
            return Ok(None);
        }
        let listed = self.in_place.contains(name) || self.new_user.contains(name);
        if *name == self.superuser || *name == self.replication {
            return if listed {
                Err(Refusal::System(name.clone()))
            } else {
                Ok(None)
            };
        }
        let mode = if self.in_place.contains(name) {
            Mode::InPlace
        } else if self.new_user.contains(name)
            || (self.global
                && !role.db_owner
                && matches!(role.origin, Origin::Manifest | Origin::Bootstrap))
        {
            Mode::NewUser
        } else {
            return Ok(None);
        };
        if mode == Mode::NewUser && name.len() + SUFFIX_LEN > MAX_IDENTIFIER_BYTES {
            return Err(Refusal::TooLong(name.clone()));
        }
        Ok(Some(mode))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    NewUser,
    InPlace,
}

/// Rotation that was asked for and is not done; reported as a warning, the user keeps its credentials.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("user {0:?}: the superuser and the replication user are not rotated (their passwords are in every pod's environment)")]
    System(String),
    #[error("user {0:?}: a rotation user {0}YYMMDD would be longer than Postgres' 63 bytes")]
    TooLong(String),
    #[error("user {role:?}: its Secret names user {secret_user:?}, which is neither {role:?} nor a rotation user of it; left as it is")]
    ForeignUser { role: String, secret_user: String },
}

/// What a credentials Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretState {
    pub username: String,
    pub password: String,
    /// `nextRotation`, RFC 3339 as upstream writes it.
    pub next_rotation: Option<String>,
}

/// A change to one credentials Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Update {
    pub username: String,
    /// A new password is drawn (rotation, or rotation switched off while a rotation user was in use).
    pub new_password: bool,
    pub next_rotation: Option<String>,
}

impl Update {
    /// The Secret after the update, with `password` as the new one when [`Update::new_password`].
    pub fn applied(&self, old: &SecretState, password: String) -> SecretState {
        SecretState {
            username: self.username.clone(),
            password: if self.new_password {
                password
            } else {
                old.password.clone()
            },
            next_rotation: self.next_rotation.clone(),
        }
    }
}

/// The rotation user's name for a rotation at `now`: `{user}{YYMMDD}` in UTC, as upstream.
pub fn rotation_user(role: &str, now: Timestamp) -> String {
    let d = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    format!("{role}{:02}{:02}{:02}", d.year() % 100, d.month(), d.day())
}

/// The date of a rotation user of `role`, or `None` when `name` is not one.
pub fn rotation_date(role: &str, name: &str) -> Option<Date> {
    let suffix = name.strip_prefix(role)?;
    if suffix.len() != SUFFIX_LEN || !suffix.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| suffix[r].parse::<i8>().ok();
    Date::new(2000 + i16::from(n(0..2)?), n(2..4)?, n(4..6)?).ok()
}

fn rfc3339(t: Timestamp) -> String {
    // Whole seconds, as upstream's `time.RFC3339`.
    Timestamp::from_second(t.as_second())
        .expect("a valid timestamp stays valid when truncated")
        .to_string()
}

/// What the Secret of `role` should say at `now`; `None` when it is right as it is. Upstream's steps:
/// a missing or unreadable `nextRotation` is set to one interval from now (no rotation yet); a shortened
/// interval brings it forward; once it has passed — or at once when a user switches to in-place rotation
/// while a rotation user is in use — the Secret gets new credentials and the next date; when rotation no
/// longer applies but the Secret still names a rotation user, it goes back to the user's own name with a
/// new password.
pub fn decide(
    role: &str,
    mode: Option<Mode>,
    secret: &SecretState,
    now: Timestamp,
    interval_days: u32,
) -> Result<Option<Update>, Refusal> {
    let rotated = secret.username != role;
    if rotated && rotation_date(role, &secret.username).is_none() {
        return Err(Refusal::ForeignUser {
            role: role.into(),
            secret_user: secret.username.clone(),
        });
    }
    let Some(mode) = mode else {
        return Ok(rotated.then(|| Update {
            username: role.into(),
            new_password: true,
            next_rotation: None,
        }));
    };
    let latest = now + (i64::from(interval_days) * 24).hours();
    let stored = secret
        .next_rotation
        .as_deref()
        .and_then(|s| s.parse::<Timestamp>().ok());
    let next = stored.map_or(latest, |s| s.min(latest));
    let switched_to_in_place = mode == Mode::InPlace && rotated;
    if now > next || switched_to_in_place {
        let username = match mode {
            Mode::InPlace => role.to_string(),
            Mode::NewUser => rotation_user(role, now),
        };
        return Ok(Some(Update {
            username,
            new_password: true,
            next_rotation: Some(rfc3339(latest)),
        }));
    }
    if stored == Some(next) {
        return Ok(None);
    }
    Ok(Some(Update {
        username: secret.username.clone(),
        new_password: false,
        next_rotation: Some(rfc3339(next)),
    }))
}

/// Adds the rotation roles the Secrets name (`secret_users`: role → the Secret's username) to `desired`:
/// `{user}{YYMMDD}`, LOGIN, member of the user, with its settings and the Secret's password. The user
/// itself keeps whatever password it has ([`Password::Kept`]): applications that still use it keep working
/// until they re-read the Secret.
pub fn add_rotation_roles(desired: &mut Desired, secret_users: &BTreeMap<String, String>) {
    for (role, username) in secret_users {
        if role == username {
            continue;
        }
        let Some(user) = desired.roles.get_mut(role) else {
            continue;
        };
        let password = std::mem::replace(&mut user.password, Password::Kept);
        let rotation = Role {
            name: username.clone(),
            origin: user.origin,
            flags: BTreeSet::from([super::model::Flag::Login]),
            password,
            member_of: BTreeSet::from([role.clone()]),
            admin: None,
            parameters: user.parameters.clone(),
            db_owner: false,
        };
        desired.roles.insert(username.clone(), rotation);
    }
}

/// Rotation roles of `role` among `existing` whose date is older than the retention period, except the one
/// the Secret names (`in_use`) and any role the cluster wants under that name.
pub fn expired<'a>(
    role: &str,
    existing: impl IntoIterator<Item = &'a String>,
    in_use: &str,
    wanted: &Desired,
    now: Timestamp,
    retention_days: u32,
) -> Vec<String> {
    let today = now.to_zoned(jiff::tz::TimeZone::UTC).date();
    let cutoff = today
        .checked_sub(i64::from(retention_days).days())
        .unwrap_or(Date::MIN);
    existing
        .into_iter()
        .filter(|name| *name != in_use && !wanted.roles.contains_key(*name))
        .filter(|name| rotation_date(role, name).is_some_and(|d| d < cutoff))
        .cloned()
        .collect()
}

#[cfg(test)]
#[path = "rotation_tests.rs"]
mod tests;
