//! The synchronous half of the release store's feed: what a watch event *means* for the
//! index, with no I/O. Decoding one object into a [`Record`] (pure, CPU-bound), and the
//! [`Feed`] that applies records to the shared [`Index`]: which sources (watch scopes, the
//! fallback lookups) hold each revision, what a completed relist removes, which records do
//! not decode, readiness and staleness. The kube streams that drive it live in the parent
//! module; tests and benchmarks can drive it with any event sequence.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::DeserializeGuard;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{debug, info, warn};

use crate::helm::record::{RECORD_PREFIX, kind_name, parse_record_name};
use crate::helm::{DecodeError, DecodeLimits, RecordKind, RecordSource, ReleaseKey, RevisionIndex};
use crate::metrics::StoreMetrics;
use crate::store::{Index, SharedIndex};

/// Revisions applied per write-lock acquisition during a relist, so that a relist of
/// thousands of releases never holds the lock long enough to stall requests.
const LOCK_CHUNK: usize = 256;

/// A Kubernetes object that may hold a Helm release record.
pub trait ReleaseObject:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// Which storage driver writes it.
    const KIND: RecordKind;
    /// The resource's plural (`secrets`), for metric labels.
    const RESOURCE: &'static str;
    /// The Helm string in `data.release` (a Secret's after the API's own base64 layer),
    /// or `None` if the object is not a release record.
    fn helm_release(&self) -> Option<&[u8]>;
}

impl ReleaseObject for Secret {
    const KIND: RecordKind = RecordKind::Secret;
    const RESOURCE: &'static str = "secrets";

    fn helm_release(&self) -> Option<&[u8]> {
        if self.type_.as_deref() != Some("helm.sh/release.v1") {
            return None;
        }
        self.data.as_ref()?.get("release").map(|b| b.0.as_slice())
    }
}

impl ReleaseObject for ConfigMap {
    const KIND: RecordKind = RecordKind::ConfigMap;
    const RESOURCE: &'static str = "configmaps";

    fn helm_release(&self) -> Option<&[u8]> {
        if self.labels().get("owner").map(String::as_str) != Some("helm") {
            return None;
        }
        self.data.as_ref()?.get("release").map(|s| s.as_bytes())
    }
}

/// One object as the feed sees it, after decoding.
#[derive(Debug)]
pub enum Record {
    /// A decoded revision.
    Revision(Arc<RevisionIndex>),
    /// A release record that could not be decoded. `object` is `Kind ns/name`.
    Undecodable {
        object: String,
        namespace: String,
        name: String,
        error: DecodeError,
    },
    /// Not a release record (no `data.release`, another Secret type).
    Other { namespace: String, name: String },
}

/// Decodes one object. Pure and CPU-bound: run it off the async workers.
pub fn decode_object<K: ReleaseObject>(obj: &DeserializeGuard<K>, limits: DecodeLimits) -> Record {
    let meta = obj.meta();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let object = || format!("{} {namespace}/{name}", kind_name(K::KIND));
    let inner = match &obj.0 {
        Ok(inner) => inner,
        Err(_) => {
            // The deserializer's message may quote the object's content: never kept.
            let error = DecodeError::Inconsistent {
                object: object(),
                why: format!("the object is not a valid {}", kind_name(K::KIND)),
            };
            return Record::Undecodable {
                object: object(),
                namespace,
                name,
                error,
            };
        }
    };
    let Some(release) = inner.helm_release() else {
        return Record::Other { namespace, name };
    };
    let src = RecordSource {
        kind: K::KIND,
        namespace: &namespace,
        name: &name,
        release,
    };
    match crate::helm::decode(src, limits) {
        Ok(decoded) => Record::Revision(RevisionIndex::from_decoded(&decoded)),
        Err(error) => Record::Undecodable {
            object: object(),
            namespace,
            name,
            error,
        },
    }
}

/// Identifies one watch (resource kind × namespace scope), or the fallback lookups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceId(u16);

