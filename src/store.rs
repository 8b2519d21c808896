//! The release index: every known revision reduced to a [`RevisionIndex`], and a reverse map
//! from each rendered workload to its release.
//!
//! The pattern is kubert's/linkerd's: a plain struct with sync `apply`/`delete`/`reset`,
//! shared as `Arc<RwLock<Index>>`. Writers (a watch, a file loader, the demo) decode a record
//! once and apply the result; the request path takes a read lock and only looks things up.
//! Decoding happens before the lock is taken, so a large record never stalls requests.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::helm::record::{index_record, parse_record_name, release_record};
use crate::helm::{DecodeLimits, ReleaseKey, RevisionIndex, Status, WorkloadKey};
use crate::policy::{ReleaseView, Releases};
use crate::values::ImageValue;

/// One revision as the store keeps it: read from its record, or known from its object's
/// labels alone (a superseded record a list left unread, [`RevisionIndex::unread`]). An
/// unread revision costs its map entry and nothing else: a cold start of 10k releases with
/// Helm's history of 10 holds 90k of them.
#[derive(Debug, Clone)]
enum Slot {
    Read(Arc<RevisionIndex>),
    Unread,
}

impl Slot {
    fn of(rev: Arc<RevisionIndex>) -> Self {
        if rev.is_read() {
            Self::Read(rev)
        } else {
            Self::Unread
        }
    }

    fn read(&self) -> Option<&Arc<RevisionIndex>> {
        match self {
            Self::Read(rev) => Some(rev),
            Self::Unread => None,
        }
    }
}

/// All revisions of one release.
#[derive(Debug, Default, Clone)]
struct Entry {
    revisions: BTreeMap<u32, Slot>,
    /// The reverse-map keys this release registered (what a reindex must undo).
    rendered: Vec<WorkloadKey>,
}

impl Entry {
    /// Revisions older than the newest deployed one are never judged against again: only
    /// their values summary (for the stale-pin walk) is kept, not their workloads, and image
    /// path lists equal to another revision's are shared (implicit reuse repeats them).
    fn compact(&mut self) {
        let Some(floor) = self.view().deployed.map(|d| d.revision) else {
            return;
        };
        let mut pool: Vec<Arc<[ImageValue]>> = Vec::new();
        for rev in self.revisions.values().filter_map(Slot::read) {
            let v = &rev.values.values;
            for list in [&v.config_images, &v.chart_default_images] {
                // Pointer equality first: most lists are already shared.
                if !pool.iter().any(|p| Arc::ptr_eq(p, list) || **p == **list) {
                    pool.push(list.clone());
                }
            }
        }
        let share = |list: &Arc<[ImageValue]>| {
            pool.iter()
                .find(|p| Arc::ptr_eq(p, list) || ***p == **list)
                .cloned()
                .unwrap_or_else(|| list.clone())
        };
        for (_, slot) in self.revisions.range_mut(..floor) {
            let Slot::Read(rev) = slot else {
                continue;
            };
            if rev.status.is_pending() {
                continue;
            }
            let v = &rev.values.values;
            let shared = Arc::ptr_eq(&share(&v.config_images), &v.config_images)
                && Arc::ptr_eq(&share(&v.chart_default_images), &v.chart_default_images);
            if rev.workloads.is_empty() && rev.values.is_compact() && shared {
                continue;
            }
            let mut r = (**rev).clone();
            r.workloads = Box::default();
            r.values.compact();
            r.values.values.config_images = share(&r.values.values.config_images);
            r.values.values.chart_default_images = share(&r.values.values.chart_default_images);
            *rev = Arc::new(r);
        }
    }

    fn view(&self) -> ReleaseView {
        let deployed = self
            .revisions
            .values()
            .rev()
            .filter_map(Slot::read)
            .find(|r| r.status == Status::Deployed)
            .cloned();
        // Only a pending revision newer than the deployed one is an operation in progress.
        let floor = deployed.as_ref().map_or(0, |d| d.revision);
        let pending = self
            .revisions
            .range(floor + 1..)
            .rev()
            .filter_map(|(_, r)| r.read())
            .find(|r| r.status.is_pending())
            .cloned();
        ReleaseView { deployed, pending }
    }
}

