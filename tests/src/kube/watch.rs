//! Watch: the event history every write appends to, and the per-request watcher that replays it from a
//! resourceVersion, follows new events, filters by namespace and selectors (an object that stops matching
//! is sent as DELETED, one that starts matching as ADDED), and sends bookmarks.
//!
//! The history keeps the last `capacity` events; a watch from a resourceVersion older than that gets
//! `410 Gone` (`Expired`), as from a compacted etcd. [`History::compact`] drops it all, for tests.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::broadcast;

use super::select::Selectors;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One write, as stored: the storage key, the object after it (for DELETED, the last state with the
/// deletion's resourceVersion) and before it.
#[derive(Debug)]
pub struct Change {
    pub rv: u64,
    pub storage: String,
    pub type_: EventType,
    pub object: Value,
    pub prev: Option<Value>,
}

/// Where a watcher receives the events written after it started.
pub type Receiver = broadcast::Receiver<Arc<Change>>;

pub struct History {
    events: VecDeque<Arc<Change>>,
    capacity: usize,
    /// Watches from a resourceVersion below this are expired.
    oldest: u64,
    tx: broadcast::Sender<Arc<Change>>,
}

impl History {
    pub fn new(capacity: usize) -> Self {
        History {
            events: VecDeque::new(),
            capacity,
            oldest: 0,
            tx: broadcast::channel(capacity.clamp(1024, 65536)).0,
        }
    }

    pub fn push(&mut self, change: Change) {
        let c = Arc::new(change);
        if self.events.len() >= self.capacity {
            if let Some(old) = self.events.pop_front() {
                self.oldest = old.rv;
            }
        }
        self.events.push_back(c.clone());
        let _ = self.tx.send(c);
    }

    /// Forgets every event up to `rv`, so a watch from an older version gets 410.
    pub fn compact(&mut self, rv: u64) {
        self.events.retain(|e| e.rv > rv);
        self.oldest = self.oldest.max(rv);
    }

    /// Events after `rv`, and a receiver for the ones to come; `Err` when `rv` is too old.
    pub fn since(&self, rv: u64) -> Result<(Vec<Arc<Change>>, Receiver), u64> {
        if rv < self.oldest {
            return Err(self.oldest);
        }
        let past = self.events.iter().filter(|e| e.rv > rv).cloned().collect();
        Ok((past, self.tx.subscribe()))
    }
}

/// What a watch selects.
#[derive(Clone, Debug)]
pub struct Filter {
    pub storage: String,
    pub namespace: Option<String>,
    pub selectors: Selectors,
}

impl Filter {
    pub fn matches(&self, obj: &Value) -> bool {
        let ns_ok = match &self.namespace {
            Some(ns) => obj.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns),
            None => true,
        };
        ns_ok && self.selectors.matches(obj)
    }

    /// The event a watcher with this filter sees for a change, if any.
    pub fn event(&self, c: &Change) -> Option<(EventType, Value)> {
        if c.storage != self.storage {
            return None;
        }
        let now = self.matches(&c.object);
        let before = c.prev.as_ref().is_some_and(|p| self.matches(p));
        let t = match (c.type_, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Deleted, _, true) => EventType::Deleted,
            (EventType::Modified, true, true) => EventType::Modified,
            (EventType::Modified, false, true) => EventType::Added,
            (EventType::Modified, true, false) => EventType::Deleted,
            _ => return None,
        };
        Some((t, c.object.clone()))
    }
}

/// One event of a watch stream: `ADDED`/`MODIFIED`/`DELETED` with an object in storage form,
/// `BOOKMARK` with a resourceVersion, or `ERROR` with a Status.
#[derive(Clone, Debug, PartialEq)]
pub enum WatchEvent {
    Object(EventType, Value),
    Bookmark { rv: u64, initial_events_end: bool },
    Error(Value),
}

pub struct Watcher {
    pending: VecDeque<WatchEvent>,
    rx: Option<broadcast::Receiver<Arc<Change>>>,
    filter: Filter,
    last_rv: u64,
    bookmarks: Option<tokio::time::Interval>,
}

impl Watcher {
    /// `initial` are the synthetic ADDED events (and end bookmark) of a watch without a resourceVersion
    /// or with `sendInitialEvents`; `past` are history events after the requested version.
    pub fn new(
        filter: Filter,
        initial: Vec<WatchEvent>,
        past: Vec<Arc<Change>>,
        rx: broadcast::Receiver<Arc<Change>>,
        start_rv: u64,
        bookmark_every: Option<Duration>,
    ) -> Self {
        let mut pending: VecDeque<WatchEvent> = initial.into();
        let mut last_rv = start_rv;
        for c in past {
            last_rv = last_rv.max(c.rv);
            if let Some((t, o)) = filter.event(&c) {
                pending.push_back(WatchEvent::Object(t, o));
            }
        }
        let bookmarks = bookmark_every.map(|d| {
            let mut i = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            i
        });
        Watcher {
            pending,
            rx: Some(rx),
            filter,
            last_rv,
            bookmarks,
        }
    }

