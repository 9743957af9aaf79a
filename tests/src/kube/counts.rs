//! Per-request counters by user, Kubernetes verb and resource. The request log keeps only the last 2000 lines; a
//! benchmark of 1,000 clusters makes far more requests, and needs totals, not lines.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use hyper::Method;

/// Verbs that change stored state.
pub const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

type Key = (String, &'static str, String);

/// Counts by (user, verb, resource); unauthenticated requests count under user `-`, paths that are not
/// resources (discovery, health) under resource `""`.
#[derive(Default)]
pub struct Counter(Mutex<HashMap<Key, u64>>);

impl Counter {
    pub fn add(&self, user: &str, verb: &'static str, resource: &str) {
        let mut m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry((user.to_string(), verb, resource.to_string()))
            .or_insert(0) += 1;
    }

    pub fn snapshot(&self) -> RequestCounts {
        let m = self.0.lock().unwrap_or_else(|e| e.into_inner());
        RequestCounts(
            m.iter()
                .map(|((u, v, r), n)| ((u.clone(), v.to_string(), r.clone()), *n))
                .collect(),
        )
    }
}

/// A snapshot of the counters, (user, verb, resource) → requests; subtract two to count what happened in
/// between.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts(pub BTreeMap<(String, String, String), u64>);

impl RequestCounts {
    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    pub fn writes(&self) -> u64 {
        self.sum(|_, v, _| WRITE_VERBS.contains(&v))
    }

    pub fn reads(&self) -> u64 {
        self.total() - self.writes()
    }

    pub fn verb(&self, verb: &str) -> u64 {
        self.sum(|_, v, _| v == verb)
    }

    /// Only the requests of `user`.
    pub fn user(&self, user: &str) -> RequestCounts {
        self.filter(|u, _, _| u == user)
    }

    /// Only the requests for `resource` (a plural: `leases`, `statefulsets`).
    pub fn resource(&self, resource: &str) -> RequestCounts {
        self.filter(|_, _, r| r == resource)
    }

    /// All but the requests for `resource`.
    pub fn except(&self, resource: &str) -> RequestCounts {
        self.filter(|_, _, r| r != resource)
    }

    fn filter(&self, f: impl Fn(&str, &str, &str) -> bool) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .filter(|((u, v, r), _)| f(u, v, r))
                .map(|(k, n)| (k.clone(), *n))
                .collect(),
        )
    }

    /// What was counted after `earlier` was taken.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(k, n)| (k.clone(), n - earlier.0.get(k).copied().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    fn sum(&self, f: impl Fn(&str, &str, &str) -> bool) -> u64 {
        self.0
            .iter()
            .filter(|((u, v, r), _)| f(u, v, r))
            .map(|(_, n)| n)
            .sum()
    }
}

/// The Kubernetes verb and resource (plural) of a request: `watch` and `list` are GETs, `deletecollection`
/// a DELETE, without a name; discovery and health paths are `get` of resource `""`.
pub fn verb<'a>(method: &Method, segs: &[&'a str], query: Option<&str>) -> (&'static str, &'a str) {
    let watch = segs.contains(&"watch")
        || query
            .unwrap_or_default()
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1");
    // A resource path has a name when, after the group-version prefix and an optional
    // `namespaces/<ns>`, a second segment follows the plural.
    let rest: &[&str] = match segs {
        ["api", _, rest @ ..] => rest,
        ["apis", _, _, rest @ ..] => rest,
        _ => &[],
    };
    let rest = match rest {
        ["watch", r @ ..] => r,
        r => r,
    };
    let rest = match rest {
        ["namespaces", _, r @ ..] if !r.is_empty() => r,
        r => r,
    };
    let named = rest.len() >= 2;
    let resource = !rest.is_empty();
    let verb = match *method {
        Method::GET if resource && watch => "watch",
        Method::GET if resource && !named => "list",
        Method::GET => "get",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    (verb, rest.first().copied().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(method: Method, path: &str, q: Option<&str>) -> &'static str {
        let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        verb(&method, &segs, q).0
    }

    #[test]
    fn resources_of_paths() {
        let r = |path: &str| {
            let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
            verb(&Method::GET, &segs, None).1.to_string()
        };
        assert_eq!(
            r("/apis/coordination.k8s.io/v1/namespaces/d/leases/l"),
            "leases"
        );
        assert_eq!(r("/api/v1/watch/namespaces/d/pods"), "pods");
        assert_eq!(r("/api/v1/namespaces/d"), "namespaces");
        assert_eq!(
            r("/apis/acid.zalan.do/v1/namespaces/d/postgresqls/x/status"),
            "postgresqls"
        );
        assert_eq!(r("/apis"), "");
    }

    #[test]
    fn verbs_of_paths() {
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a/pods", None), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a/pods/p", None), "get");
        assert_eq!(
            v(
                Method::GET,
                "/api/v1/namespaces/a/pods",
                Some("watch=true&x=1")
            ),
            "watch"
        );
        assert_eq!(v(Method::GET, "/api/v1/watch/pods", None), "watch");
        assert_eq!(v(Method::GET, "/api/v1/namespaces", None), "list");
        assert_eq!(v(Method::GET, "/api/v1/namespaces/a", None), "get");
        assert_eq!(v(Method::GET, "/apis/apps/v1/statefulsets", None), "list");
        assert_eq!(v(Method::GET, "/apis", None), "get");
        assert_eq!(v(Method::GET, "/version", None), "get");
        assert_eq!(
            v(
                Method::PATCH,
                "/apis/acid.zalan.do/v1/namespaces/a/postgresqls/x/status",
                None
            ),
            "patch"
        );
        assert_eq!(
            v(Method::DELETE, "/api/v1/namespaces/a/pods", None),
            "deletecollection"
        );
        assert_eq!(
            v(Method::DELETE, "/api/v1/namespaces/a/pods/p", None),
            "delete"
        );
        assert_eq!(
            v(
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/a/leases/l",
                None
            ),
            "update"
        );
    }

    #[test]
    fn snapshots_subtract_and_split() {
        let c = Counter::default();
        c.add("a", "get", "pods");
        c.add("a", "patch", "pods");
        let before = c.snapshot();
        c.add("b", "create", "leases");
        c.add("a", "get", "pods");
        let d = c.snapshot().since(&before);
        assert_eq!((d.total(), d.writes(), d.reads()), (2, 1, 1));
        assert_eq!(d.user("b").writes(), 1);
        assert_eq!(d.except("leases").writes(), 0);
        assert_eq!(c.snapshot().user("a").verb("get"), 2);
        assert_eq!(c.snapshot().resource("pods").total(), 3);
    }
}