/// The in-memory index of releases.
#[derive(Debug, Default)]
pub struct Index {
    releases: HashMap<ReleaseKey, Entry>,
    renderers: HashMap<WorkloadKey, ReleaseKey>,
    /// Records that did not decode, by release and revision: why (object and error category).
    broken: BTreeMap<(ReleaseKey, u32), String>,
}

/// The index as shared between its writers and the request path.
pub type SharedIndex = Arc<RwLock<Index>>;

impl Index {
    /// Adds or replaces one revision.
    pub fn apply(&mut self, rev: Arc<RevisionIndex>) {
        let key = rev.release.clone();
        self.broken.remove(&(key.clone(), rev.revision));
        let entry = self.releases.entry(key.clone()).or_default();
        entry.revisions.insert(rev.revision, Slot::of(rev));
        self.reindex(&key);
    }

    /// Forgets one revision (its record was deleted).
    pub fn delete(&mut self, release: &ReleaseKey, revision: u32) {
        self.broken.remove(&(release.clone(), revision));
        if let Some(entry) = self.releases.get_mut(release) {
            entry.revisions.remove(&revision);
            if entry.revisions.is_empty() {
                let gone = self
                    .releases
                    .remove(release)
                    .map(|e| e.rendered)
                    .unwrap_or_default();
                self.unregister(release, gone);
                return;
            }
        }
        self.reindex(release);
    }

    /// Replaces everything (a relist): releases not in `revisions` disappear.
    pub fn reset(&mut self, revisions: impl IntoIterator<Item = Arc<RevisionIndex>>) {
        self.broken.clear();
        self.releases.clear();
        self.renderers.clear();
        for rev in revisions {
            self.releases
                .entry(rev.release.clone())
                .or_default()
                .revisions
                .insert(rev.revision, Slot::of(rev));
        }
        // Everything was cleared: nothing to unregister, only to register.
        let keys: Vec<ReleaseKey> = self.releases.keys().cloned().collect();
        for k in keys {
            self.reindex(&k);
        }
    }

    /// Whether the index holds `revision` of `release` as read from its record (not an
    /// unread stand-in, see [`RevisionIndex::unread`]).
    pub fn holds_read(&self, release: &ReleaseKey, revision: u32) -> bool {
        self.releases
            .get(release)
            .and_then(|e| e.revisions.get(&revision))
            .is_some_and(|r| r.read().is_some())
    }

    /// The releases with an unread revision, sorted.
    pub fn unread_releases(&self) -> Vec<ReleaseKey> {
        let mut keys: Vec<ReleaseKey> = self
            .releases
            .iter()
            .filter(|(_, e)| e.revisions.values().any(|r| r.read().is_none()))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }

    /// Whether any revision of `release` is an unread stand-in.
    pub fn has_unread(&self, release: &ReleaseKey) -> bool {
        self.releases
            .get(release)
            .is_some_and(|e| e.revisions.values().any(|r| r.read().is_none()))
    }

    /// Records that a record of `release` at `revision` did not decode (`why` names the object
    /// and the error's category, never content).
    pub fn mark_broken(&mut self, release: ReleaseKey, revision: u32, why: String) {
        self.broken.insert((release, revision), why);
    }