    /// A watcher that sends one `410 Gone` error and ends.
    pub fn expired(requested: u64, oldest: u64) -> Self {
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": format!("too old resource version: {requested} ({oldest})"),
            "reason": "Expired", "code": 410});
        Watcher {
            pending: VecDeque::from([WatchEvent::Error(status)]),
            rx: None,
            filter: Filter {
                storage: String::new(),
                namespace: None,
                selectors: Selectors::default(),
            },
            last_rv: requested,
            bookmarks: None,
        }
    }

    /// The next event; `None` when the watch ends (history overrun or store gone).
    pub async fn next(&mut self) -> Option<WatchEvent> {
        loop {
            if let Some(e) = self.pending.pop_front() {
                return Some(e);
            }
            let rx = self.rx.as_mut()?;
            let tick = async {
                match self.bookmarks.as_mut() {
                    Some(i) => {
                        i.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = rx.recv() => match r {
                    Ok(c) => {
                        if c.rv <= self.last_rv {
                            continue;
                        }
                        self.last_rv = c.rv;
                        if let Some((t, o)) = self.filter.event(&c) {
                            return Some(WatchEvent::Object(t, o));
                        }
                    }
                    // A watcher that fell behind is closed; the client re-watches from its last version.
                    Err(_) => return None,
                },
                _ = tick => return Some(WatchEvent::Bookmark { rv: self.last_rv, initial_events_end: false }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(rv: u64, t: EventType, labels: Value, prev: Option<Value>) -> Change {
        Change {
            rv,
            storage: "/pods".into(),
            type_: t,
            object: json!({"metadata": {"name": "p", "namespace": "ns", "labels": labels}}),
            prev: prev.map(|l| json!({"metadata": {"name": "p", "namespace": "ns", "labels": l}})),
        }
    }

    #[test]
    fn selector_transitions_become_added_and_deleted() {
        let f = Filter {
            storage: "/pods".into(),
            namespace: Some("ns".into()),
            selectors: Selectors::parse(Some("spilo-role=master"), None).unwrap(),
        };
        let m = json!({"spilo-role": "master"});
        let r = json!({"spilo-role": "replica"});
        let t = |c: Change| f.event(&c).map(|(t, _)| t);
        assert_eq!(
            t(change(1, EventType::Added, m.clone(), None)),
            Some(EventType::Added)
        );
        assert_eq!(t(change(2, EventType::Added, r.clone(), None)), None);
        assert_eq!(
            t(change(3, EventType::Modified, m.clone(), Some(r.clone()))),
            Some(EventType::Added)
        );
        assert_eq!(
            t(change(4, EventType::Modified, r.clone(), Some(m.clone()))),
            Some(EventType::Deleted)
        );
        assert_eq!(
            t(change(5, EventType::Modified, m.clone(), Some(m.clone()))),
            Some(EventType::Modified)
        );
        assert_eq!(t(change(6, EventType::Deleted, r, None)), None);
        let mut other = change(7, EventType::Added, m, None);
        other.storage = "/configmaps".into();
        assert_eq!(t(other), None);
    }

    #[tokio::test]
    async fn history_replays_follows_and_expires() {
        let mut h = History::new(3);
        for rv in 1..=3 {
            h.push(change(rv, EventType::Added, json!({}), None));
        }
        let f = Filter {
            storage: "/pods".into(),
            namespace: None,
            selectors: Selectors::default(),
        };
        let (past, rx) = h.since(1).unwrap();
        assert_eq!(past.len(), 2);
        let mut w = Watcher::new(f, vec![], past, rx, 1, Some(Duration::from_millis(50)));
        h.push(change(4, EventType::Modified, json!({}), Some(json!({}))));
        let mut types = vec![];
        for _ in 0..3 {
            match w.next().await.unwrap() {
                WatchEvent::Object(t, o) => types.push((t, o["metadata"]["name"].clone())),
                e => panic!("{e:?}"),
            }
        }
        assert_eq!(
            types.iter().map(|t| t.0).collect::<Vec<_>>(),
            [EventType::Added, EventType::Added, EventType::Modified]
        );
        assert_eq!(
            w.next().await,
            Some(WatchEvent::Bookmark {
                rv: 4,
                initial_events_end: false
            })
        );
        // The history holds 3 events: rv 2..4; version 1 is still servable (events after it are kept).
        assert!(h.since(1).is_ok());
        h.push(change(5, EventType::Added, json!({}), None));
        assert_eq!(h.since(1).unwrap_err(), 2);
        h.compact(5);
        assert!(h.since(4).is_err() && h.since(5).is_ok());
    }
}
