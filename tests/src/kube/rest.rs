//! The REST verbs of one resource path: list (with chunking), get, create, update, patch, delete,
//! deletecollection, watch (streamed), the status and scale subresources, and Tables for kubectl.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::error::{Error, Result};
use super::events;
use super::http::{query, respond, Body, Shared, Target};
use super::resources::ResourceType;
use super::select::Selectors;
use super::store::{DeleteOptions, PatchType, Propagation, WriteOptions};
use super::table;
use super::watch::WatchEvent;

fn manager(q: &HashMap<String, String>, req: &Request<Incoming>) -> String {
    if let Some(m) = q.get("fieldManager") {
        return m.clone();
    }
    let ua = req
        .headers()
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("unknown");
    ua.split('/').next().unwrap_or("unknown").to_string()
}

/// A boolean query parameter as Go's `strconv.ParseBool` reads it (Patroni sends `watch=True`).
fn flag(q: &HashMap<String, String>, k: &str) -> bool {
    matches!(
        q.get(k).map(String::as_str),
        Some("1" | "t" | "T" | "true" | "TRUE" | "True")
    )
}

fn list_json(rt: &ResourceType, items: Vec<Value>, rv: u64, cont: Option<String>) -> Value {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({"kind": format!("{}List", rt.kind), "apiVersion": rt.api_version(), "metadata": meta, "items": items})
}

fn scale_of(o: &Value) -> Value {
    let sel = o
        .pointer("/spec/selector/matchLabels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        });
    let m = &o["metadata"];
    json!({"kind": "Scale", "apiVersion": "autoscaling/v1",
           "metadata": {"name": m["name"], "namespace": m["namespace"], "uid": m["uid"],
                        "resourceVersion": m["resourceVersion"], "creationTimestamp": m["creationTimestamp"]},
           "spec": {"replicas": o.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
           "status": {"replicas": o.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
                      "selector": sel.unwrap_or_default()}})
}

async fn body_value(req: Request<Incoming>, yaml: bool) -> Result<Value> {
    let ctype = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // kubectl's imperative generators (`create namespace`, `create secret` …) send protobuf; client-go
    // falls back to JSON after a 415 only for CBOR.
    if ctype.starts_with("application/vnd.kubernetes.protobuf")
        || ctype.starts_with("application/cbor")
    {
        return Err(Error::new(
            415,
            "UnsupportedMediaType",
            format!("the pgherd stand-in accepts JSON and YAML bodies only, not {ctype}"),
        ));
    }
    let bytes = req
        .into_body()
        .collect()
        .await
        .map_err(|e| Error::bad_request(format!("reading the body: {e}")))?
        .to_bytes();
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    match serde_json::from_slice(&bytes) {
        Ok(v) => Ok(v),
        Err(_) if yaml => serde_yaml_ng::from_slice(&bytes)
            .map_err(|e| Error::bad_request(format!("invalid YAML: {e}"))),
        Err(e) => Err(Error::bad_request(format!("invalid JSON: {e}"))),
    }
}

fn delete_options(
    rt: &ResourceType,
    q: &HashMap<String, String>,
    body: &Value,
) -> Result<DeleteOptions> {
    let s = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .map(String::from)
            .or_else(|| q.get(k).cloned())
    };
    let propagation = match s("propagationPolicy").as_deref() {
        Some("Orphan") => Propagation::Orphan,
        Some("Foreground") => Propagation::Foreground,
        Some("Background") => Propagation::Background,
        Some(other) => {
            return Err(Error::bad_request(format!(
                "unknown propagationPolicy {other:?}"
            )))
        }
        None if body.get("orphanDependents") == Some(&json!(true)) => Propagation::Orphan,
        // batch/v1 Jobs orphan their pods by default, as upstream.
        None if rt.group == "batch" && rt.kind == "Job" => Propagation::Orphan,
        None => Propagation::Background,
    };
    let grace = body
        .get("gracePeriodSeconds")
        .and_then(Value::as_i64)
        .or_else(|| q.get("gracePeriodSeconds").and_then(|g| g.parse().ok()));
    let dry = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|d| !d.is_empty())
        || q.contains_key("dryRun");
    Ok(DeleteOptions {
        propagation,
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(String::from),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(String::from),
        grace_period: grace,
        dry_run: dry,
    })
}

