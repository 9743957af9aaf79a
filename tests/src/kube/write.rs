//! The write rules of the store: create (names, namespaces, uid, defaults, status reset) and the common end
//! of every update, patch and apply (server-owned fields, optimistic concurrency, the status subresource,
//! finalizers of deleted objects, generation, managed fields, no-op detection).

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::RwLock;

use serde_json::{json, Value};

use super::apply::{read_entries, record_update, write_entries, Conflict, Entry, Scope, Writer};
use super::defaults;
use super::defaults::IpAllocator;
use super::error::{Error, Result};
use super::resources::{Registry, ResourceType};
use super::store::{meta, now, set_meta, Inner, WriteOptions};
use super::watch::{Change, EventType, History};

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// The object without what a no-op write may change (resourceVersion, managed-field timestamps).
fn comparable(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
        for e in m
            .get_mut("managedFields")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(e) = e.as_object_mut() {
                e.remove("time");
            }
        }
    }
    c
}

/// Spec-ish content: what bumps `generation`.
fn spec_part(o: &Value) -> Value {
    let mut c = o.clone();
    if let Some(m) = c.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    c
}

impl Inner {
    pub fn new(history: usize) -> Self {
        Inner {
            rv: 1,
            objects: HashMap::new(),
            uids: HashMap::new(),
            history: History::new(history),
            ips: IpAllocator::default(),
            seq: 0,
        }
    }

    fn random(&mut self) -> u64 {
        self.seq += 1;
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(self.seq);
        h.finish()
    }

