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

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use super::object::{ConfigMapRecord, SecretRecord};
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
    /// Whether the object holds a release record at all. Cheap: nothing is decoded.
    fn holds(&self) -> Holds;
    /// The Helm string in `data.release` (a Secret's with the API's own base64 layer
    /// removed); `None` when that layer is not base64. Only asked when [`Self::holds`] says
    /// [`Holds::Record`].
    fn helm_release(&self) -> Option<Cow<'_, [u8]>>;
}

/// What an object holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holds {
    Record,
    /// Not a release record (no `data.release`, another Secret type).
    Other,
    /// The object does not have the shape of its kind.
    Invalid,
}

fn secret_holds(type_: Option<&str>, release: bool) -> Holds {
    if type_ == Some("helm.sh/release.v1") && release {
        Holds::Record
    } else {
        Holds::Other
    }
}

fn config_map_holds(labels: &std::collections::BTreeMap<String, String>, release: bool) -> Holds {
    if labels.get("owner").map(String::as_str) == Some("helm") && release {
        Holds::Record
    } else {
        Holds::Other
    }
}

impl ReleaseObject for SecretRecord {
    const KIND: RecordKind = RecordKind::Secret;
    const RESOURCE: &'static str = "secrets";

    fn holds(&self) -> Holds {
        if self.invalid {
            return Holds::Invalid;
        }
        secret_holds(self.type_.as_deref(), self.release.is_some())
    }

    fn helm_release(&self) -> Option<Cow<'_, [u8]>> {
        let text = self.release.as_deref()?;
        STANDARD.decode(text.trim()).ok().map(Cow::Owned)
    }
}

impl ReleaseObject for ConfigMapRecord {
    const KIND: RecordKind = RecordKind::ConfigMap;
    const RESOURCE: &'static str = "configmaps";

    fn holds(&self) -> Holds {
        if self.invalid {
            return Holds::Invalid;
        }
        config_map_holds(self.labels(), self.release.is_some())
    }

    fn helm_release(&self) -> Option<Cow<'_, [u8]>> {
        self.release.as_deref().map(|s| Cow::Borrowed(s.as_bytes()))
    }
}

/// kube's typed objects behind its guard: what tests and tools that build `Secret`s use.
impl ReleaseObject for DeserializeGuard<Secret> {
    const KIND: RecordKind = RecordKind::Secret;
    const RESOURCE: &'static str = "secrets";

    fn holds(&self) -> Holds {
        match &self.0 {
            Err(_) => Holds::Invalid,
            Ok(s) => secret_holds(
                s.type_.as_deref(),
                s.data.as_ref().is_some_and(|d| d.contains_key("release")),
            ),
        }
    }

    fn helm_release(&self) -> Option<Cow<'_, [u8]>> {
        let s = self.0.as_ref().ok()?;
        s.data
            .as_ref()?
            .get("release")
            .map(|b| Cow::Borrowed(b.0.as_slice()))
    }
}

impl ReleaseObject for DeserializeGuard<ConfigMap> {
    const KIND: RecordKind = RecordKind::ConfigMap;
    const RESOURCE: &'static str = "configmaps";

    fn holds(&self) -> Holds {
        match &self.0 {
            Err(_) => Holds::Invalid,
            Ok(c) => config_map_holds(
                c.labels(),
                c.data.as_ref().is_some_and(|d| d.contains_key("release")),
            ),
        }
    }

    fn helm_release(&self) -> Option<Cow<'_, [u8]>> {
        let c = self.0.as_ref().ok()?;
        c.data
            .as_ref()?
            .get("release")
            .map(|s| Cow::Borrowed(s.as_bytes()))
    }
}

