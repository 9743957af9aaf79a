//! Restart policy for a crashed Patroni.
//!
//! Spilo's runit `finish` script waits 30·n seconds and gives up for good after the fifth abnormal exit over
//! the container's whole lifetime, however far apart the crashes were. A crash every few days therefore ends
//! with a pod that is "Running" but has no Patroni. Here the delay grows exponentially while Patroni keeps
//! crashing quickly, and resets once a run has been stable for a while; the agent never gives up, because a
//! pod without Patroni is worse than one that keeps trying and says so in its logs.

use std::time::Duration;

/// Exponential backoff with a reset after a stable run. Pure: the caller measures run times.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    stable_after: Duration,
    next: Duration,
    consecutive: u32,
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new(
            Duration::from_secs(1),
            Duration::from_secs(60),
            Duration::from_secs(120),
        )
    }
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration, stable_after: Duration) -> Self {
        Self {
            initial,
            max,
            stable_after,
            next: initial,
            consecutive: 0,
        }
    }

    /// Records an exit after a run of `ran_for` and returns how long to wait before the next start.
    pub fn on_exit(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.stable_after {
            self.next = self.initial;
            self.consecutive = 0;
        }
        let delay = self.next;
        self.consecutive += 1;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    /// Crashes since the last stable run (for logs and metrics).
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let mut b = Backoff::new(S(1), S(10), S(60));
        let delays: Vec<_> = (0..6).map(|_| b.on_exit(S(0)).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        assert_eq!(b.consecutive_failures(), 6);
    }

    #[test]
    fn resets_after_a_stable_run() {
        let mut b = Backoff::new(S(1), S(60), S(120));
        for _ in 0..5 {
            b.on_exit(S(1));
        }
        assert_eq!(
            b.on_exit(S(120)),
            S(1),
            "a run of stable_after resets the delay"
        );
        assert_eq!(b.consecutive_failures(), 1);
        assert_eq!(b.on_exit(S(3)), S(2));
    }

    #[test]
    fn never_gives_up_and_never_exceeds_the_cap() {
        let mut b = Backoff::default();
        for i in 0..1000u64 {
            let d = b.on_exit(S(i % 7));
            assert!(d <= S(60) && d >= S(1));
        }
    }
}
