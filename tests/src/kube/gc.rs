//! Deletion: preconditions, finalizers and `deletionTimestamp`, graceful pod deletion (when a kubelet
//! stand-in confirms it), ownerReference garbage collection (background, foreground, orphan), namespace
//! termination, and CRD removal.
//!
//! Simplifications (docs/kube-standin.md): the collector runs synchronously inside the delete that
//! triggers it, so there is no delay in which dependents outlive their owner; foreground deletion deletes
//! the dependents first and then the owner, without the `foregroundDeletion` finalizer; orphaning happens
//! at the delete request, without the `orphan` finalizer; `blockOwnerDeletion` is ignored.

use std::sync::RwLock;

use serde_json::{json, Value};

use super::error::{Error, Result};
use super::resources::{Registry, ResourceType};
use super::store::{meta, now, set_meta, DeleteOptions, Inner, Propagation};
use super::watch::{Change, EventType};

fn owner_uids(o: &Value) -> Vec<&str> {
    o.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("uid").and_then(Value::as_str))
        .collect()
}

fn has_finalizers(o: &Value) -> bool {
    o.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

fn rt_of(reg: &RwLock<Registry>, storage: &str) -> Option<std::sync::Arc<ResourceType>> {
    reg.read()
        .unwrap_or_else(|e| e.into_inner())
        .by_storage(storage)
}

fn later(seconds: i64) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(seconds);
    t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Inner {
    /// Objects (storage, namespace, name) that name `uid` as an owner.
    fn dependents(&self, uid: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (storage, objs) in &self.objects {
            for ((ns, name), o) in objs {
                if owner_uids(o).contains(&uid) {
                    out.push((storage.clone(), ns.clone(), name.clone()));
                }
            }
        }
        out
    }

    pub fn delete(
        &mut self,
        reg: &RwLock<Registry>,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        opts: &DeleteOptions,
        graceful_pods: bool,
    ) -> Result<(Value, bool)> {
        let old = self
            .get(&rt.storage(), ns, name)
            .cloned()
            .ok_or_else(|| Error::not_found(rt, name))?;
        let uid = meta(&old, "uid").unwrap_or_default().to_string();
        if opts.uid.as_ref().is_some_and(|u| *u != uid) {
            return Err(Error::conflict(
                rt,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {}, UID in object meta: {uid}",
                    opts.uid.as_deref().unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = &opts.resource_version {
            if Some(rv.as_str()) != meta(&old, "resourceVersion") {
                return Err(Error::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                        meta(&old, "resourceVersion").unwrap_or_default()
                    ),
                ));
            }
        }
        if opts.dry_run {
            return Ok((old, true));
        }
        if rt.group.is_empty() && rt.kind == "Namespace" {
            return Ok(self.delete_namespace(reg, rt, old));
        }
        match opts.propagation {
            Propagation::Orphan => self.orphan(reg, &uid),
            Propagation::Foreground => self.collect(reg, &uid, true),
            Propagation::Background => {}
        }
        if graceful_pods && rt.group.is_empty() && rt.kind == "Pod" {
            let grace = opts
                .grace_period
                .or_else(|| {
                    old.pointer("/spec/terminationGracePeriodSeconds")
                        .and_then(Value::as_i64)
                })
                .unwrap_or(30);
            let pending = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64);
            if grace > 0 || has_finalizers(&old) {
                if pending.is_some_and(|p| p <= grace) {
                    return Ok((old, false));
                }
                let mut o = old.clone();
                set_meta(&mut o, "deletionTimestamp", json!(later(grace)));
                set_meta(&mut o, "deletionGracePeriodSeconds", json!(grace));
                let o = self.put(rt, o, Some(old), false);
                if grace > 0 {
                    return Ok((o, false));
                }
                return self.finalizers_or_remove(reg, rt, ns, name, o, opts);
            }
        }
        self.finalizers_or_remove(reg, rt, ns, name, old, opts)
    }

    fn finalizers_or_remove(
        &mut self,
        reg: &RwLock<Registry>,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        old: Value,
        opts: &DeleteOptions,
    ) -> Result<(Value, bool)> {
        if has_finalizers(&old) {
            if old.pointer("/metadata/deletionTimestamp").is_some() {
                return Ok((old, false));
            }
            let mut o = old.clone();
            set_meta(&mut o, "deletionTimestamp", json!(now()));
            set_meta(&mut o, "deletionGracePeriodSeconds", json!(0));
            return Ok((self.put(rt, o, Some(old), false), false));
        }
        let cascade = opts.propagation != Propagation::Orphan;
        Ok((self.remove(reg, rt, ns, name, cascade), true))
    }

    /// Removes an object for good: DELETED event, then its dependents (when `cascade`), its namespace if
    /// that was waiting for it, and a CRD's resources.
    pub fn remove(
        &mut self,
        reg: &RwLock<Registry>,
        rt: &ResourceType,
        ns: &str,
        name: &str,
        cascade: bool,
    ) -> Value {
        let key = (ns.to_string(), name.to_string());
        let Some(mut obj) = self
            .objects
            .get_mut(&rt.storage())
            .and_then(|m| m.remove(&key))
        else {
            return Value::Null;
        };
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", json!(self.rv.to_string()));
        let uid = meta(&obj, "uid").unwrap_or_default().to_string();
        self.uids.remove(&uid);
        self.history.push(Change {
            rv: self.rv,
            storage: rt.storage(),
            type_: EventType::Deleted,
            object: obj.clone(),
            prev: None,
        });
        if rt.group == "apiextensions.k8s.io" {
            self.remove_crd(reg, &obj);
        }
        if cascade {
            self.collect(reg, &uid, false);
        }
        if !ns.is_empty() {
            self.finish_namespace(reg, ns);
        }
        obj
    }

    /// Deletes the dependents of `owner` that have no other live owner (all of them when `force`).
    fn collect(&mut self, reg: &RwLock<Registry>, owner: &str, force: bool) {
        for (storage, ns, name) in self.dependents(owner) {
            let Some(o) = self.get(&storage, &ns, &name) else {
                continue;
            };
            let orphaned = owner_uids(o)
                .iter()
                .all(|u| *u == owner || !self.uids.contains_key(*u));
            if !(orphaned || force) {
                continue;
            }
            if let Some(rt) = rt_of(reg, &storage) {
                let _ = self.delete(reg, &rt, &ns, &name, &DeleteOptions::default(), false);
            }
        }
    }

    /// Strips the owner reference to `owner` from its dependents.
    fn orphan(&mut self, reg: &RwLock<Registry>, owner: &str) {
        for (storage, ns, name) in self.dependents(owner) {
            let (Some(rt), Some(old)) = (
                rt_of(reg, &storage),
                self.get(&storage, &ns, &name).cloned(),
            ) else {
                continue;
            };
            let mut o = old.clone();
            if let Some(refs) = o
                .pointer_mut("/metadata/ownerReferences")
                .and_then(Value::as_array_mut)
            {
                refs.retain(|r| r.get("uid").and_then(Value::as_str) != Some(owner));
                if refs.is_empty() {
                    set_meta(&mut o, "ownerReferences", Value::Null);
                }
            }
            self.put(&rt, o, Some(old), false);
        }
    }

    fn delete_namespace(
        &mut self,
        reg: &RwLock<Registry>,
        rt: &ResourceType,
        old: Value,
    ) -> (Value, bool) {
        let ns = meta(&old, "name").unwrap_or_default().to_string();
        let mut o = old.clone();
        if old.pointer("/metadata/deletionTimestamp").is_none() {
            set_meta(&mut o, "deletionTimestamp", json!(now()));
            set_meta(&mut o, "deletionGracePeriodSeconds", json!(0));
            o["status"] = json!({"phase": "Terminating"});
            o = self.put(rt, o, Some(old), false);
        }
        let mut contents = Vec::new();
        for (storage, objs) in &self.objects {
            for (k, _) in objs.range((ns.clone(), String::new())..) {
                if k.0 != ns {
                    break;
                }
                contents.push((storage.clone(), k.1.clone()));
            }
        }
        for (storage, name) in contents {
            if let Some(crt) = rt_of(reg, &storage) {
                let _ = self.delete(reg, &crt, &ns, &name, &DeleteOptions::default(), false);
            }
        }
        let gone = self.finish_namespace(reg, &ns);
        (o, gone)
    }

    /// Removes a terminating namespace once it is empty; returns whether it is gone.
    fn finish_namespace(&mut self, reg: &RwLock<Registry>, ns: &str) -> bool {
        let terminating = self
            .get("/namespaces", "", ns)
            .is_some_and(|n| n.pointer("/metadata/deletionTimestamp").is_some());
        if !terminating {
            return self.get("/namespaces", "", ns).is_none();
        }
        let empty = self.objects.values().all(|objs| {
            objs.range((ns.to_string(), String::new())..)
                .next()
                .is_none_or(|(k, _)| k.0 != ns)
        });
        if empty {
            if let Some(rt) = rt_of(reg, "/namespaces") {
                self.remove(reg, &rt, "", ns, true);
            }
        }
        empty
    }

    /// A deleted CRD takes its custom resources with it and stops being served.
    fn remove_crd(&mut self, reg: &RwLock<Registry>, crd: &Value) {
        let group = crd
            .pointer("/spec/group")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let plural = crd
            .pointer("/spec/names/plural")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let storage = format!("{group}/{plural}");
        if let Some(rt) = rt_of(reg, &storage) {
            let keys: Vec<(String, String)> = self
                .objects
                .get(&storage)
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default();
            for (ns, name) in keys {
                self.remove(reg, &rt, &ns, &name, true);
            }
        }
        reg.write()
            .unwrap_or_else(|e| e.into_inner())
            .remove_crd(crd);
    }
}