/// One object as the feed sees it, after decoding.
#[derive(Debug)]
pub enum Record {
    /// A decoded revision (or, from a list, an unread superseded one: see [`decode_listed`]),
    /// with the [`ObjectVersion`] of the object it came from.
    Revision(Arc<RevisionIndex>, ObjectVersion),
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

/// A digest of an object's `resourceVersion`: the same object, unchanged, has the same one.
/// `0` means unknown (never equal to anything, see [`ObjectVersion::same`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct ObjectVersion(u64);

impl ObjectVersion {
    pub fn of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Self {
        use std::hash::{Hash, Hasher};
        let Some(rv) = meta.resource_version.as_deref().filter(|v| !v.is_empty()) else {
            return Self(0);
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        rv.hash(&mut h);
        Self(h.finish().max(1))
    }

    /// Whether both are known and equal.
    pub fn same(self, other: Self) -> bool {
        self.0 != 0 && self.0 == other.0
    }
}

/// Decodes one object, reading its record. Pure and CPU-bound: run it off the async workers.
pub fn decode_object<K: ReleaseObject>(obj: &K, limits: DecodeLimits) -> Record {
    decode(obj, limits)
}

/// Decodes one object of a list (a watch's initial list or relist). A record whose labels
/// say `status=superseded` is not read: it becomes [`RevisionIndex::unread`], which costs no
/// gunzip and no parse. No decision is judged against a superseded revision; the stale-value
/// analysis, the one reader of their values, says when it would need one and the fallback
/// lookup reads it then. Helm keeps the label equal to the record's status on every write.
pub fn decode_listed<K: ReleaseObject>(obj: &K, limits: DecodeLimits) -> Record {
    unread_listed(obj).unwrap_or_else(|| decode(obj, limits))
}

/// What [`decode_listed`] makes of an object it leaves unread, or `None` when it reads it:
/// labels and name only, a few hundred nanoseconds, so a list takes such objects where they
/// arrive instead of handing each to a decode thread (nine in ten records of a fleet with
/// Helm's history of 10).
pub fn unread_listed<K: ReleaseObject>(obj: &K) -> Option<Record> {
    if !matches!(obj.holds(), Holds::Record)
        || obj.labels().get("status").map(String::as_str) != Some("superseded")
    {
        return None;
    }
    let meta = obj.meta();
    let namespace = meta.namespace.as_deref().unwrap_or("default");
    let (key, revision) = parse_record_name(namespace, meta.name.as_deref()?)?;
    Some(Record::Revision(
        RevisionIndex::unread(key, revision),
        ObjectVersion::of(meta),
    ))
}

fn decode<K: ReleaseObject>(obj: &K, limits: DecodeLimits) -> Record {
    let meta = obj.meta();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let name = meta.name.clone().unwrap_or_default();
    let version = ObjectVersion::of(meta);
    let object = || format!("{} {namespace}/{name}", kind_name(K::KIND));
    match obj.holds() {
        Holds::Record => {}
        Holds::Other => return Record::Other { namespace, name },
        Holds::Invalid => {
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
    }
    let Some(release) = obj.helm_release() else {
        return Record::Undecodable {
            error: DecodeError::Base64 { object: object() },
            object: object(),
            namespace,
            name,
        };
    };
    let src = RecordSource {
        kind: K::KIND,
        namespace: &namespace,
        name: &name,
        release: &release,
    };
    match crate::helm::decode(src, limits) {
        Ok(decoded) => Record::Revision(RevisionIndex::from_decoded(&decoded), version),
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

/// That `source` holds `revision` (of the release this is filed under) as of `epoch`, from
/// an object at `version`. 24 bytes: a cold start of 10k releases × 10 revisions holds 100k.
#[derive(Debug, Clone, Copy)]
struct Held {
    revision: u32,
    source: SourceId,
    epoch: u64,
    version: ObjectVersion,
}

impl Held {
    fn order(&self) -> (u32, SourceId) {
        (self.revision, self.source)
    }
}

/// Records that `source` holds `key` as of `epoch`, from an object at `version`; returns the
/// version it held before, if it did.
fn hold(
    t: &mut Tracking,
    (release, revision): (ReleaseKey, u32),
    source: SourceId,
    version: ObjectVersion,
) -> Option<ObjectVersion> {
    let epoch = t.epoch(source);
    let list = t.held.entry(release).or_default();
    match list.binary_search_by(|h| h.order().cmp(&(revision, source))) {
        Ok(i) => {
            list[i].epoch = epoch;
            Some(std::mem::replace(&mut list[i].version, version))
        }
        Err(i) => {
            list.insert(
                i,
                Held {
                    revision,
                    source,
                    epoch,
                    version,
                },
            );
            None
        }
    }
}

#[derive(Debug, Default)]
struct Tracking {
    /// Per release, which sources hold each indexed revision, in which of their lists it last
    /// appeared (the source's epoch then), and the version of the object it was last read
    /// from; sorted by revision and source. Filed per release, not per revision, so the key
    /// is kept once.
    held: HashMap<ReleaseKey, Vec<Held>>,
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

    /// Whether something consumes the feed's changes (the drift inventory).
    pub fn has_consumer(&self) -> bool {
        self.changes.get().is_some()
    }

    /// Whether every source has completed its first list.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
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

    /// One revision a relist of `source` listed. An unread revision (see
    /// [`decode_listed`]) does not replace the reading of the same, unchanged object: what was
    /// read before is still what it says.
    pub(super) fn relist_apply(
        &self,
        source: SourceId,
        rev: Arc<RevisionIndex>,
        version: ObjectVersion,
    ) {
        let mut t = self.lock();
        let key = (rev.release.clone(), rev.revision);
        let before = hold(&mut t, key.clone(), source, version);
        if !rev.is_read() && before.is_some_and(|b| b.same(version)) {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            if index.holds_read(&key.0, key.1) {
                // Keep the reading, and the version it was read at.
                return;
            }
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
        let kept = |h: &Held| h.source != source || h.epoch == epoch;
        let mut emptied = Vec::new();
        for (release, list) in t.held.iter_mut() {
            // A revision is gone when none of its holders is kept.
            for group in list.chunk_by(|a, b| a.revision == b.revision) {
                if !group.iter().any(kept) {
                    gone.push((release.clone(), group[0].revision));
                }
            }
            list.retain(kept);
            listed += list.iter().filter(|h| h.source == source).count();
            if list.is_empty() {
                emptied.push(release.clone());
            }
        }
        for release in &emptied {
            t.held.remove(release);
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
            Record::Revision(rev, version) => {
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
                hold(&mut t, (rev.release.clone(), rev.revision), source, version);
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
        let Some(list) = t.held.get_mut(&key.0) else {
            return;
        };
        let Ok(i) = list.binary_search_by(|h| h.order().cmp(&(key.1, source))) else {
            return;
        };
        list.remove(i);
        if !list.iter().any(|h| h.revision == key.1) {
            if list.is_empty() {
                t.held.remove(&key.0);
            }
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

    /// A feed over a fresh index, with metrics nobody reads.
    fn feed(limits: DecodeLimits) -> (SharedIndex, Arc<Feed>) {
        let index: SharedIndex = Default::default();
        let feed = Feed::new(
            index.clone(),
            limits,
            crate::metrics::Metrics::unregistered().store,
            Arc::new(AtomicBool::new(false)),
        );
        (index, feed)
    }

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

    /// A list leaves superseded records unread; a relist keeps what was read from the same,
    /// unchanged object, and a changed object is unread again.
    #[test]
    fn lists_defer_superseded_records_and_relists_keep_readings() {
        use crate::demo::build::postgres_history;
        let history = postgres_history("CANARY-feed");
        let object = |i: usize, rv: &str| -> SecretRecord {
            let mut s = history.revisions[i].secret();
            s["metadata"]["resourceVersion"] = rv.into();
            serde_json::from_value(s).expect("a Secret")
        };
        let limits = DecodeLimits::default();
        // (revision index, list or live, read?)
        for (i, listed, read) in [(0, true, false), (0, false, true), (1, true, true)] {
            let decode = if listed { decode_listed } else { decode_object };
            match decode(&object(i, "1"), limits) {
                Record::Revision(rev, _) => assert_eq!(rev.is_read(), read, "{i} {listed}"),
                other => panic!("{other:?}"),
            }
        }
        let (index, feed) = feed(limits);
        let source = feed.add_source(RecordKind::Secret, None);
        let key = ReleaseKey::new("db", "db");
        let apply_listed = |rv: &str| {
            let Record::Revision(rev, version) = decode_listed(&object(0, rv), limits) else {
                panic!("a revision");
            };
            feed.relist_apply(source, rev, version);
        };
        // Read live (Helm marked it superseded while we watched), then relisted unchanged.
        let Record::Revision(rev, version) = decode_object(&object(0, "7"), limits) else {
            panic!("a revision");
        };
        feed.apply_record(source, Record::Revision(rev, version));
        feed.begin_relist(source);
        apply_listed("7");
        assert!(index.read().expect("lock").holds_read(&key, 1), "kept");
        // Changed since: the reading is dropped for an unread stand-in.
        apply_listed("8");
        let idx = index.read().expect("lock");
        assert!(!idx.holds_read(&key, 1) && idx.has_unread(&key));
        assert_eq!(idx.unread_releases(), vec![key]);
    }

    /// A revision two sources hold (a Secret and a ConfigMap watch, say) stays until the last
    /// of them lets go: a relist that no longer lists it, or a deletion.
    #[test]
    fn a_revision_goes_when_its_last_holder_lets_go() {
        use crate::demo::build::postgres_history;
        let history = postgres_history("CANARY-feed");
        let limits = DecodeLimits::default();
        let record = |i: usize| -> Record {
            let mut s = history.revisions[i].secret();
            s["metadata"]["resourceVersion"] = "1".into();
            let s: SecretRecord = serde_json::from_value(s).expect("a Secret");
            decode_object(&s, limits)
        };
        let (index, feed) = feed(limits);
        let (a, b) = (
            feed.add_source(RecordKind::Secret, None),
            feed.add_source(RecordKind::ConfigMap, None),
        );
        let key = ReleaseKey::new("db", "db");
        let revisions = || -> Vec<u32> {
            let idx = index.read().expect("lock");
            crate::policy::Releases::history(&*idx, &key)
                .iter()
                .map(|r| r.revision)
                .collect()
        };
        feed.apply_record(a, record(0));
        feed.apply_record(b, record(0));
        feed.apply_record(a, record(1));
        assert_eq!(revisions(), [1, 2]);
        // `a` relists and finds only revision 2: revision 1 is still `b`'s.
        feed.begin_relist(a);
        let Record::Revision(rev, version) = record(1) else {
            panic!("a revision");
        };
        feed.relist_apply(a, rev, version);
        feed.finish_relist(a, BTreeSet::new());
        assert_eq!(revisions(), [1, 2]);
        // `b` relists and finds nothing.
        feed.begin_relist(b);
        feed.finish_relist(b, BTreeSet::new());
        assert_eq!(revisions(), [2]);
        // Deleting a record `b` does not hold changes nothing; `a`'s deletion removes it.
        feed.delete_record(b, "db", "sh.helm.release.v1.db.v2");
        assert_eq!(revisions(), [2]);
        feed.delete_record(a, "db", "sh.helm.release.v1.db.v2");
        assert!(revisions().is_empty() && index.read().expect("lock").is_empty());
    }
}