/// Revisions found by a fallback lookup with no watch covering them.
const LOOKUP: SourceId = SourceId(0);

#[derive(Debug)]
struct Scope {
    kind: RecordKind,
    namespace: Option<String>,
}

#[derive(Debug, Default)]
struct Tracking {
    /// Which sources hold each indexed revision, and in which of their lists it last
    /// appeared (the source's epoch then).
    held: HashMap<(ReleaseKey, u32), Vec<(SourceId, u64)>>,
    /// Per source: records that currently do not decode (object names only).
    undecodable: HashMap<SourceId, BTreeSet<String>>,
    /// Scopes of the watch sources, by `SourceId - 1`.
    scopes: Vec<Scope>,
    /// Per watch source: listed once / stale now.
    synced: Vec<bool>,
    stale: Vec<bool>,
    /// Per watch source: how many relists it began.
    epochs: Vec<u64>,
}

impl Tracking {
    fn epoch(&self, source: SourceId) -> u64 {
        usize::from(source.0)
            .checked_sub(1)
            .and_then(|i| self.epochs.get(i))
            .copied()
            .unwrap_or(0)
    }
}

/// The writer side of the release store: sources, bookkeeping, readiness and metrics.
#[derive(Debug)]
pub struct Feed {
    index: SharedIndex,
    limits: DecodeLimits,
    metrics: StoreMetrics,
    ready: Arc<AtomicBool>,
    unsynced: AtomicUsize,
    tracking: Mutex<Tracking>,
    /// The drift inventory's inbox: releases whose revisions changed (re-judge their workloads).
    changes: std::sync::OnceLock<Arc<crate::inventory::Changes>>,
}

impl Feed {
    /// `ready` is the flag `/readyz` reads; it turns true once every source added with
    /// [`Feed::add_source`] has completed its first list.
    pub fn new(
        index: SharedIndex,
        limits: DecodeLimits,
        metrics: StoreMetrics,
        ready: Arc<AtomicBool>,
    ) -> Arc<Self> {
        metrics.set_stale(true);
        Arc::new(Self {
            index,
            limits,
            metrics,
            ready,
            unsynced: AtomicUsize::new(0),
            tracking: Mutex::new(Tracking::default()),
            changes: std::sync::OnceLock::new(),
        })
    }

    /// Tells `changes` about every release whose revisions are applied or deleted from now on
    /// (the first call wins). Telling is an insert into a set: it never waits on the inventory.
    pub fn notify_changes(&self, changes: Arc<crate::inventory::Changes>) {
        let _ = self.changes.set(changes);
    }

    fn changed(&self, key: &ReleaseKey) {
        if let Some(c) = self.changes.get() {
            c.touch(key);
        }
    }

    pub fn index(&self) -> &SharedIndex {
        &self.index
    }

    pub fn limits(&self) -> DecodeLimits {
        self.limits
    }

    /// Registers a watch source. Add every source before the first one syncs.
    pub fn add_source(&self, kind: RecordKind, namespace: Option<&str>) -> SourceId {
        let mut t = self.lock();
        t.scopes.push(Scope {
            kind,
            namespace: namespace.map(str::to_owned),
        });
        t.synced.push(false);
        t.stale.push(true);
        t.epochs.push(0);
        self.unsynced.fetch_add(1, Ordering::AcqRel);
        self.ready.store(false, Ordering::Release);
        self.metrics.set_stale(true);
        SourceId(u16::try_from(t.scopes.len()).unwrap_or(u16::MAX))
    }

    /// Object names of the records that currently do not decode, sorted.
    pub fn undecodable(&self) -> Vec<String> {
        let t = self.lock();
        let mut all: Vec<String> = t.undecodable.values().flatten().cloned().collect();
        all.sort();
        all
    }

    /// Whether any watch is between a failure (or its start) and its next completed list.
    pub fn is_stale(&self) -> bool {
        self.lock().stale.iter().any(|s| *s)
    }

