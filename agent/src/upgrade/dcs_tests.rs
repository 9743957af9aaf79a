//! The instruction channel against an in-memory dynamic configuration that merges a `PATCH /config` body
//! as Patroni does (`patroni.utils.patch_config`): `null` removes a key, an object merges into an object,
//! anything else (a new key's whole object included, nulls and all) is stored as given.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use serde_json::{json, Map, Value};

use super::*;
use crate::upgrade::plan::{Outcome, Phase, ReplicaState, RsyncSource, Runner};

/// What a `PATCH /config` answers before it is applied.
#[derive(Clone, Copy)]
enum Refusal {
    /// 409: another member changed the configuration between Patroni's read and its compare-and-set.
    Conflict,
    /// 503: Patroni could not reach the DCS.
    Unavailable,
}

#[derive(Default)]
struct MemConfig {
    stored: Mutex<Value>,
    /// Answers for the next patches, in order; an empty queue applies the patch.
    refusals: Mutex<VecDeque<Refusal>>,
    patches: AtomicUsize,
}

impl MemConfig {
    fn with(stored: Value) -> Self {
        Self {
            stored: Mutex::new(stored),
            ..Self::default()
        }
    }

    fn refuse(&self, refusal: Refusal, times: usize) {
        self.refusals
            .lock()
            .unwrap()
            .extend(std::iter::repeat_n(refusal, times));
    }

    fn stored(&self) -> Value {
        self.stored.lock().unwrap().clone()
    }
}

fn merge(stored: &mut Map<String, Value>, patch: &Map<String, Value>) {
    for (key, value) in patch {
        match (value, stored.get_mut(key)) {
            (Value::Null, _) => {
                stored.remove(key);
            }
            (Value::Object(inner), Some(Value::Object(current))) => merge(current, inner),
            _ => {
                stored.insert(key.clone(), value.clone());
            }
        }
    }
}

impl DynamicConfig for MemConfig {
    async fn config(&self) -> Result<Value, patroni::Error> {
        Ok(self.stored())
    }

    async fn patch_config(&self, body: &Value) -> Result<(), patroni::Error> {
        self.patches.fetch_add(1, Ordering::SeqCst);
        let refusal = self.refusals.lock().unwrap().pop_front();
        if let Some(refusal) = refusal {
            let status = match refusal {
                Refusal::Conflict => 409,
                Refusal::Unavailable => 503,
            };
            return Err(patroni::Error::Status {
                url: "http://member:8008/config".into(),
                status,
                body: format!("refused with {status}"),
            });
        }
        let mut stored = self.stored.lock().unwrap();
        if !stored.is_object() {
            *stored = json!({});
        }
        merge(stored.as_object_mut().unwrap(), body.as_object().unwrap());
        Ok(())
    }
}

fn instruction() -> Instruction {
    Instruction {
        replicas: vec!["demo-1".into(), "demo-2".into()],
        ..Instruction::fresh(
            "20261205-1".into(),
            "15".into(),
            "16".into(),
            "demo-0".into(),
        )
    }
}

/// Every optional field set, as in the middle of a run that then fails.
fn filled() -> Instruction {
    Instruction {
        phase: Phase::SyncReplicas,
        outcome: Some(Outcome::RolledBack),
        checkpoint_lsn: Some("0/3000028".into()),
        rsync: Some(RsyncSource {
            host: "10.0.0.7".into(),
            port: 5433,
            data_name: "data".into(),
        }),
        old_sysid: Some("7450000000000000001".into()),
        message: Some("rsync failed".into()),
        runner: Some(Runner {
            pid: 4242,
            members: 3,
        }),
        ..instruction()
    }
}

fn stopped() -> MemberReport {
    MemberReport {
        state: ReplicaState::Stopped,
        error: None,
    }
}

#[tokio::test]
async fn reads_no_instruction_from_an_absent_or_null_key_and_names_a_malformed_one() {
    assert_eq!(read(&MemConfig::with(json!({"ttl": 30}))).await, Ok(None));
    assert_eq!(
        read(&MemConfig::with(json!({DCS_KEY: null}))).await,
        Ok(None)
    );

    let err = read(&MemConfig::with(json!({DCS_KEY: {"id": 7}})))
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!(
            "{DCS_KEY} in the dynamic configuration is malformed"
        )),
        "{err}"
    );

    let cfg = MemConfig::default();
    replace(&cfg, &filled()).await.unwrap();
    assert_eq!(read(&cfg).await, Ok(Some(filled())));
}