    fn uid(&mut self) -> String {
        let (a, b) = (self.random(), self.random());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | (b >> 48) & 0x3fff,
            b & 0xffff_ffff_ffff
        )
    }

    pub fn get(&self, storage: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects
            .get(storage)?
            .get(&(ns.to_string(), name.to_string()))
    }

    /// Stores a new version (resourceVersion assigned) and records the event.
    pub fn put(
        &mut self,
        rt: &ResourceType,
        mut obj: Value,
        prev: Option<Value>,
        dry: bool,
    ) -> Value {
        if dry {
            return obj;
        }
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        let ns = meta(&obj, "namespace").unwrap_or_default().to_string();
        let name = meta(&obj, "name").unwrap_or_default().to_string();
        let uid = meta(&obj, "uid").unwrap_or_default().to_string();
        self.uids
            .insert(uid, (rt.storage(), ns.clone(), name.clone()));
        self.objects
            .entry(rt.storage())
            .or_default()
            .insert((ns, name), obj.clone());
        let type_ = if prev.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.history.push(Change {
            rv: self.rv,
            storage: rt.storage(),
            type_,
            object: obj.clone(),
            prev,
        });
        obj
    }

    fn namespace_ok(&self, rt: &ResourceType, ns: &str) -> Result<()> {
        if !rt.namespaced {
            return Ok(());
        }
        match self.get("/namespaces", "", ns) {
            None => Err(Error::namespace_not_found(ns)),
            Some(n) if n.pointer("/metadata/deletionTimestamp").is_some() => Err(Error::forbidden(format!(
                "unable to create new content in namespace {ns} because it is being terminated ({})",
                rt.group_resource()
            ))),
            Some(_) => Ok(()),
        }
    }

    /// Create. `entries` are the managed fields of a server-side apply that creates.
    pub fn create(
        &mut self,
        reg: &RwLock<Registry>,
        rt: &ResourceType,
        ns: &str,
        mut obj: Value,
        w: &WriteOptions,
        entries: Option<Vec<Entry>>,
    ) -> Result<Value> {
        if !obj.is_object() {
            return Err(Error::bad_request("the object must be a JSON object"));
        }
        for (k, want) in [("apiVersion", rt.api_version()), ("kind", rt.kind.clone())] {
            match obj.get(k).and_then(Value::as_str) {
                Some(v) if v != want => {
                    return Err(Error::bad_request(format!(
                        "the {k} of the object ({v}) does not match the request ({want})"
                    )))
                }
                _ => obj[k] = json!(want),
            }
        }
        let obj_ns = meta(&obj, "namespace").unwrap_or_default().to_string();
        if rt.namespaced && !obj_ns.is_empty() && obj_ns != ns {
            return Err(Error::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let mut name = meta(&obj, "name").unwrap_or_default().to_string();
        if name.is_empty() {
            if let Some(prefix) = meta(&obj, "generateName").map(String::from) {
                const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
                let r = self.random();
                let suffix: String = (0..5)
                    .map(|i| ALPHABET[((r >> (i * 8)) % ALPHABET.len() as u64) as usize] as char)
                    .collect();
                name = format!("{prefix}{suffix}");
            }
        }
        if !valid_name(&name) {
            return Err(Error::invalid(
                rt,
                &name,
                "metadata.name",
                "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.'",
            ));
        }
        self.namespace_ok(rt, ns)?;
        if self.get(&rt.storage(), ns, &name).is_some() {
            return Err(Error::already_exists(rt, &name));
        }
        let is_crd = rt.group == "apiextensions.k8s.io";
        if is_crd {
            super::resources::crd_types(&obj).map_err(|e| Error::invalid(rt, &name, "spec", &e))?;
        }
        let uid = self.uid();
        set_meta(&mut obj, "name", json!(name));
        set_meta(
            &mut obj,
            "namespace",
            if rt.namespaced {
                json!(ns)
            } else {
                Value::Null
            },
        );
        set_meta(&mut obj, "uid", json!(uid));
        set_meta(&mut obj, "creationTimestamp", json!(now()));
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
            "selfLink",
        ] {
            set_meta(&mut obj, k, Value::Null);
        }
        set_meta(
            &mut obj,
            "generation",
            if rt.generation { json!(1) } else { Value::Null },
        );
        defaults::reset_status(rt, &mut obj);
        defaults::apply(rt, &mut obj, None, &mut self.ips);
        let entries = match entries {
            Some(e) => e,
            None => {
                let mut e = Vec::new();
                let now = now();
                let api_version = rt.api_version();
                let wr = writer(rt, w, &api_version, false, &now);
                record_update(&mut e, &json!({}), &obj, &wr);
                e
            }
        };
        write_entries(&mut obj, &entries);
        let obj = self.put(rt, obj, None, w.dry_run);
        if is_crd && !w.dry_run {
            reg.write().expect("registry").add_crd(&obj).ok();
        }
        Ok(obj)
    }

    /// The common end of update, patch and apply: server-owned fields, defaults, generation, managed
    /// fields, no-op detection, and removal once the last finalizer of a deleted object is gone.
    #[allow(clippy::too_many_arguments)]
    pub fn finish_update(
        &mut self,
        reg: &RwLock<Registry>,
        rt: &ResourceType,
        old: &Value,
        mut new: Value,
        status: bool,
        w: &WriteOptions,
        entries: Option<Vec<Entry>>,
    ) -> Result<Value> {
        let name = meta(old, "name").unwrap_or_default().to_string();
        if let Some(rv) = meta(&new, "resourceVersion") {
            if !rv.is_empty() && Some(rv) != meta(old, "resourceVersion") {
                return Err(Error::stale(rt, &name));
            }
        }
        if let Some(n) = meta(&new, "name") {
            if n != name {
                return Err(Error::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        new["apiVersion"] = old["apiVersion"].clone();
        new["kind"] = old["kind"].clone();
        for k in [
            "uid",
            "creationTimestamp",
            "name",
            "namespace",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
        ] {
            set_meta(
                &mut new,
                k,
                old["metadata"].get(k).cloned().unwrap_or(Value::Null),
            );
        }
        if rt.status && !status {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            }
        }
        if old.pointer("/metadata/deletionTimestamp").is_some() {
            let fins = |o: &Value| -> Vec<Value> {
                o.pointer("/metadata/finalizers")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            };
            let before = fins(old);
            if fins(&new).iter().any(|f| !before.contains(f)) {
                return Err(Error::invalid(
                    rt,
                    &name,
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        defaults::apply(rt, &mut new, Some(old), &mut self.ips);
        if rt.generation {
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let bumped = if spec_part(old) != spec_part(&new) {
                g + 1
            } else {
                g
            };
            set_meta(&mut new, "generation", json!(bumped));
        }
        let entries = match entries {
            Some(e) => e,
            None => {
                let mut e = read_entries(old);
                let now = now();
                let api_version = rt.api_version();
                record_update(
                    &mut e,
                    old,
                    &new,
                    &writer(rt, w, &api_version, status, &now),
                );
                e
            }
        };
        write_entries(&mut new, &entries);
        if comparable(old) == comparable(&new) {
            return Ok(old.clone());
        }
        let stored = self.put(rt, new, Some(old.clone()), w.dry_run);
        if rt.group == "apiextensions.k8s.io" && !w.dry_run {
            // A changed CRD (new version, columns, subresources) is served as changed.
            reg.write()
                .unwrap_or_else(|e| e.into_inner())
                .add_crd(&stored)
                .ok();
        }
        let finished = stored.pointer("/metadata/deletionTimestamp").is_some()
            && stored
                .pointer("/metadata/finalizers")
                .and_then(Value::as_array)
                .is_none_or(|f| f.is_empty())
            && stored
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                == 0;
        if finished && !w.dry_run {
            let ns = meta(&stored, "namespace").unwrap_or_default().to_string();
            return Ok(self.remove(reg, rt, &ns, &name, true));
        }
        Ok(stored)
    }
}

/// A status write: the stored object with the written status (and the written resourceVersion, a precondition).
pub(super) fn with_status_of(old: &Value, written: &Value) -> Value {
    let mut merged = old.clone();
    match written.get("status") {
        Some(s) => merged["status"] = s.clone(),
        None => {
            merged.as_object_mut().map(|m| m.remove("status"));
        }
    }
    let rv = written
        .pointer("/metadata/resourceVersion")
        .cloned()
        .unwrap_or(Value::Null);
    set_meta(&mut merged, "resourceVersion", rv);
    merged
}

pub(super) fn writer<'a>(
    rt: &ResourceType,
    w: &'a WriteOptions,
    api_version: &'a str,
    status: bool,
    now: &'a str,
) -> Writer<'a> {
    Writer {
        manager: &w.manager,
        api_version,
        builtin: rt.builtin,
        scope: if status {
            Scope::Status
        } else {
            Scope::Main {
                has_status: rt.status,
            }
        },
        now,
    }
}

/// The 409 of a server-side apply that conflicts with other managers' fields.
pub(super) fn conflict_error(rt: &ResourceType, name: &str, cs: &[Conflict]) -> Error {
    let causes: Vec<Value> = cs
        .iter()
        .map(|c| {
            json!({"type": "FieldManagerConflict", "field": c.field,
                   "message": format!("conflict with \"{}\" using {}", c.manager, c.api_version)})
        })
        .collect();
    let lines: Vec<String> = cs
        .iter()
        .map(|c| {
            format!(
                "conflict with \"{}\" using {}: {}",
                c.manager, c.api_version, c.field
            )
        })
        .collect();
    let plural = if cs.len() == 1 { "" } else { "s" };
    let mut e = Error::new(
        409,
        "Conflict",
        format!(
            "Apply failed with {} conflict{plural}: {}",
            cs.len(),
            lines.join("\n")
        ),
    );
    e.details = json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes});
    e
}
