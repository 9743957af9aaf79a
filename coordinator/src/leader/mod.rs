//! Leader election on a `coordination.k8s.io/v1` Lease, so that of several
//! coordinator replicas exactly one reconciles (docs/coordinator.md).
//!
//! kube-rs 5 has no leader election, and the `kube-leader-election` crate
//! (built for kube 4) compares `renewTime` with the local clock and takes
//! the lease with an unconditional patch; this module does neither. The
//! decisions are in [`decide`]; this is the thin shell that reads and writes
//! the Lease and races the work against the renewals.
//!
//! The work runs in a task of its own and the Lease is written through a
//! client of its own, so renewals neither wait for the work's CPU nor queue
//! behind its requests: with a thousand clusters reconciling, a shared
//! client once delayed a renewal past the deadline.
//!
//! Losing the lease ends the work at once (its task is aborted at its next
//! await) and is returned as [`LeaderError::Lost`]: the binary then exits non-zero,
//! so Kubernetes restarts it as a follower, as client-go users do in
//! `OnStoppedLeading`. When the work ends by itself (SIGTERM drains the
//! controller) the lease is released, so a successor takes over at once.

pub mod decide;

use std::future::Future;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use tokio::signal::unix::{signal, SignalKind};

use decide::{decide, keep, observe, Keep, Observed, Record, Step, Timing};

/// Default name of the Lease, in the operator namespace.
pub const DEFAULT_LEASE: &str = "pgherd-coordinator-leader";

/// How long the work may drain after SIGTERM before it is aborted and the
/// Lease released: inside Kubernetes' default 30 s grace period.
const DRAIN: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "lost the leader lease {namespace}/{name} as {identity}: {reason}; \
         exiting so that a restart rejoins as a follower"
    )]
    Lost {
        namespace: String,
        name: String,
        identity: String,
        reason: String,
    },
    #[error("installing the signal handlers: {0}")]
    Signals(#[from] std::io::Error),
    #[error("the work panicked: {0}")]
    Panicked(String),
}

/// Why one write of the Lease did not go through.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    /// Someone else wrote it since it was read (409).
    #[error("conflict")]
    Conflict,
    #[error(transparent)]
    Api(#[from] kube::Error),
    #[error("timed out")]
    Timeout,
}

/// This process's identity: the pod name when known, else the host name
/// with a random suffix, so two processes on one host never share one.
pub fn identity(pod_name: Option<&str>) -> String {
    if let Some(p) = pod_name.filter(|p| !p.is_empty()) {
        return p.to_string();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "pgherd-coordinator".into());
    let mut buf = [0u8; 4];
    // Without randomness the pid still separates processes on one host.
    if getrandom::fill(&mut buf).is_err() {
        buf = std::process::id().to_be_bytes();
    }
    let suffix: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    format!("{host}_{suffix}")
}

pub struct Elector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    timing: Timing,
}

fn record(lease: &Lease, default_duration: Duration) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity.unwrap_or_default(),
        duration: spec
            .lease_duration_seconds
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(default_duration),
        transitions: spec.lease_transitions.unwrap_or(0),
        resource_version: lease.metadata.resource_version.clone().unwrap_or_default(),
    }
}

fn now_micro() -> MicroTime {
    MicroTime(Timestamp::now())
}

impl Elector {
    pub fn new(client: Client, namespace: &str, name: &str, identity: String) -> Self {
        Self::with_timing(client, namespace, name, identity, Timing::default())
    }