    fn lock(&self) -> MutexGuard<'_, Tracking> {
        self.tracking.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// A relist of `source` starts: what it lists from now on is applied as it arrives
    /// ([`Feed::relist_apply`]) and marked with a new epoch; [`Feed::finish_relist`] then
    /// drops what the source held and did not list again. The index is swapped one revision
    /// at a time, so a relist never holds a second copy of it.
    pub(super) fn begin_relist(&self, source: SourceId) {
        let mut t = self.lock();
        if let Some(e) = usize::from(source.0)
            .checked_sub(1)
            .and_then(|i| t.epochs.get_mut(i))
        {
            *e += 1;
        }
    }

    /// One revision a relist of `source` listed.
    pub(super) fn relist_apply(&self, source: SourceId, rev: Arc<RevisionIndex>) {
        let mut t = self.lock();
        let epoch = t.epoch(source);
        let holders = t
            .held
            .entry((rev.release.clone(), rev.revision))
            .or_default();
        match holders.iter_mut().find(|(s, _)| *s == source) {
            Some(h) => h.1 = epoch,
            None => holders.push((source, epoch)),
        }
        let release = rev.release.clone();
        let mut index = self.write_index();
        index.apply(rev);
        drop(index);
        self.changed(&release);
    }

    /// A relist of `source` completed: what it held before and did not list is gone.
    pub(super) fn finish_relist(&self, source: SourceId, failures: BTreeSet<String>) {
        let mut t = self.lock();
        let epoch = t.epoch(source);
        let mut gone = Vec::new();
        let mut listed = 0usize;
        for (key, holders) in t.held.iter_mut() {
            let before = holders.len();
            holders.retain(|(s, e)| *s != source || *e == epoch);
            if holders.iter().any(|(s, _)| *s == source) {
                listed += 1;
            }
            if holders.is_empty() && before > 0 {
                gone.push(key.clone());
            }
        }
        for key in &gone {
            t.held.remove(key);
        }
        t.undecodable.insert(source, failures);
        let removed = gone.len();
        for key in gone.iter().map(|g| &g.0) {
            self.changed(key);
        }
        let mut gone = gone.into_iter().peekable();
        while gone.peek().is_some() {
            let mut index = self.write_index();
            for (key, revision) in gone.by_ref().take(LOCK_CHUNK) {
                index.delete(&key, revision);
            }
        }
        let releases = self.index.read().map_or(0, |i| i.len());
        self.metrics.set_releases(releases);
        drop(t);
        info!(listed, removed, releases, "release list applied");
    }

    /// Applies what a watch event or a lookup delivered for one object.
    pub(super) fn apply_record(&self, source: SourceId, record: Record) {
        let mut t = self.lock();
        match record {
            Record::Revision(rev) => {
                let object = format!(
                    "{} {}/{RECORD_PREFIX}{}.v{}",
                    self.kind_of(&t, source),
                    rev.release.namespace,
                    rev.release.name,
                    rev.revision
                );
                if let Some(set) = t.undecodable.get_mut(&source) {
                    set.remove(&object);
                }
                let epoch = t.epoch(source);
                let holders = t
                    .held
                    .entry((rev.release.clone(), rev.revision))
                    .or_default();
                match holders.iter_mut().find(|(s, _)| *s == source) {
                    Some(h) => h.1 = epoch,
                    None => holders.push((source, epoch)),
                }
                debug!(release = %rev.release, revision = rev.revision, status = %rev.status, "apply");
                let release = rev.release.clone();
                let mut index = self.write_index();
                index.apply(rev);
                self.metrics.set_releases(index.len());
                drop(index);
                self.changed(&release);
            }
            Record::Undecodable {
                object,
                namespace,
                name,
                error,
            } => {
                self.count_failure(&object, &error);
                t.undecodable.entry(source).or_default().insert(object);
                // The revision's record no longer says what it said: forget the old reading.
                self.release_hold(&mut t, source, &namespace, &name);
            }
            Record::Other { namespace, name } => {
                self.release_hold(&mut t, source, &namespace, &name);
            }
        }
    }