pub(super) async fn resource(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    t: Target,
    accept: &str,
) -> Result<Response<Body>> {
    let store = &shared.store;
    let rt = store
        .resource(&t.group, &t.version, &t.plural)
        .ok_or_else(Error::no_resource)?;
    if (!rt.namespaced && t.ns.is_some()) || (rt.namespaced && t.ns.is_none() && t.name.is_some()) {
        return Err(Error::no_resource());
    }
    if t.sub.as_deref() == Some("log") && rt.group.is_empty() && rt.plural == "pods" {
        return pod_log(req, shared, &t).await;
    }
    let status = match t.sub.as_deref() {
        None => false,
        Some("status") if rt.status => true,
        Some("scale") if rt.scale => false,
        Some(_) => return Err(Error::no_resource()),
    };
    let scale = t.sub.as_deref() == Some("scale");
    let q = query(&req);
    let ns = t.ns.clone().unwrap_or_default();
    let as_table = accept.contains("as=Table");
    let include = q
        .get("includeObject")
        .cloned()
        .unwrap_or_else(|| "Metadata".into());
    let w = WriteOptions {
        manager: manager(&q, &req),
        dry_run: q.contains_key("dryRun"),
        force: flag(&q, "force"),
    };
    let method = req.method().clone();
    let sel = || {
        Selectors::parse(
            q.get("labelSelector").map(String::as_str),
            q.get("fieldSelector").map(String::as_str),
        )
        .map_err(Error::bad_request)
    };
    match (&method, &t.name) {
        (&Method::GET, None) if t.watch || flag(&q, "watch") => Ok(watch(
            shared,
            rt,
            t.ns.as_deref(),
            sel()?,
            &q,
            as_table,
            &include,
        )),
        (&Method::GET, None) => {
            let after = match q.get("continue").filter(|c| !c.is_empty()) {
                Some(c) => {
                    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                        .decode(c)
                        .map_err(|_| Error::new(410, "Expired", "invalid continue token"))?;
                    let s = String::from_utf8_lossy(&raw).into_owned();
                    let (a, b) = s
                        .split_once('\n')
                        .ok_or_else(|| Error::new(410, "Expired", "invalid continue token"))?;
                    Some((a.to_string(), b.to_string()))
                }
                None => None,
            };
            let limit = q
                .get("limit")
                .and_then(|l| l.parse().ok())
                .filter(|l: &usize| *l > 0);
            let (items, rv, next) = store.list(&rt, t.ns.as_deref(), &sel()?, after, limit);
            let cont = next.map(|(a, b)| {
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{a}\n{b}"))
            });
            if as_table {
                let mut tab = table::table(&rt, &items, &rv.to_string(), true, &include);
                if let Some(c) = cont {
                    tab["metadata"]["continue"] = json!(c);
                }
                return Ok(respond(200, &tab));
            }
            Ok(respond(200, &list_json(&rt, items, rv, cont)))
        }
        (&Method::GET, Some(name)) => {
            let o = store.get(&rt, &ns, name)?;
            if scale {
                return Ok(respond(200, &scale_of(&o)));
            }
            if as_table {
                let rv = o
                    .pointer("/metadata/resourceVersion")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                return Ok(respond(200, &table::table(&rt, &[o], &rv, true, &include)));
            }
            Ok(respond(200, &o))
        }
        (&Method::POST, None) => {
            if rt.namespaced && t.ns.is_none() {
                return Err(Error::new(
                    405,
                    "MethodNotAllowed",
                    "the server does not allow this method on the requested resource",
                ));
            }
            let body = body_value(req, true).await?;
            Ok(respond(201, &store.create(&rt, &ns, body, &w)?))
        }
        (&Method::PUT, Some(name)) => {
            let body = body_value(req, true).await?;
            if scale {
                let patch = json!({"spec": {"replicas": body.pointer("/spec/replicas").cloned().unwrap_or(Value::Null)},
                                   "metadata": {"resourceVersion": body.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null)}});
                let (o, _) = store.patch(&rt, &ns, name, PatchType::Merge, &patch, false, &w)?;
                return Ok(respond(200, &scale_of(&o)));
            }
            let (o, created) = store.update(&rt, &ns, name, body, status, &w)?;
            Ok(respond(if created { 201 } else { 200 }, &o))
        }
        (&Method::PATCH, Some(name)) => {
            let ctype = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let ptype = match ctype.split(';').next().unwrap_or_default().trim() {
                "application/merge-patch+json" => PatchType::Merge,
                "application/json-patch+json" => PatchType::Json,
                "application/strategic-merge-patch+json" => PatchType::Strategic,
                "application/apply-patch+yaml" | "application/apply-patch+json" => PatchType::Apply,
                other => {
                    return Err(Error::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format: {other}"),
                    ))
                }
            };
            let body = body_value(req, ptype == PatchType::Apply).await?;
            if scale {
                let mut view = scale_of(&store.get(&rt, &ns, name)?);
                match ptype {
                    PatchType::Json => super::patch::json_patch(&mut view, &body)
                        .map_err(|e| Error::new(422, "Invalid", e))?,
                    _ => super::patch::merge_patch(&mut view, &body),
                }
                let patch = json!({"spec": {"replicas": view["spec"]["replicas"]}});
                let (o, _) = store.patch(&rt, &ns, name, PatchType::Merge, &patch, false, &w)?;
                return Ok(respond(200, &scale_of(&o)));
            }
            let (o, created) = store.patch(&rt, &ns, name, ptype, &body, status, &w)?;
            Ok(respond(if created { 201 } else { 200 }, &o))
        }
        (&Method::DELETE, Some(name)) => {
            let body = body_value(req, false).await?;
            let opts = delete_options(&rt, &q, &body)?;
            let (o, gone) = store.delete(&rt, &ns, name, &opts)?;
            Ok(respond(if gone { 200 } else { 202 }, &o))
        }
        (&Method::DELETE, None) => {
            let body = body_value(req, false).await?;
            let opts = delete_options(&rt, &q, &body)?;
            let items = store.delete_collection(&rt, t.ns.as_deref(), &sel()?, &opts)?;
            Ok(respond(
                200,
                &list_json(&rt, items, store.resource_version(), None),
            ))
        }
        _ => Err(Error::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )),
    }
}

