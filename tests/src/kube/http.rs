//! HTTPS front: TLS, bearer-token authentication, routing of the REST paths to the store, content
//! negotiation (Tables for kubectl, JSON otherwise; protobuf and CBOR are never offered), streaming
//! watches, and the scale subresource.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use hyper::body::Incoming;
use hyper::{Request, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::discovery;
use super::error::Error;
use super::store::Store;

/// What every request handler shares.
pub struct Shared {
    pub store: Arc<Store>,
    /// bearer token → user name
    pub tokens: RwLock<HashMap<String, String>>,
    /// `host:port` clients are told to use (`/api`'s serverAddressByClientCIDRs).
    pub server_address: String,
    pub bookmark_every: Duration,
    /// The last requests, `METHOD path?query [Accept] body: Content-Type by user`, for tests that check
    /// what a client asked.
    pub requests: Mutex<VecDeque<String>>,
    /// The last writes with their time and answer (`time METHOD path?query by user -> status`): whether a
    /// client's write was refused (a `409` on a stale resourceVersion) is what a failed failover test needs.
    pub writes: Mutex<VecDeque<String>>,
    /// Every request, by user, verb and resource.
    pub counts: super::counts::Counter,
    /// Where `pods/{name}/log` comes from: the pod runner, while one runs.
    pub pod_logs: RwLock<Option<Arc<dyn super::rest::PodLogs>>>,
}

/// A whole body or a stream of chunks (watches).
pub enum Body {
    Full(Option<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<std::result::Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }
}

pub(super) fn respond(code: u16, v: &Value) -> Response<Body> {
    let mut body = serde_json::to_vec(v).unwrap_or_default();
    body.push(b'\n');
    Response::builder()
        .status(code)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Full(Some(body.into())))
        .expect("response")
}

fn error(e: &Error) -> Response<Body> {
    respond(e.code, &e.to_status())
}