    /// The releases known, sorted.
    pub fn keys(&self) -> Vec<ReleaseKey> {
        let mut keys: Vec<ReleaseKey> = self.releases.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Number of releases known.
    pub fn len(&self) -> usize {
        self.releases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.releases.is_empty()
    }

    fn unregister(&mut self, release: &ReleaseKey, keys: Vec<WorkloadKey>) {
        for k in keys {
            if self.renderers.get(&k) == Some(release) {
                self.renderers.remove(&k);
            }
        }
    }

    /// Rebuilds the reverse map entries of one release from its deployed and pending
    /// revisions (what a decision can be judged against), and compacts older revisions.
    /// Proportional to the release's own workloads, not to the whole index.
    fn reindex(&mut self, release: &ReleaseKey) {
        let old = self
            .releases
            .get_mut(release)
            .map(|e| std::mem::take(&mut e.rendered))
            .unwrap_or_default();
        self.unregister(release, old);
        let Some(entry) = self.releases.get_mut(release) else {
            return;
        };
        entry.compact();
        let view = entry.view();
        let mut keys = Vec::new();
        for rev in [view.deployed, view.pending].into_iter().flatten() {
            for w in rev.workloads.iter() {
                self.renderers.insert(w.key.clone(), release.clone());
                keys.push(w.key.clone());
            }
        }
        entry.rendered = keys;
    }
}

impl Releases for Index {
    fn release(&self, key: &ReleaseKey) -> Option<ReleaseView> {
        self.releases.get(key).map(Entry::view)
    }

    fn history(&self, key: &ReleaseKey) -> Vec<Arc<RevisionIndex>> {
        self.releases
            .get(key)
            .map(|e| {
                e.revisions
                    .iter()
                    .map(|(n, slot)| match slot {
                        Slot::Read(rev) => rev.clone(),
                        Slot::Unread => RevisionIndex::unread(key.clone(), *n),
                    })
                    .collect()
            })
            .unwrap_or_default()
    }

    fn renderer_of(&self, key: &WorkloadKey) -> Option<ReleaseKey> {
        self.renderers.get(key).cloned()
    }

    fn broken(&self, key: &ReleaseKey) -> Option<String> {
        // The newest broken revision of the release, if no newer one decoded.
        let newest_good = self
            .releases
            .get(key)
            .and_then(|e| e.revisions.keys().next_back().copied())
            .unwrap_or(0);
        self.broken
            .range((key.clone(), 0)..=(key.clone(), u32::MAX))
            .next_back()
            .filter(|((_, rev), _)| *rev > newest_good)
            .map(|(_, why)| why.clone())
    }
}

/// Read access through the shared lock. A poisoned lock still holds a consistent index (all
/// mutations are single inserts/removes), so it is read rather than propagated as a panic.
impl Releases for RwLock<Index> {
    fn release(&self, key: &ReleaseKey) -> Option<ReleaseView> {
        let guard = self.read().unwrap_or_else(|e| e.into_inner());
        guard.release(key)
    }

    fn history(&self, key: &ReleaseKey) -> Vec<Arc<RevisionIndex>> {
        let guard = self.read().unwrap_or_else(|e| e.into_inner());
        guard.history(key)
    }

    fn renderer_of(&self, key: &WorkloadKey) -> Option<ReleaseKey> {
        let guard = self.read().unwrap_or_else(|e| e.into_inner());
        guard.renderer_of(key)
    }

    fn broken(&self, key: &ReleaseKey) -> Option<String> {
        let guard = self.read().unwrap_or_else(|e| e.into_inner());
        guard.broken(key)
    }
}

/// Errors reading release records from files.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A path could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is neither JSON nor YAML Kubernetes objects.
    #[error("{path}: not Kubernetes objects in JSON or YAML ({why})")]
    Parse { path: PathBuf, why: String },
}

/// What loading found.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub records: usize,
    pub ignored_objects: usize,
    /// Release records that did not decode and were skipped: `path: error` (the error names
    /// the object and the category, never content).
    pub skipped: Vec<String>,
}

fn json_error(e: &serde_json::Error) -> String {
    format!(
        "JSON {} error at line {}",
        crate::helm::json_category(e),
        e.line()
    )
}

fn yaml_error(e: &serde_saphyr::Error) -> String {
    e.location().map_or_else(
        || "YAML error".to_owned(),
        |l| format!("YAML error at line {}", l.line()),
    )
}