/// What `GET pods/{name}/log` asks for.
#[derive(Clone, Debug, Default)]
pub struct LogQuery {
    pub container: Option<String>,
    pub tail_lines: Option<i64>,
    pub previous: bool,
}

/// The source of `pods/{name}/log` (the pod runner registers one): the log as text, or an error Status.
pub trait PodLogs: Send + Sync {
    fn logs(
        &self,
        ns: String,
        pod: String,
        q: LogQuery,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<String>> + Send>>;
}

/// `follow` is answered with the log so far; the stream then ends.
async fn pod_log(
    req: Request<Incoming>,
    shared: &Arc<Shared>,
    t: &Target,
) -> Result<Response<Body>> {
    if req.method() != Method::GET {
        return Err(Error::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        ));
    }
    let q = query(&req);
    let ns = t.ns.clone().unwrap_or_default();
    let name = t.name.clone().ok_or_else(Error::no_resource)?;
    let rt = shared
        .store
        .resource("", "v1", "pods")
        .ok_or_else(Error::no_resource)?;
    shared.store.get(&rt, &ns, &name)?;
    let source = shared
        .pod_logs
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let Some(source) = source else {
        return Err(Error::new(404, "NotFound", "no pod runner serves pod logs"));
    };
    let lq = LogQuery {
        container: q.get("container").filter(|c| !c.is_empty()).cloned(),
        tail_lines: q.get("tailLines").and_then(|n| n.parse().ok()),
        previous: flag(&q, "previous"),
    };
    let text = source.logs(ns, name, lq).await?;
    Ok(Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "text/plain")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Full(Some(Bytes::from(text))))
        .expect("response"))
}

fn watch(
    shared: &Arc<Shared>,
    rt: Arc<ResourceType>,
    ns: Option<&str>,
    sel: Selectors,
    q: &HashMap<String, String>,
    as_table: bool,
    include: &str,
) -> Response<Body> {
    let rv = q.get("resourceVersion").and_then(|r| r.parse::<u64>().ok());
    let initial = flag(q, "sendInitialEvents");
    let bookmarks = flag(q, "allowWatchBookmarks") || initial;
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs);
    let mut watcher = shared.store.watch(
        &rt,
        ns,
        sel,
        rv,
        initial,
        bookmarks.then_some(shared.bookmark_every),
    );
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let include = include.to_string();
    tokio::spawn(async move {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        let mut first = true;
        loop {
            // Ends at timeoutSeconds, or when the client goes away.
            let next = async {
                match deadline {
                    Some(d) => tokio::time::timeout_at(d, watcher.next())
                        .await
                        .ok()
                        .flatten(),
                    None => watcher.next().await,
                }
            };
            let ev = tokio::select! {
                e = next => e,
                _ = tx.closed() => None,
            };
            let Some(ev) = ev else { break };
            let (line, end) = match ev {
                WatchEvent::Object(type_, o) => {
                    let o = events::to_view(&rt, o);
                    let obj = if as_table {
                        let rv = o
                            .pointer("/metadata/resourceVersion")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_string();
                        let t = table::table(&rt, &[o], &rv, first, &include);
                        first = false;
                        t
                    } else {
                        o
                    };
                    (json!({"type": type_.as_str(), "object": obj}), false)
                }
                WatchEvent::Bookmark {
                    rv,
                    initial_events_end,
                } => {
                    let mut m = json!({"resourceVersion": rv.to_string()});
                    if initial_events_end {
                        m["annotations"] = json!({"k8s.io/initial-events-end": "true"});
                    }
                    (
                        json!({"type": "BOOKMARK", "object": {"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": m}}),
                        false,
                    )
                }
                WatchEvent::Error(status) => (json!({"type": "ERROR", "object": status}), true),
            };
            let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
            bytes.push(b'\n');
            if tx.send(bytes.into()).await.is_err() || end {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "application/json")
        .header("Cache-Control", "no-cache, private")
        .body(Body::Stream(rx))
        .expect("response")
}