    pub fn with_timing(
        client: Client,
        namespace: &str,
        name: &str,
        identity: String,
        timing: Timing,
    ) -> Self {
        Elector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.into(),
            name: name.into(),
            identity,
            timing,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    fn lost(&self, reason: String) -> LeaderError {
        LeaderError::Lost {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            identity: self.identity.clone(),
            reason,
        }
    }

    /// Waits for the lease, then runs `work` while renewing it.
    ///
    /// `Ok(None)`: SIGTERM or SIGINT came before the lease was acquired, or
    /// the work did not drain in time after one.
    /// `Ok(Some(out))`: the work ended and the lease was released.
    /// `Err(Lost)`: the lease could not be renewed in time; the work was
    /// aborted the moment that was known.
    pub async fn lead<F>(&self, work: F) -> Result<Option<F::Output>, LeaderError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut observed: Option<Observed> = None;
        let (lease, renewed) = loop {
            match self.try_acquire(&mut observed).await {
                Ok(Some(won)) => break won,
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, lease = %self.name, "reading the leader lease failed; retrying")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.timing.retry) => {}
                _ = term.recv() => return Ok(None),
                _ = int.recv() => return Ok(None),
            }
        };
        tracing::info!(
            lease = %format!("{}/{}", self.namespace, self.name),
            identity = %self.identity,
            "acquired the leader lease; reconciling"
        );
        let mut work = tokio::spawn(work);
        let keeping = self.keep_leading(lease, renewed);
        tokio::pin!(keeping);
        // The work drains by itself on SIGTERM (the controller's own handler). A signal that came
        // before that handler existed reaches only these, so the drain is bounded here too.
        let mut drain_until = None;
        let out = loop {
            tokio::select! {
                out = &mut work => break Some(out),
                e = &mut keeping => {
                    work.abort();
                    tracing::error!(error = %e, "stopped leading");
                    return Err(e);
                }
                _ = term.recv(), if drain_until.is_none() => drain_until = Some(Instant::now() + DRAIN),
                _ = int.recv(), if drain_until.is_none() => drain_until = Some(Instant::now() + DRAIN),
                _ = tokio::time::sleep_until(drain_until.unwrap_or_else(Instant::now).into()),
                    if drain_until.is_some() => {
                    tracing::warn!("the work did not stop within {}s of the signal; aborting it", DRAIN.as_secs());
                    work.abort();
                    break None;
                }
            }
        };
        self.release().await;
        match out {
            Some(Ok(done)) => Ok(Some(done)),
            Some(Err(e)) => Err(LeaderError::Panicked(e.to_string())),
            None => Ok(None),
        }
    }

    /// One look at the Lease and, when the decision says so, one
    /// conditional write. `Some` when this process now holds it, with the
    /// time the winning write started.
    async fn try_acquire(
        &self,
        observed: &mut Option<Observed>,
    ) -> Result<Option<(Lease, Instant)>, kube::Error> {
        let current = self.api.get_opt(&self.name).await?;
        let now = Instant::now();
        let before = observed.as_ref().map(|o| o.record.holder.clone());
        *observed = current.as_ref().map(|l| {
            observe(
                observed.as_ref(),
                record(l, self.timing.lease_duration),
                now,
            )
        });
        let step = decide(observed.as_ref(), &self.identity, now);
        let started = Instant::now();
        let written = match (step, current) {
            (Step::Create, _) => self.create().await,
            (Step::Take, Some(lease)) => self.take(lease).await,
            (Step::Renew, Some(lease)) => self.renew(lease).await,
            (Step::Wait { holder, expires_in }, _) => {
                if before.as_deref() != Some(holder.as_str()) {
                    tracing::info!(
                        holder = %holder,
                        expires_in_s = expires_in.as_secs(),
                        "the leader lease is held by another coordinator; standing by"
                    );
                }
                return Ok(None);
            }
            (Step::Take | Step::Renew, None) => return Ok(None),
        };
        match written {
            Ok(lease) => Ok(Some((lease, started))),
            Err(WriteError::Conflict) => Ok(None),
            Err(WriteError::Api(e)) => Err(e),
            Err(WriteError::Timeout) => Ok(None),
        }
    }

    fn spec_for_me(&self, transitions: i32, acquired: MicroTime) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(self.timing.lease_duration.as_secs() as i32),
            acquire_time: Some(acquired),
            renew_time: Some(now_micro()),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    async fn create(&self) -> Result<Lease, WriteError> {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(self.name.clone()),
                namespace: Some(self.namespace.clone()),
                ..Default::default()
            },
            spec: Some(self.spec_for_me(0, now_micro())),
        };
        match self.api.create(&params(), &lease).await {
            Ok(l) => Ok(l),
            Err(e) if is_status(&e, 409) => Err(WriteError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    async fn take(&self, mut lease: Lease) -> Result<Lease, WriteError> {
        let transitions = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_transitions)
            .unwrap_or(0);
        lease.spec = Some(self.spec_for_me(transitions + 1, now_micro()));
        self.replace(&lease).await
    }

    async fn renew(&self, mut lease: Lease) -> Result<Lease, WriteError> {
        let spec = lease.spec.get_or_insert_with(Default::default);
        let acquired = spec.acquire_time.clone().unwrap_or_else(now_micro);
        let transitions = spec.lease_transitions.unwrap_or(0);
        lease.spec = Some(self.spec_for_me(transitions, acquired));
        self.replace(&lease).await
    }

    /// PUT with the resourceVersion read: the API server refuses it with a
    /// 409 when anyone wrote the Lease in between.
    async fn replace(&self, lease: &Lease) -> Result<Lease, WriteError> {
        match self.api.replace(&self.name, &params(), lease).await {
            Ok(l) => Ok(l),
            Err(e) if is_status(&e, 409) => Err(WriteError::Conflict),
            Err(e) => Err(e.into()),
        }
    }

    /// Renews every `renew_every` until a renewal cannot be completed by
    /// the deadline; returns why leadership is lost. Never returns otherwise.
    async fn keep_leading(&self, mut lease: Lease, mut renewed: Instant) -> LeaderError {
        loop {
            tokio::time::sleep(self.timing.renew_every).await;
            loop {
                let started = Instant::now();
                let deadline = renewed + self.timing.renew_deadline;
                let attempt =
                    tokio::time::timeout_at(deadline.into(), self.renew_or_reread(lease.clone()))
                        .await
                        .unwrap_or(Err((WriteError::Timeout, None)));
                match attempt {
                    Ok(l) => {
                        tracing::debug!(lease = %self.name, "renewed the leader lease");
                        lease = l;
                        renewed = started;
                        break;
                    }
                    Err((e, reread)) => {
                        let holder = reread
                            .as_ref()
                            .map(|l| record(l, self.timing.lease_duration).holder);
                        match keep(
                            holder.as_deref(),
                            &self.identity,
                            renewed,
                            Instant::now(),
                            &self.timing,
                        ) {
                            Keep::Lost(reason) => {
                                return self.lost(format!("{reason}; last error: {e}"))
                            }
                            Keep::Retry => {
                                tracing::warn!(error = %e, "renewing the leader lease failed; retrying");
                                if let Some(l) = reread {
                                    lease = l;
                                }
                                let wake = (Instant::now() + self.timing.retry).min(deadline);
                                tokio::time::sleep_until(wake.into()).await;
                            }
                        }
                    }
                }
            }
        }
    }

    /// A renewal; after a conflict, the Lease as read back, so the caller
    /// can tell "someone touched it" from "someone took it".
    async fn renew_or_reread(&self, lease: Lease) -> Result<Lease, (WriteError, Option<Lease>)> {
        match self.renew(lease).await {
            Ok(l) => Ok(l),
            Err(WriteError::Conflict) => match self.api.get_opt(&self.name).await {
                Ok(reread) => Err((WriteError::Conflict, reread)),
                Err(e) => Err((e.into(), None)),
            },
            Err(e) => Err((e, None)),
        }
    }

    /// Hands the lease over: no holder, a one-second duration, so the next
    /// candidate takes it on its next look instead of after expiry.
    async fn release(&self) {
        let attempt = async {
            for _ in 0..3 {
                let Some(mut lease) = self.api.get_opt(&self.name).await? else {
                    return Ok(false);
                };
                if record(&lease, self.timing.lease_duration).holder != self.identity {
                    return Ok(false);
                }
                let spec = lease.spec.get_or_insert_with(Default::default);
                spec.holder_identity = None;
                spec.lease_duration_seconds = Some(1);
                spec.renew_time = Some(now_micro());
                match self.replace(&lease).await {
                    Ok(_) => return Ok(true),
                    Err(WriteError::Conflict) => continue,
                    Err(WriteError::Api(e)) => return Err(e),
                    Err(WriteError::Timeout) => return Ok(false),
                }
            }
            Ok(false)
        };
        match tokio::time::timeout(Duration::from_secs(5), attempt).await {
            Ok(Ok(true)) => {
                tracing::info!(lease = %self.name, identity = %self.identity, "released the leader lease")
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "releasing the leader lease failed; it expires by itself")
            }
            Err(_) => tracing::warn!("releasing the leader lease timed out; it expires by itself"),
        }
    }
}

fn params() -> PostParams {
    PostParams {
        field_manager: Some(crate::kube_api::client::FIELD_MANAGER.into()),
        ..Default::default()
    }
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}
