//! The election's decisions, without I/O or a wall clock: given what the
//! Lease held when it was read, when this process first saw that exact
//! record, and its own identity, what to do next.
//!
//! Expiry is judged by the observer's monotonic clock, as client-go does:
//! a record counts as expired `leaseDurationSeconds` after this process
//! first saw it unchanged, never by comparing the stored `renewTime` with
//! the local wall clock, so clock skew between nodes cannot hand the lease
//! to a second coordinator while the first still acts.

use std::time::{Duration, Instant};

/// The intervals of the election (client-go's defaults, renewing less often).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a follower waits after the record last changed before taking it.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a follower looks again, and a failed renewal is retried.
    pub retry: Duration,
    /// A leader whose last successful renewal started this long ago stops.
    /// Shorter than `lease_duration`, so it stops before anyone may take over.
    pub renew_deadline: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(5),
            retry: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
        }
    }
}

/// What the election reads from a Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Empty when nobody holds it (never taken, or released).
    pub holder: String,
    /// `leaseDurationSeconds`; the election's own when the Lease has none.
    pub duration: Duration,
    pub transitions: i32,
    /// Changes with every write, so it tells a renewal apart from a stale read.
    pub resource_version: String,
}

/// A record and when this process first saw it, by its own monotonic clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    pub record: Record,
    pub since: Instant,
}

/// Keeps the earlier observation time while the record is unchanged: only a
/// change (a renewal, a new holder) restarts the expiry countdown.
pub fn observe(prev: Option<&Observed>, fetched: Record, now: Instant) -> Observed {
    match prev {
        Some(p) if p.record == fetched => p.clone(),
        _ => Observed {
            record: fetched,
            since: now,
        },
    }
}

/// What a process that does not lead yet does with the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// There is no Lease: create it, holding it.
    Create,
    /// Unheld or expired: write this identity as holder, conditional on the
    /// resourceVersion read (a 409 means another candidate was faster).
    Take,
    /// The record names this identity already (a restart under the same pod
    /// name): renew it and lead.
    Renew,
    /// Held by another identity that renewed within the lease duration.
    Wait {
        holder: String,
        expires_in: Duration,
    },
}

pub fn decide(observed: Option<&Observed>, me: &str, now: Instant) -> Step {
    let Some(o) = observed else {
        return Step::Create;
    };
    let r = &o.record;
    if r.holder == me {
        return Step::Renew;
    }
    if r.holder.is_empty() {
        return Step::Take;
    }
    let expires = o.since + r.duration;
    if now >= expires {
        Step::Take
    } else {
        Step::Wait {
            holder: r.holder.clone(),
            expires_in: expires - now,
        }
    }
}

/// What the leader does after a renewal attempt failed or had to re-read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Keep {
    /// Still ours and still within the deadline: try again.
    Retry,
    /// Stop acting now.
    Lost(String),
}