fn yaml_options() -> serde_saphyr::Options {
    // Budget limits on; no snippets, so no error can quote the input.
    serde_saphyr::options! { with_snippet: false }
}

/// Parses one JSON or YAML document. Errors give a position, never a piece of the input.
pub fn parse_document(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        serde_json::from_str(text).map_err(|e| json_error(&e))
    } else {
        serde_saphyr::from_str_with_options(text, yaml_options()).map_err(|e| yaml_error(&e))
    }
}

/// Parses a file of Kubernetes objects: one JSON object or List, or multi-document YAML.
pub fn parse_objects(text: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = if text.trim_start().starts_with('{') {
        vec![serde_json::from_str(text).map_err(|e| json_error(&e))?]
    } else {
        serde_saphyr::from_multiple_with_options(text, yaml_options())
            .map_err(|e| yaml_error(&e))?
    };
    let mut out = Vec::new();
    for doc in docs {
        flatten(doc, &mut out);
    }
    Ok(out)
}

fn flatten(doc: Value, out: &mut Vec<Value>) {
    let is_list = doc
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k == "List" || k.ends_with("List"))
        && doc.get("items").is_some_and(Value::is_array);
    if is_list {
        if let Value::Object(mut m) = doc
            && let Some(Value::Array(items)) = m.remove("items")
        {
            for item in items {
                flatten(item, out);
            }
        }
    } else if !doc.is_null() {
        out.push(doc);
    }
}

/// Loads release records from files and directories (not recursive; `.json`, `.yaml`, `.yml`
/// in directories; any file named explicitly). A record that does not decode is skipped and
/// listed in the report (the caller says so on stderr), as the watch does: in
/// `kubectl get secrets -A -l owner=helm -o yaml`, one huge or corrupt release of another team
/// must not stop everyone's check. A file that cannot be read or parsed at all is an error.
pub fn load_files(
    paths: &[PathBuf],
    limits: DecodeLimits,
) -> Result<(Index, LoadReport), LoadError> {
    let files = object_files(paths)?;
    let mut index = Index::default();
    let mut report = LoadReport::default();
    for f in files {
        let text = std::fs::read_to_string(&f).map_err(|source| LoadError::Io {
            path: f.clone(),
            source,
        })?;
        let objects = parse_objects(&text).map_err(|why| LoadError::Parse {
            path: f.clone(),
            why,
        })?;
        for obj in &objects {
            match index_record(obj, limits) {
                Some(Ok(rev)) => {
                    report.records += 1;
                    index.apply(rev);
                }
                Some(Err(error)) => {
                    if let Some((_, namespace, name, _)) = release_record(obj)
                        && let Some((key, revision)) = parse_record_name(namespace, name)
                    {
                        index.mark_broken(key, revision, error.to_string());
                    }
                    report.skipped.push(format!("{}: {error}", f.display()));
                }
                None => report.ignored_objects += 1,
            }
        }
    }
    Ok((index, report))
}

/// The files `paths` name: each file as given, and the `.json`, `.yaml`, `.yml` files of
/// each directory (not recursive), sorted.
pub fn object_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut files = Vec::new();
    for p in paths {
        let meta = std::fs::metadata(p).map_err(|source| LoadError::Io {
            path: p.clone(),
            source,
        })?;
        if meta.is_dir() {
            let rd = std::fs::read_dir(p).map_err(|source| LoadError::Io {
                path: p.clone(),
                source,
            })?;
            let mut found: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| has_object_extension(f))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(p.clone());
        }
    }
    Ok(files)
}