#[tokio::test]
async fn a_publish_keeps_the_replicas_reports_and_clears_what_became_none() {
    let cfg = MemConfig::with(json!({"ttl": 30, "pause": true}));
    publish(&cfg, &filled()).await.unwrap();
    report(&cfg, "demo-1", &stopped()).await.unwrap();

    // The leader's copy never holds the reports: replicas write them concurrently.
    let next = Instruction {
        phase: Phase::StartPrimary,
        ..instruction()
    };
    publish(&cfg, &next).await.unwrap();

    let back = read(&cfg).await.unwrap().unwrap();
    assert_eq!(back.members.get("demo-1"), Some(&stopped()));
    assert_eq!(
        Instruction {
            members: Default::default(),
            ..back
        },
        next
    );
    assert_eq!(
        cfg.stored()["ttl"],
        30,
        "Patroni's own keys are not touched"
    );
}

#[test]
fn clearable_names_every_optional_field() {
    let always = ["id", "from", "to", "leader", "replicas", "phase", "members"];
    let Value::Object(full) = serde_json::to_value(filled()).unwrap() else {
        panic!("an instruction serializes to an object");
    };
    let mut optional: Vec<&str> = full
        .keys()
        .map(String::as_str)
        .filter(|k| !always.contains(k))
        .collect();
    optional.sort_unstable();
    let mut clearable = CLEARABLE.to_vec();
    clearable.sort_unstable();
    assert_eq!(
        optional, clearable,
        "a new optional field must be cleared by publish"
    );
}

#[tokio::test]
async fn a_replacement_drops_the_reports_of_an_earlier_run() {
    let cfg = MemConfig::default();
    publish(&cfg, &filled()).await.unwrap();
    report(&cfg, "demo-1", &stopped()).await.unwrap();

    let fresh = Instruction {
        id: "20261205-2".into(),
        ..instruction()
    };
    replace(&cfg, &fresh).await.unwrap();
    assert_eq!(read(&cfg).await, Ok(Some(fresh)));
}

#[tokio::test]
async fn concurrent_reports_both_land_through_conflicts() {
    let cfg = MemConfig::default();
    publish(&cfg, &instruction()).await.unwrap();
    cfg.refuse(Refusal::Conflict, 3);

    let synced = MemberReport {
        state: ReplicaState::SyncFailed,
        error: Some("rsync: connection refused".into()),
    };
    let stopped = stopped();
    let (a, b) = tokio::join!(
        report(&cfg, "demo-1", &stopped),
        report(&cfg, "demo-2", &synced)
    );
    a.unwrap();
    b.unwrap();

    let members = read(&cfg).await.unwrap().unwrap().members;
    assert_eq!(members.get("demo-1"), Some(&stopped));
    assert_eq!(members.get("demo-2"), Some(&synced));
}

/// The retry loop without its waits.
const NO_WAIT: Retry = Retry {
    attempts: RETRY.attempts,
    conflict_first: Duration::ZERO,
    conflict_step: Duration::ZERO,
    other: Duration::ZERO,
};

#[tokio::test]
async fn a_patch_outlasts_conflicts_and_a_short_outage() {
    let cfg = MemConfig::default();
    cfg.refuse(Refusal::Conflict, 2);
    cfg.refuse(Refusal::Unavailable, 3);
    patch_with(&cfg, &json!({"pause": true}), &NO_WAIT)
        .await
        .unwrap();
    assert_eq!(cfg.stored(), json!({"pause": true}));
    assert_eq!(cfg.patches.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn a_patch_gives_up_after_twenty_attempts_with_the_last_answer() {
    let cfg = MemConfig::with(json!({"pause": true}));
    cfg.refuse(Refusal::Conflict, 5);
    cfg.refuse(Refusal::Unavailable, 50);

    let err = patch_with(&cfg, &json!({"pause": false}), &NO_WAIT)
        .await
        .unwrap_err();

    assert!(
        err.starts_with("updating the dynamic configuration: "),
        "{err}"
    );
    assert!(err.contains("HTTP 503"), "{err}");
    assert_eq!(cfg.patches.load(Ordering::SeqCst), 20);
    assert_eq!(cfg.stored(), json!({"pause": true}), "nothing was applied");
}

#[test]
fn conflicts_back_off_briefly_and_an_unreachable_patroni_by_a_second() {
    let status = |status| patroni::Error::Status {
        url: "http://member:8008/config".into(),
        status,
        body: String::new(),
    };
    let conflicts: Duration = (0..RETRY.attempts)
        .map(|a| RETRY.delay(&status(409), a))
        .sum();
    let outage: Duration = (0..RETRY.attempts)
        .map(|a| RETRY.delay(&status(503), a))
        .sum();
    assert_eq!(RETRY.delay(&status(409), 0), Duration::from_millis(100));
    assert_eq!(RETRY.delay(&status(409), 19), Duration::from_millis(1050));
    assert_eq!(conflicts, Duration::from_millis(11_500));
    assert_eq!(outage, Duration::from_secs(20));
}