/// Accepts TLS connections until the task is aborted; each connection is served on its own task, and all
/// of them end with this one.
pub async fn serve(listener: TcpListener, tls: tokio_rustls::TlsAcceptor, shared: Arc<Shared>) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        while conns.try_join_next().is_some() {}
        let (tls, shared) = (tls.clone(), shared.clone());
        conns.spawn(async move {
            let Ok(stream) = tls.accept(tcp).await else {
                return;
            };
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(handle(req, shared).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(super) fn query(req: &Request<Incoming>) -> HashMap<String, String> {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

pub(super) struct Target {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
    pub(super) ns: Option<String>,
    pub(super) name: Option<String>,
    pub(super) sub: Option<String>,
    pub(super) watch: bool,
}

fn target(group: &str, version: &str, rest: &[&str]) -> Option<Target> {
    let (watch, rest) = match rest.first() {
        Some(&"watch") => (true, &rest[1..]),
        _ => (false, rest),
    };
    let ns_scoped = rest.len() >= 3
        && rest[0] == "namespaces"
        && !(rest.len() == 3 && matches!(rest[2], "status" | "finalize"));
    let (ns, rest) = if ns_scoped {
        (Some(rest[1].to_string()), &rest[2..])
    } else {
        (None, rest)
    };
    if rest.is_empty() || rest.len() > 3 {
        return None;
    }
    Some(Target {
        group: group.into(),
        version: version.into(),
        plural: rest[0].into(),
        ns,
        name: rest.get(1).map(|s| s.to_string()),
        sub: rest.get(2).map(|s| s.to_string()),
        watch,
    })
}

async fn handle(req: Request<Incoming>, shared: Arc<Shared>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let token = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let user = token.and_then(|t| {
        shared
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(t)
            .cloned()
    });
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (verb, resource) = super::counts::verb(req.method(), &segs, req.uri().query());
    shared
        .counts
        .add(user.as_deref().unwrap_or("-"), verb, resource);
    {
        let mut log = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= 2000 {
            log.pop_front();
        }
        let ctype = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let ctype = if ctype.is_empty() {
            String::new()
        } else {
            format!(" body: {ctype}")
        };
        let by = user.as_deref().unwrap_or("-");
        log.push_back(format!(
            "{} {} [{accept}]{ctype} by {by}",
            req.method(),
            req.uri()
        ));
    }
    let public = matches!(
        segs.first(),
        Some(&("version" | "healthz" | "livez" | "readyz"))
    );
    if !public && user.is_none() {
        return error(&Error::new(401, "Unauthorized", "Unauthorized"));
    }
    let reg = || shared.store.registry();
    let not_found = || error(&Error::no_resource());
    let t = match segs.as_slice() {
        ["version"] => return respond(200, &discovery::version()),
        ["healthz" | "livez" | "readyz", ..] => {
            return Response::new(Body::Full(Some(Bytes::from_static(b"ok"))));
        }
        ["api"] => return respond(200, &discovery::core_versions(&shared.server_address)),
        ["apis"] => return respond(200, &discovery::group_list(&reg())),
        ["apis", g] => {
            return discovery::group(&reg(), g)
                .map(|v| respond(200, &v))
                .unwrap_or_else(not_found)
        }
        ["api", v] => {
            return discovery::resource_list(&reg(), "", v)
                .map(|v| respond(200, &v))
                .unwrap_or_else(not_found)
        }
        ["apis", g, v] => {
            return discovery::resource_list(&reg(), g, v)
                .map(|v| respond(200, &v))
                .unwrap_or_else(not_found)
        }
        ["openapi", "v3"] => return respond(200, &discovery::openapi_index(&reg())),
        ["openapi", "v3", "api", v] => {
            return discovery::openapi_gv(&reg(), "", v)
                .map(|v| respond(200, &v))
                .unwrap_or_else(not_found)
        }
        ["openapi", "v3", "apis", g, v] => {
            return discovery::openapi_gv(&reg(), g, v)
                .map(|v| respond(200, &v))
                .unwrap_or_else(not_found)
        }
        ["api", v, rest @ ..] => target("", v, rest),
        ["apis", g, v, rest @ ..] => target(g, v, rest),
        _ => None,
    };
    let Some(t) = t else {
        return not_found();
    };
    let write = (req.method() != hyper::Method::GET).then(|| {
        format!(
            "{} {} by {}",
            req.method(),
            req.uri(),
            user.as_deref().unwrap_or("-")
        )
    });
    let resp = match super::rest::resource(req, &shared, t, &accept).await {
        Ok(r) => r,
        Err(e) => error(&e),
    };
    if let Some(line) = write {
        let mut log = shared.writes.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() >= 2000 {
            log.pop_front();
        }
        log.push_back(format!(
            "{} {line} -> {}",
            jiff::Timestamp::now(),
            resp.status().as_u16()
        ));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_query_decoding() {
        let t = target("", "v1", &["namespaces", "ns", "pods", "p", "status"]).unwrap();
        assert_eq!(
            (
                t.ns.as_deref(),
                t.plural.as_str(),
                t.name.as_deref(),
                t.sub.as_deref()
            ),
            (Some("ns"), "pods", Some("p"), Some("status"))
        );
        let t = target("", "v1", &["namespaces", "ns", "status"]).unwrap();
        assert_eq!(
            (t.ns, t.plural.as_str(), t.name.as_deref(), t.sub.as_deref()),
            (None, "namespaces", Some("ns"), Some("status"))
        );
        let t = target("apps", "v1", &["watch", "statefulsets"]).unwrap();
        assert!(t.watch && t.ns.is_none() && t.name.is_none());
        assert!(target("", "v1", &[]).is_none());
        assert_eq!(
            decode("spilo-role%20in%20(master%2Creplica)"),
            "spilo-role in (master,replica)"
        );
        assert_eq!(decode("a+b%3Dc"), "a b=c");
        assert_eq!(decode("100%"), "100%");
    }
}