/// `renewed` is when the last successful renewal (or the acquisition)
/// started; `holder` the holder read back after a conflict, if any.
pub fn keep(
    holder: Option<&str>,
    me: &str,
    renewed: Instant,
    now: Instant,
    timing: &Timing,
) -> Keep {
    match holder {
        Some(h) if h != me => {
            let by = if h.is_empty() { "nobody" } else { h };
            return Keep::Lost(format!("the lease is now held by {by}"));
        }
        _ => {}
    }
    let since = now.saturating_duration_since(renewed);
    if since >= timing.renew_deadline {
        Keep::Lost(format!(
            "not renewed for {}s (deadline {}s)",
            since.as_secs(),
            timing.renew_deadline.as_secs()
        ))
    } else {
        Keep::Retry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(holder: &str, rv: &str) -> Record {
        Record {
            holder: holder.into(),
            duration: Duration::from_secs(15),
            transitions: 0,
            resource_version: rv.into(),
        }
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn a_missing_lease_is_created() {
        assert_eq!(decide(None, "a", Instant::now()), Step::Create);
    }

    #[test]
    fn an_unheld_or_released_lease_is_taken_at_once() {
        let t0 = Instant::now();
        let o = observe(None, rec("", "1"), t0);
        assert_eq!(decide(Some(&o), "a", t0), Step::Take);
    }

    #[test]
    fn our_own_record_is_renewed() {
        let t0 = Instant::now();
        let o = observe(None, rec("a", "1"), t0);
        assert_eq!(decide(Some(&o), "a", t0), Step::Renew);
    }

    #[test]
    fn another_holder_is_waited_for_until_the_unchanged_record_expires() {
        let t0 = Instant::now();
        let o = observe(None, rec("b", "7"), t0);
        assert_eq!(
            decide(Some(&o), "a", t0 + secs(5)),
            Step::Wait {
                holder: "b".into(),
                expires_in: secs(10)
            }
        );
        // Seen again unchanged: the countdown keeps running from the first sighting.
        let o = observe(Some(&o), rec("b", "7"), t0 + secs(14));
        assert_eq!(o.since, t0);
        assert_eq!(decide(Some(&o), "a", t0 + secs(15)), Step::Take);
    }

    #[test]
    fn a_renewal_restarts_the_countdown() {
        let t0 = Instant::now();
        let o = observe(None, rec("b", "7"), t0);
        let o = observe(Some(&o), rec("b", "8"), t0 + secs(12));
        assert_eq!(o.since, t0 + secs(12));
        assert!(matches!(
            decide(Some(&o), "a", t0 + secs(20)),
            Step::Wait { .. }
        ));
        assert_eq!(decide(Some(&o), "a", t0 + secs(27)), Step::Take);
    }

    #[test]
    fn a_stale_renew_time_does_not_count_only_the_observers_clock_does() {
        // The record carries no time at all: however old the holder's
        // renewTime (clock skew), a fresh observer waits a full duration.
        let t0 = Instant::now();
        let o = observe(None, rec("b", "7"), t0);
        assert!(matches!(
            decide(Some(&o), "a", t0 + secs(14)),
            Step::Wait { .. }
        ));
    }

    #[test]
    fn the_records_own_duration_is_honoured() {
        let t0 = Instant::now();
        let mut r = rec("b", "7");
        r.duration = secs(60);
        let o = observe(None, r, t0);
        assert!(matches!(
            decide(Some(&o), "a", t0 + secs(30)),
            Step::Wait { .. }
        ));
        assert_eq!(decide(Some(&o), "a", t0 + secs(60)), Step::Take);
    }

    #[test]
    fn the_leader_retries_until_the_deadline_then_stops() {
        let t = Timing::default();
        let t0 = Instant::now();
        assert_eq!(keep(None, "a", t0, t0 + secs(9), &t), Keep::Retry);
        assert_eq!(keep(Some("a"), "a", t0, t0 + secs(9), &t), Keep::Retry);
        assert!(
            matches!(keep(None, "a", t0, t0 + secs(10), &t), Keep::Lost(m) if m.contains("not renewed for 10s"))
        );
    }

    #[test]
    fn the_leader_stops_at_once_when_someone_else_holds_the_lease() {
        let t = Timing::default();
        let t0 = Instant::now();
        assert_eq!(
            keep(Some("b"), "a", t0, t0, &t),
            Keep::Lost("the lease is now held by b".into())
        );
        assert_eq!(
            keep(Some(""), "a", t0, t0, &t),
            Keep::Lost("the lease is now held by nobody".into())
        );
    }

    #[test]
    fn the_leader_stops_before_a_follower_may_take_over() {
        // The follower's countdown starts no earlier than the leader's last
        // successful renewal started, so the deadline must come first.
        let t = Timing::default();
        assert!(t.renew_deadline < t.lease_duration);
        assert!(t.renew_every + t.retry < t.renew_deadline);
    }
}