    /// A record was deleted.
    pub(super) fn delete_record(&self, source: SourceId, namespace: &str, name: &str) {
        let mut t = self.lock();
        let object = format!("{} {namespace}/{name}", self.kind_of(&t, source));
        if let Some(set) = t.undecodable.get_mut(&source) {
            set.remove(&object);
        }
        self.release_hold(&mut t, source, namespace, name);
    }

    fn release_hold(&self, t: &mut Tracking, source: SourceId, namespace: &str, name: &str) {
        let Some(key) = parse_record_name(namespace, name) else {
            return;
        };
        let Some(holders) = t.held.get_mut(&key) else {
            return;
        };
        holders.retain(|(s, _)| *s != source);
        if holders.is_empty() {
            t.held.remove(&key);
            debug!(release = %key.0, revision = key.1, "delete");
            let mut index = self.write_index();
            index.delete(&key.0, key.1);
            self.metrics.set_releases(index.len());
            drop(index);
            self.changed(&key.0);
        }
    }

    fn kind_of(&self, t: &Tracking, source: SourceId) -> &'static str {
        usize::from(source.0)
            .checked_sub(1)
            .and_then(|i| t.scopes.get(i))
            .map_or("Secret", |s| kind_name(s.kind))
    }

    pub(super) fn count_failure(&self, object: &str, error: &DecodeError) {
        // DecodeError's message names the object and the failure, never the content.
        warn!(object, reason = error.label(), %error, "release record skipped");
        self.metrics.decode_failed(error.label());
    }

    /// Revisions found by a fallback lookup of `kind` records in `namespace`: held by the
    /// watch covering them (so its next relist reconciles them), or by the lookup source.
    pub fn apply_lookup(&self, kind: RecordKind, namespace: &str, records: Vec<Record>) {
        let source = {
            let t = self.lock();
            t.scopes
                .iter()
                .position(|s| {
                    s.kind == kind && s.namespace.as_deref().is_none_or(|ns| ns == namespace)
                })
                .map_or(LOOKUP, |i| {
                    SourceId(u16::try_from(i + 1).unwrap_or(u16::MAX))
                })
        };
        for record in records {
            self.apply_record(source, record);
        }
    }

    pub(super) fn synced(&self, source: SourceId) {
        let mut t = self.lock();
        let i = usize::from(source.0).saturating_sub(1);
        if let Some(s) = t.stale.get_mut(i) {
            *s = false;
        }
        let first = t
            .synced
            .get_mut(i)
            .is_some_and(|s| !std::mem::replace(s, true));
        if first && self.unsynced.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.ready.store(true, Ordering::Release);
            info!("every release watch has listed: ready");
        }
        self.metrics.set_stale(t.stale.iter().any(|s| *s));
    }

    pub(super) fn failed(&self, source: SourceId, resource: &'static str) {
        self.metrics.watch_restarted(resource);
        let mut t = self.lock();
        if let Some(s) = t.stale.get_mut(usize::from(source.0).saturating_sub(1)) {
            *s = true;
        }
        self.metrics.set_stale(true);
    }

    /// A live event arrived after a failure: the watch resumed without a relist.
    pub(super) fn resumed(&self, source: SourceId) {
        let mut t = self.lock();
        let i = usize::from(source.0).saturating_sub(1);
        let synced = t.synced.get(i).copied().unwrap_or(false);
        if let Some(s) = t.stale.get_mut(i)
            && *s
            && synced
        {
            *s = false;
            self.metrics.set_stale(t.stale.iter().any(|s| *s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names() {
        assert_eq!(
            parse_record_name("db", "sh.helm.release.v1.my.app.v12"),
            Some((ReleaseKey::new("db", "my.app"), 12))
        );
        assert_eq!(parse_record_name("db", "sh.helm.release.v1..v1"), None);
        assert_eq!(parse_record_name("db", "other"), None);
        assert_eq!(parse_record_name("db", "sh.helm.release.v1.x.vX"), None);
    }
}