fn has_object_extension(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("json" | "yaml" | "yml")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::build::{History, postgres_chart};
    use crate::values::coalesce::UpgradeValues;
    use crate::workload::WorkloadKind;
    use serde_json::json;

    fn sts() -> WorkloadKey {
        WorkloadKey::new(WorkloadKind::StatefulSet, "db", "db-postgresql")
    }

    #[test]
    fn views_follow_helm_write_order() {
        let mut h = History::install("db", "db", &postgres_chart("12.0.0", "11.22.0"), json!({}));
        let mut idx = Index::default();
        let apply_all = |idx: &mut Index, h: &History| {
            for r in &h.revisions {
                idx.apply(
                    index_record(&r.secret(), DecodeLimits::default())
                        .expect("record")
                        .expect("decodes"),
                );
            }
        };
        apply_all(&mut idx, &h);
        let key = ReleaseKey::new("db", "db");
        let v = idx.release(&key).expect("known");
        assert_eq!(v.deployed.as_ref().map(|r| r.revision), Some(1));
        assert!(v.pending.is_none());
        assert_eq!(idx.renderer_of(&sts()), Some(key.clone()));

        h.begin_upgrade(
            &postgres_chart("14.0.0", "15.4.0"),
            json!({}),
            UpgradeValues::ResetValues,
        );
        apply_all(&mut idx, &h);
        let v = idx.release(&key).expect("known");
        assert_eq!(v.deployed.as_ref().map(|r| r.revision), Some(1));
        assert_eq!(v.pending.as_ref().map(|r| r.revision), Some(2));

        h.complete();
        apply_all(&mut idx, &h);
        let v = idx.release(&key).expect("known");
        assert_eq!(v.deployed.as_ref().map(|r| r.revision), Some(2));
        assert!(v.pending.is_none());

        idx.delete(&key, 1);
        idx.delete(&key, 2);
        assert!(idx.release(&key).is_none());
        assert_eq!(idx.renderer_of(&sts()), None);
    }

    #[test]
    fn superseded_revisions_keep_only_their_values() {
        let mut h = History::install("db", "db", &postgres_chart("12.0.0", "11"), json!({}));
        for (v, tag) in [("13.0.0", "12"), ("14.0.0", "15")] {
            h.begin_upgrade(&postgres_chart(v, tag), json!({}), UpgradeValues::Default);
            h.complete();
        }
        let mut idx = Index::default();
        for r in &h.revisions {
            idx.apply(
                index_record(&r.secret(), DecodeLimits::default())
                    .expect("record")
                    .expect("decodes"),
            );
        }
        let key = ReleaseKey::new("db", "db");
        let history = idx.history(&key);
        assert_eq!(history.len(), 3);
        assert!(history[0].workloads.is_empty() && history[1].workloads.is_empty());
        assert!(!history[2].workloads.is_empty());
        assert_eq!(
            history[0].values.values.chart_version, "12.0.0",
            "values stay for the stale-pin walk"
        );
        assert_eq!(idx.renderer_of(&sts()), Some(key));
    }

    #[test]
    fn reset_drops_what_is_gone() {
        let h = History::install("db", "db", &postgres_chart("12.0.0", "11"), json!({}));
        let rev = index_record(&h.revisions[0].secret(), DecodeLimits::default())
            .expect("record")
            .expect("decodes");
        let mut idx = Index::default();
        idx.apply(rev);
        idx.reset(Vec::new());
        assert!(idx.is_empty());
        assert_eq!(idx.renderer_of(&sts()), None);
    }

    #[test]
    fn objects_from_json_lists_and_multi_document_yaml() {
        let h = History::install("db", "db", &postgres_chart("12.0.0", "11"), json!({}));
        let list = h.secrets_list().to_string();
        assert_eq!(parse_objects(&list).expect("json").len(), 1);
        let cm = h.revisions[0].config_map();
        let yaml = format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: other\n---\n{}\n",
            cm
        );
        let objs = parse_objects(&yaml).expect("yaml");
        assert_eq!(objs.len(), 2);
        assert!(index_record(&objs[0], DecodeLimits::default()).is_none());
        let rev = index_record(&objs[1], DecodeLimits::default())
            .expect("record")
            .expect("decodes");
        assert_eq!(rev.revision, 1);
        assert!(parse_objects("a: [").is_err());
    }
}
