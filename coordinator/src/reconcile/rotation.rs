//! The credentials Secrets as the roles duty reads them, with password rotation applied: which user and
//! password each Secret holds, the Secret changes rotation wants, and which old rotation roles to drop.
//!
//! A rotated Secret is written only after the statements that make its new credentials work have run, so a
//! Secret never names a user or password that does not log in (upstream writes the Secret first).

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use jiff::Timestamp;
use serde_json::{json, Value};

use super::{Context, ReconcileError};
use crate::kube_api::{Kind, KubeApi, ObjectKey};
use crate::roles::catalog::Current;
use crate::roles::model::{Desired, Password};
use crate::roles::rotation::{self, Mode, Policy, SecretState, Update};
use crate::roles::sql::{self, Statement};

/// One credentials Secret to change once the statements have run.
#[derive(Clone, Debug)]
pub struct SecretWrite {
    pub key: ObjectKey,
    pub role: String,
    pub update: Update,
    pub state: SecretState,
}

impl SecretWrite {
    /// A JSON merge patch of the Secret's data (`nextRotation` removed when rotation stops).
    fn patch(&self) -> Value {
        let b64 = |s: &str| Value::String(STANDARD.encode(s));
        json!({"data": {
            "username": b64(&self.state.username),
            "password": b64(&self.state.password),
            "nextRotation": self.state.next_rotation.as_deref().map_or(Value::Null, b64),
        }})
    }

    /// For the event: names and dates, never a password.
    pub fn note(&self) -> String {
        let when = match &self.update.next_rotation {
            Some(t) => format!(", next rotation {t}"),
            None => String::new(),
        };
        match (self.update.new_password, self.update.username == self.role) {
            (false, _) => format!("user {} rotates{when}", self.role),
            (true, true) => format!("new password for user {}{when}", self.role),
            (true, false) => format!(
                "user {} rotated to {}{when}",
                self.role, self.update.username
            ),
        }
    }
}

/// The Secrets' credentials as the plan should use them.
#[derive(Debug, Default)]
pub struct Credentials {
    /// Role (as the Secret names it) → clear-text password.
    pub passwords: BTreeMap<String, String>,
    /// Manifest role → the user its Secret names.
    pub usernames: BTreeMap<String, String>,
    pub writes: Vec<SecretWrite>,
    /// Manifest role → the rotation user in use, for every role whose old rotation users may expire.
    pub rotating: BTreeMap<String, String>,
    pub warnings: Vec<String>,
}

fn decode(secret: &Value, key: &str) -> Option<String> {
    let b64 = secret.get("data")?.get(key)?.as_str()?;
    String::from_utf8(STANDARD.decode(b64).ok()?).ok()
}

/// Reads every credentials Secret `desired` refers to and decides its rotation at `now`; new passwords come
/// from the context's password source.
pub async fn credentials<A: KubeApi>(
    ctx: &Context<A>,
    policy: &Policy,
    desired: &Desired,
    now: Timestamp,
) -> Result<Credentials, ReconcileError> {
    let mut c = Credentials::default();
    for role in desired.roles.values() {
        let Password::Secret { namespace, name } = &role.password else {
            continue;
        };
        let key = ObjectKey {
            kind: Kind::Secret,
            namespace: namespace.clone(),
            name: name.clone(),
        };
        let Some(secret) = ctx.api.get(&key).await? else {
            continue;
        };
        let Some(password) = decode(&secret, "password") else {
            continue;
        };
        let state = SecretState {
            username: decode(&secret, "username").unwrap_or_else(|| role.name.clone()),
            password,
            next_rotation: decode(&secret, "nextRotation"),
        };
        let mode = policy.mode(role).unwrap_or_else(|refusal| {
            c.warnings.push(refusal.to_string());
            None
        });
        let update = match rotation::decide(&role.name, mode, &state, now, policy.interval_days) {
            Ok(u) => u,
            Err(refusal) => {
                c.warnings.push(refusal.to_string());
                continue;
            }
        };
        let was_rotated = state.username != role.name;
        let state = match update {
            Some(update) => {
                let fresh = if update.new_password {
                    ctx.passwords.lock().expect("password source").password()
                } else {
                    String::new()
                };
                let next = update.applied(&state, fresh);
                c.writes.push(SecretWrite {
                    key,
                    role: role.name.clone(),
                    update,
                    state: next.clone(),
                });
                next
            }
            None => state,
        };
        if mode == Some(Mode::NewUser) || was_rotated {
            c.rotating.insert(role.name.clone(), state.username.clone());
        }
        c.usernames
            .insert(role.name.clone(), state.username.clone());
        c.passwords.insert(state.username, state.password);
    }
    Ok(c)
}

/// `DROP ROLE` for the rotation users of `rotating` that have outlived the retention period.
pub fn expired_drops(
    c: &Credentials,
    policy: &Policy,
    desired: &Desired,
    current: &Current,
    now: Timestamp,
) -> Vec<Statement> {
    c.rotating
        .iter()
        .flat_map(|(role, in_use)| {
            rotation::expired(
                role,
                current.roles.keys(),
                in_use,
                desired,
                now,
                policy.retention_days,
            )
        })
        .map(|name| sql::drop_role(&name))
        .collect()
}

/// Writes the Secrets: what was written (for the event) and what failed.
pub async fn write<A: KubeApi>(
    ctx: &Context<A>,
    writes: &[&SecretWrite],
) -> (Vec<String>, Vec<String>) {
    let (mut written, mut failures) = (Vec::new(), Vec::new());
    for w in writes {
        match ctx.api.merge_patch(&w.key, &w.patch()).await {
            Ok(()) => written.push(w.note()),
            Err(e) => failures.push(format!("rotating the Secret of user {}: {e}", w.role)),
        }
    }
    (written, failures)
}
