//! The drift inventory kept live inside `serve`: every guarded workload kind watched, each
//! object reduced to its [`LiveWorkload`] view (never the whole object), judged with the same
//! [`judge`] as `scan`, and the result exposed as per-namespace gauges.
//!
//! ```text
//!  watcher(Deployment … Pod) ─> view (scan::read) ─┐  bounded channel
//!  Feed (release revisions applied) ─> Changes ────┼─> one task: State
//!                                                  │    re-judge the workload that changed,
//!                                                  │    or a changed release's workloads
//!                                                  └─> gauges per namespace, last full sync
//! ```
//!
//! Admission never waits on any of this: the request path only reads the release index, the
//! feed's hook is an insert into a set under a short mutex, and the judging task takes the
//! index's read lock once per lookup (never for a whole pass) and yields between chunks.
//! A workload kind the service account may not list or watch is logged once and retried
//! quietly with backoff: admission keeps serving, the gauges just stay empty for that kind.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use futures::StreamExt;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::{Notify, mpsc};
use tracing::{Instrument, debug, info, info_span, warn};

use crate::helm::{ReleaseKey, WorkloadKey};
use crate::metrics::InventoryMetrics;
use crate::policy::Releases;
use crate::policy::live::{Finding, FindingKind, Judgement, LiveWorkload, Templates, judge};
use crate::scan::{Outcome, StaleValue};
use crate::store::{Index, SharedIndex};
use crate::workload::{Container, WorkloadKind};

/// Workloads judged between two yields to the runtime during a pass over many.
const CHUNK: usize = 512;

/// Watch events queued between the watches and the judging task.
const QUEUE: usize = 1024;

/// Every kind the webhook guards, in the order they are watched.
pub const KINDS: [WorkloadKind; 7] = [
    WorkloadKind::Deployment,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::ReplicaSet,
    WorkloadKind::Job,
    WorkloadKind::CronJob,
    WorkloadKind::Pod,
];

/// Releases whose revisions changed since the inventory last looked: the release feed's side
/// of the hand-over. Inserting never waits on the inventory.
#[derive(Debug, Default)]
pub struct Changes {
    keys: Mutex<HashSet<ReleaseKey>>,
    notify: Notify,
}

impl Changes {
    /// A revision of `key` was applied or deleted.
    pub fn touch(&self, key: &ReleaseKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        if !keys.contains(key) {
            keys.insert(key.clone());
        }
        drop(keys);
        self.notify.notify_one();
    }

    fn take(&self) -> HashSet<ReleaseKey> {
        std::mem::take(&mut *self.keys.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// One workload as kept: its view and its last judgement.
#[derive(Debug)]
struct Kept {
    view: LiveWorkload,
    against: Option<ReleaseKey>,
    findings: Vec<Finding>,
}

/// Owner templates for judging Pods: the kept controllers' containers.
struct Views<'a>(&'a BTreeMap<WorkloadKey, Kept>);

impl Templates for Views<'_> {
    fn template(&self, key: &WorkloadKey) -> Option<&[Container]> {
        if key.kind == WorkloadKind::Pod {
            return None;
        }
        self.0.get(key).map(|k| k.view.containers.as_slice())
    }
}

/// Per-namespace totals as published.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Drifted and added containers (break-glass ones are allowed, not counted).
    pub drifted: usize,
    /// Stale persisted image values of the namespace's releases' newest revisions.
    pub stale: usize,
}

/// The inventory's state: pure and synchronous (the watches and the task are around it).
#[derive(Debug, Default)]
pub struct State {
    helm_managers: Vec<String>,
    /// Ordered by kind, namespace, name: a namespace's workloads of one kind are a range.
    workloads: BTreeMap<WorkloadKey, Kept>,
    /// Workloads judged against each release (what a change of that release re-judges).
    by_release: HashMap<ReleaseKey, HashSet<WorkloadKey>>,
    drifted: BTreeMap<String, usize>,
    stale_by_release: HashMap<ReleaseKey, Vec<StaleValue>>,
    stale: BTreeMap<String, usize>,
    /// Namespaces whose totals or findings changed since [`State::take_dirty`].
    dirty: BTreeSet<String>,
    /// The same, since [`State::take_report_dirty`] (the Report writer's own pace).
    report_dirty: BTreeSet<String>,
}

fn drifted(findings: &[Finding]) -> usize {
    findings
        .iter()
        .filter(|f| f.kind != FindingKind::BreakGlass)
        .count()
}

impl State {
    pub fn new(helm_managers: Vec<String>) -> Self {
        Self {
            helm_managers,
            ..Self::default()
        }
    }

    /// Workloads kept.
    pub fn len(&self) -> usize {
        self.workloads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workloads.is_empty()
    }

    /// Adds or replaces a workload and judges it (and, for a controller, the Pods below it,
    /// whose in-place edits are told apart from their owner's template).
    pub fn upsert(&mut self, view: LiveWorkload, releases: &impl Releases) {
        self.put(view, releases, true);
    }

    fn put(&mut self, view: LiveWorkload, releases: &impl Releases, with_pods: bool) {
        let key = view.key();
        let is_controller = with_pods && key.kind != WorkloadKind::Pod;
        match self.workloads.get_mut(&key) {
            Some(k) if k.view == view => return,
            Some(k) => k.view = view,
            None => {
                self.workloads.insert(
                    key.clone(),
                    Kept {
                        view,
                        against: None,
                        findings: Vec::new(),
                    },
                );
            }
        }
        self.rejudge(std::slice::from_ref(&key), releases);
        if is_controller {
            let pods = self.pods_owned_by(&key);
            self.rejudge(&pods, releases);
        }
    }

    /// Forgets a workload (deleted).
    pub fn remove(&mut self, key: &WorkloadKey) {
        if let Some(k) = self.workloads.remove(key) {
            self.set_judgement(key, None, Vec::new(), k.against, k.findings);
        }
    }

    /// A relist of `kind` in `namespace` (all namespaces when `None`) completed with `listed`:
    /// what that list no longer holds is forgotten, the rest upserted. Pods below a relisted
    /// controller are not re-judged one controller at a time (quadratic in a big namespace):
    /// the caller follows a completed list with a full pass ([`State::keys`]).
    pub fn relist(
        &mut self,
        kind: WorkloadKind,
        namespace: Option<&str>,
        listed: Vec<LiveWorkload>,
        releases: &impl Releases,
    ) {
        let seen: HashSet<WorkloadKey> = listed.iter().map(LiveWorkload::key).collect();
        let gone: Vec<WorkloadKey> = self
            .workloads
            .keys()
            .filter(|k| k.kind == kind && namespace.is_none_or(|ns| *k.namespace == *ns))
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            self.remove(k);
        }
        for view in listed {
            self.put(view, releases, false);
        }
    }

    /// Every key, for a full pass.
    pub fn keys(&self) -> Vec<WorkloadKey> {
        self.workloads.keys().cloned().collect()
    }

    /// The workloads a change of these releases may judge differently: those judged against
    /// them, and every workload in the namespaces they live in or render into (a release that
    /// appears may now resolve workloads nothing resolved before).
    pub fn affected_by(
        &self,
        changed: &HashSet<ReleaseKey>,
        index: &impl Releases,
    ) -> Vec<WorkloadKey> {
        let mut namespaces: BTreeSet<&str> = BTreeSet::new();
        let mut out: BTreeSet<WorkloadKey> = BTreeSet::new();
        let rendered: Vec<WorkloadKey> = changed
            .iter()
            .filter_map(|k| index.release(k).and_then(|v| v.deployed))
            .flat_map(|rev| {
                rev.workloads
                    .iter()
                    .map(|w| w.key.clone())
                    .collect::<Vec<_>>()
            })
            .collect();
        for key in changed {
            namespaces.insert(&key.namespace);
            if let Some(set) = self.by_release.get(key) {
                out.extend(set.iter().cloned());
            }
        }
        for w in &rendered {
            namespaces.insert(&w.namespace);
        }
        for ns in namespaces {
            for kind in KINDS {
                out.extend(self.in_namespace(kind, ns).cloned());
            }
        }
        out.into_iter().collect()
    }

    /// The stale image values of a changed release's newest revision (what `pins` shows).
    pub fn set_stale(&mut self, release: &ReleaseKey, values: Vec<StaleValue>) {
        let count = values.len();
        let old = if values.is_empty() {
            self.stale_by_release.remove(release).unwrap_or_default()
        } else {
            self.stale_by_release
                .insert(release.clone(), values.clone())
                .unwrap_or_default()
        };
        if old == values {
            return;
        }
        let old = old.len();
        let ns = release.namespace.to_string();
        let total = self.stale.entry(ns.clone()).or_default();
        *total = (*total + count).saturating_sub(old);
        if *total == 0 {
            self.stale.remove(&ns);
        }
        self.report_dirty.insert(ns.clone());
        self.dirty.insert(ns);
    }

    /// Judges these workloads again.
    pub fn rejudge(&mut self, keys: &[WorkloadKey], releases: &impl Releases) {
        for key in keys {
            let Some(kept) = self.workloads.get(key) else {
                continue;
            };
            let Judgement { against, findings } = judge(
                &kept.view,
                releases,
                &Views(&self.workloads),
                &self.helm_managers,
            );
            let against = against.map(|(r, _)| r);
            let Some(kept) = self.workloads.get_mut(key) else {
                continue;
            };
            if kept.against == against && kept.findings == findings {
                continue;
            }
            let old_against = std::mem::replace(&mut kept.against, against.clone());
            let old = std::mem::replace(&mut kept.findings, findings.clone());
            self.set_judgement(key, against, findings, old_against, old);
        }
    }

    /// Book-keeping of one workload's judgement going from `old` to `new`.
    fn set_judgement(
        &mut self,
        key: &WorkloadKey,
        against: Option<ReleaseKey>,
        findings: Vec<Finding>,
        old_against: Option<ReleaseKey>,
        old: Vec<Finding>,
    ) {
        if old_against != against {
            if let Some(r) = &old_against
                && let Some(set) = self.by_release.get_mut(r)
            {
                set.remove(key);
                if set.is_empty() {
                    self.by_release.remove(r);
                }
            }
            if let Some(r) = against {
                self.by_release.entry(r).or_default().insert(key.clone());
            }
        }
        if old == findings {
            return;
        }
        let ns = key.namespace.to_string();
        let (before, after) = (drifted(&old), drifted(&findings));
        if before != after {
            let total = self.drifted.entry(ns.clone()).or_default();
            *total = (*total + after).saturating_sub(before);
            if *total == 0 {
                self.drifted.remove(&ns);
            }
        }
        self.report_dirty.insert(ns.clone());
        self.dirty.insert(ns);
    }

    fn in_namespace<'a>(
        &'a self,
        kind: WorkloadKind,
        ns: &'a str,
    ) -> impl Iterator<Item = &'a WorkloadKey> + 'a {
        self.workloads
            .range(WorkloadKey::new(kind, ns, "")..)
            .map(|(k, _)| k)
            .take_while(move |k| k.kind == kind && *k.namespace == *ns)
    }

    fn pods_owned_by(&self, owner: &WorkloadKey) -> Vec<WorkloadKey> {
        self.workloads
            .range(WorkloadKey::new(WorkloadKind::Pod, &owner.namespace, "")..)
            .take_while(|(k, _)| k.kind == WorkloadKind::Pod && k.namespace == owner.namespace)
            .filter(|(_, w)| {
                w.view
                    .owners
                    .iter()
                    .any(|o| o.kind == owner.kind.as_str() && o.name == *owner.name)
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Totals of a namespace (zero when it has no findings).
    pub fn counts(&self, namespace: &str) -> Counts {
        Counts {
            drifted: self.drifted.get(namespace).copied().unwrap_or(0),
            stale: self.stale.get(namespace).copied().unwrap_or(0),
        }
    }

    /// Findings of one namespace, in workload order.
    pub fn findings(&self, namespace: &str) -> Vec<&Finding> {
        self.workloads
            .iter()
            .filter(|(k, _)| *k.namespace == *namespace)
            .flat_map(|(_, w)| w.findings.iter())
            .collect()
    }

    /// Namespaces whose totals or findings changed since the last call.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// Namespaces whose findings changed since the Report writer last asked.
    pub fn take_report_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.report_dirty)
    }

    /// Every namespace with findings or stale values now.
    pub fn namespaces(&self) -> BTreeSet<String> {
        let mut all: BTreeSet<String> = self.stale.keys().cloned().collect();
        for (k, w) in &self.workloads {
            if !w.findings.is_empty() {
                all.insert(k.namespace.to_string());
            }
        }
        all
    }

    /// What a namespace's Report says, as a scan outcome of that namespace alone; `None` when
    /// there is nothing to report.
    pub fn outcome(&self, namespace: &str) -> Option<Outcome> {
        let findings: Vec<Finding> = self.findings(namespace).into_iter().cloned().collect();
        let mut stale: Vec<StaleValue> = self
            .stale_by_release
            .iter()
            .filter(|(k, _)| *k.namespace == *namespace)
            .flat_map(|(_, v)| v.iter().cloned())
            .collect();
        if findings.is_empty() && stale.is_empty() {
            return None;
        }
        stale.sort_by(|a, b| (&a.release, &a.pin.path).cmp(&(&b.release, &b.pin.path)));
        Some(Outcome {
            findings,
            stale,
            ..Outcome::default()
        })
    }
}

/// What to watch and how to judge.
#[derive(Clone, Debug)]
pub struct InventoryConfig {
    /// Namespaces watched; empty: all.
    pub namespaces: Vec<String>,
    pub helm_managers: Vec<String>,
}

/// One event of one workload watch, after reading.
#[derive(Debug)]
enum Msg {
    Init(usize),
    InitApply(usize, LiveWorkload),
    InitDone(usize),
    Apply(LiveWorkload),
    Delete(WorkloadKey),
}

#[derive(Clone, Debug)]
struct Source {
    kind: WorkloadKind,
    namespace: Option<String>,
}

fn api_resource(kind: WorkloadKind) -> ApiResource {
    let (group, api_version) = match kind {
        WorkloadKind::Deployment
        | WorkloadKind::StatefulSet
        | WorkloadKind::DaemonSet
        | WorkloadKind::ReplicaSet => ("apps", "apps/v1"),
        WorkloadKind::Job | WorkloadKind::CronJob => ("batch", "batch/v1"),
        WorkloadKind::Pod => ("", "v1"),
    };
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: api_version.into(),
        kind: kind.as_str().into(),
        plural: kind.resource().into(),
    }
}

/// Reads a watched object into its view, through the same reader as `scan` (the whole object
/// lives only for this call).
fn view_of(obj: &DynamicObject, ar: &ApiResource) -> Option<LiveWorkload> {
    let text = serde_json::to_string(obj).ok()?;
    match crate::scan::read::workload(&text, Some(&ar.kind), Some(&ar.api_version)) {
        crate::scan::read::Read::Workload(w) => Some(w),
        _ => None,
    }
}

/// Whether a watch error says the API will not serve this to us (RBAC, or the kind absent).
fn refused(error: &watcher::Error) -> bool {
    let status = match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => match e {
            kube::Error::Api(s) => Some(s.code),
            _ => None,
        },
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::NoResourceVersion => None,
    };
    matches!(status, Some(401 | 403 | 404))
}

/// Feeds one workload watch into the judging task. A refusal is logged once; the watch goes
/// on retrying with backoff (granting the RBAC later needs no restart).
async fn drive_watch(client: Client, id: usize, source: Source, tx: mpsc::Sender<Msg>) {
    let ar = api_resource(source.kind);
    let api: Api<DynamicObject> = match &source.namespace {
        Some(ns) => Api::namespaced_with(client, ns, &ar),
        None => Api::all_with(client, &ar),
    };
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    let mut said = false;
    while let Some(item) = stream.next().await {
        let msg = match item {
            Ok(Event::Init) => Msg::Init(id),
            Ok(Event::InitApply(obj)) => match view_of(&obj, &ar) {
                Some(v) => Msg::InitApply(id, v),
                None => continue,
            },
            Ok(Event::InitDone) => {
                said = false;
                Msg::InitDone(id)
            }
            Ok(Event::Apply(obj)) => match view_of(&obj, &ar) {
                Some(v) => Msg::Apply(v),
                None => continue,
            },
            Ok(Event::Delete(obj)) => {
                let ns = obj.metadata.namespace.as_deref().unwrap_or("default");
                let name = obj.metadata.name.as_deref().unwrap_or_default();
                Msg::Delete(WorkloadKey::new(source.kind, ns, name))
            }
            Err(error) => {
                if !said {
                    said = true;
                    if refused(&error) {
                        warn!(%error, "inventory cannot list/watch this kind (RBAC: the reports component grants it); admission is unaffected, retrying quietly");
                    } else {
                        warn!(%error, "inventory watch failed; retrying");
                    }
                } else {
                    debug!(%error, "inventory watch failed again");
                }
                continue;
            }
        };
        if tx.send(msg).await.is_err() {
            return;
        }
    }
}

/// A running inventory's shared state (for reports and tests).
pub type SharedState = Arc<tokio::sync::Mutex<State>>;

/// Starts a watch per kind and scope and the judging task. `changes` must be the one the
/// release feed was given ([`crate::watch::Feed::notify_changes`]).
pub fn spawn(
    client: &Client,
    config: &InventoryConfig,
    index: SharedIndex,
    changes: Arc<Changes>,
    metrics: InventoryMetrics,
) -> (SharedState, Vec<tokio::task::JoinHandle<()>>) {
    let scopes: Vec<Option<String>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().cloned().map(Some).collect()
    };
    let sources: Vec<Source> = scopes
        .iter()
        .flat_map(|ns| {
            KINDS.into_iter().map(|kind| Source {
                kind,
                namespace: ns.clone(),
            })
        })
        .collect();
    let (tx, rx) = mpsc::channel(QUEUE);
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = sources
        .iter()
        .enumerate()
        .map(|(id, source)| {
            let span = info_span!(
                "inventory",
                resource = source.kind.resource(),
                namespace = source.namespace.as_deref().unwrap_or("*")
            );
            tokio::spawn(
                drive_watch(client.clone(), id, source.clone(), tx.clone()).instrument(span),
            )
        })
        .collect();
    drop(tx);
    let state: SharedState = Arc::new(tokio::sync::Mutex::new(State::new(
        config.helm_managers.clone(),
    )));
    tasks.push(tokio::spawn(
        run(state.clone(), sources, rx, index, changes, metrics)
            .instrument(info_span!("inventory")),
    ));
    (state, tasks)
}

/// Judges in chunks, yielding between them so a pass over thousands never hogs a worker.
async fn rejudge_chunked(state: &SharedState, keys: Vec<WorkloadKey>, index: &RwLock<Index>) {
    for chunk in keys.chunks(CHUNK) {
        state.lock().await.rejudge(chunk, index);
        tokio::task::yield_now().await;
    }
}

async fn run(
    state: SharedState,
    sources: Vec<Source>,
    mut rx: mpsc::Receiver<Msg>,
    index: SharedIndex,
    changes: Arc<Changes>,
    metrics: InventoryMetrics,
) {
    let mut listing: HashMap<usize, Vec<LiveWorkload>> = HashMap::new();
    let mut synced = vec![false; sources.len()];
    let mut announced = false;
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let mut full = false;
                {
                    let mut st = state.lock().await;
                    let mut next = Some(msg);
                    let mut n = 0;
                    while let Some(msg) = next.take() {
                        match msg {
                            Msg::Init(id) => { listing.insert(id, Vec::new()); }
                            Msg::InitApply(id, v) => listing.entry(id).or_default().push(v),
                            Msg::InitDone(id) => {
                                let listed = listing.remove(&id).unwrap_or_default();
                                if let Some(s) = sources.get(id) {
                                    st.relist(s.kind, s.namespace.as_deref(), listed, &*index);
                                }
                                if let Some(s) = synced.get_mut(id) { *s = true; }
                                if synced.iter().all(|s| *s) { full = true; }
                            }
                            Msg::Apply(v) => st.upsert(v, &*index),
                            Msg::Delete(k) => st.remove(&k),
                        }
                        n += 1;
                        if n < CHUNK {
                            next = rx.try_recv().ok();
                        }
                    }
                }
                if full {
                    // Every kind listed: one pass over everything, so owner templates listed
                    // after their Pods are taken into account, then the sync time.
                    let keys = state.lock().await.keys();
                    let n = keys.len();
                    rejudge_chunked(&state, keys, &index).await;
                    metrics.set_last_sync(SystemTime::now());
                    if !std::mem::replace(&mut announced, true) {
                        info!(workloads = n, "inventory: every workload kind listed");
                    }
                }
            }
            () = changes.notify.notified() => {
                let changed = changes.take();
                // One read lock per release, never across an await or a whole pass.
                let stale: Vec<(ReleaseKey, Vec<StaleValue>)> = changed
                    .iter()
                    .map(|k| {
                        let idx = index.read().unwrap_or_else(|e| e.into_inner());
                        (k.clone(), crate::scan::stale_values(&idx, k))
                    })
                    .collect();
                let keys = state.lock().await.affected_by(&changed, &*index);
                {
                    let mut st = state.lock().await;
                    for (k, v) in stale {
                        st.set_stale(&k, v);
                    }
                }
                rejudge_chunked(&state, keys, &index).await;
            }
        }
        let mut st = state.lock().await;
        for ns in st.take_dirty() {
            metrics.set_namespace(&ns, st.counts(&ns));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::demo::build::{History, postgres_chart};
    use crate::helm::DecodeLimits;
    use crate::helm::record::index_record;
    use crate::values::coalesce::UpgradeValues;
    use serde_json::{Value, json};

    const CANARY: &str = "CANARY-inventory-s3cret";

    fn pg(tag: &str) -> String {
        format!("docker.io/bitnami/postgresql:{tag}")
    }

    fn apply(index: &RwLock<Index>, h: &History) -> HashSet<ReleaseKey> {
        // Every history here is release db/db.
        let mut idx = index.write().expect("lock");
        for r in &h.revisions {
            idx.apply(
                index_record(&r.secret(), DecodeLimits::default())
                    .expect("record")
                    .expect("decodes"),
            );
        }
        HashSet::from([ReleaseKey::new("db", "db")])
    }

    fn view(json: Value) -> LiveWorkload {
        match crate::scan::read::workload(&json.to_string(), None, None) {
            crate::scan::read::Read::Workload(w) => w,
            _ => panic!("not a workload"),
        }
    }

    fn sts(image: &str) -> LiveWorkload {
        view(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db-postgresql", "namespace": "db",
                "annotations": {"meta.helm.sh/release-name": "db", "meta.helm.sh/release-namespace": "db"},
                "managedFields": [{"manager": "kubectl-set", "operation": "Update", "time": "2026-11-27T08:00:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers":
                        {"k:{\"name\":\"postgresql\"}": {"f:image": {}}}}}}}}]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "postgresql", "image": image},
                {"name": "metrics", "image": "docker.io/bitnami/postgres-exporter:0.15.0"}]}}}}))
    }

    fn pod(i: u32, image: &str) -> LiveWorkload {
        view(json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("db-postgresql-{i}"), "namespace": "db",
                "ownerReferences": [{"kind": "StatefulSet", "name": "db-postgresql", "controller": true}]},
            "spec": {"containers": [{"name": "postgresql", "image": image},
                {"name": "metrics", "image": "docker.io/bitnami/postgres-exporter:0.15.0"}]}}))
    }

    #[test]
    fn drift_appears_clears_on_restore_and_on_a_revision_rendering_it() {
        let index = RwLock::new(Index::default());
        let mut h = History::install(
            "db",
            "db",
            &postgres_chart("12.0.0", "11.22.0"),
            json!({"auth": {"postgresPassword": CANARY}}),
        );
        apply(&index, &h);
        let mut st = State::new(vec!["helm".into()]);
        // Drift that existed before start: the first list.
        st.relist(
            WorkloadKind::StatefulSet,
            None,
            vec![sts(&pg("15.4.0"))],
            &index,
        );
        st.relist(
            WorkloadKind::Pod,
            None,
            vec![pod(0, &pg("15.4.0")), pod(1, &pg("9.6"))],
            &index,
        );
        assert_eq!(
            st.counts("db").drifted,
            2,
            "the StatefulSet and the edited Pod"
        );
        assert_eq!(st.take_dirty(), BTreeSet::from(["db".to_owned()]));
        let f = st.findings("db");
        assert_eq!(f[0].manager.as_deref(), Some("kubectl-set"));
        assert!(!format!("{f:?}").contains(CANARY));

        // The same object again: nothing changed, nothing to publish.
        st.upsert(sts(&pg("15.4.0")), &index);
        assert!(st.take_dirty().is_empty());

        // Restoring the chart's image clears the owner; the Pod that followed its template
        // stays clean, the one edited in place still drifts.
        st.upsert(sts(&pg("11.22.0")), &index);
        assert_eq!(
            st.counts("db").drifted,
            2,
            "pod 0 now differs from its owner"
        );
        st.upsert(pod(0, &pg("11.22.0")), &index);
        st.remove(&pod(1, "").key());
        assert_eq!(st.counts("db"), Counts::default());
        assert!(st.take_dirty().contains("db"));

        // Drift to 15.4.0, then a revision rendering 15.4.0 is deployed: clean again.
        st.upsert(sts(&pg("15.4.0")), &index);
        assert_eq!(st.counts("db").drifted, 1);
        h.begin_upgrade(
            &postgres_chart("14.0.0", "15.4.0"),
            json!({}),
            UpgradeValues::ResetValues,
        );
        h.complete();
        let changed = apply(&index, &h);
        let keys = st.affected_by(&changed, &index);
        assert!(keys.contains(&sts("").key()));
        st.rejudge(&keys, &index);
        assert_eq!(
            st.counts("db").drifted,
            1,
            "pod 0 still runs 11.22.0 in place"
        );
        st.upsert(pod(0, &pg("15.4.0")), &index);
        assert_eq!(st.counts("db"), Counts::default());
    }

    #[test]
    fn stale_values_and_relists_are_counted_per_namespace() {
        let index = RwLock::new(Index::default());
        let mut h = History::install(
            "db",
            "db",
            &postgres_chart("12.0.0", "11.22.0"),
            json!({"image": {"tag": "11.22.0"}, "auth": {"postgresPassword": CANARY}}),
        );
        h.begin_upgrade(
            &postgres_chart("14.0.0", "15.4.0"),
            json!({}),
            UpgradeValues::Default,
        );
        h.complete();
        let changed = apply(&index, &h);
        let mut st = State::new(vec!["helm".into()]);
        for k in &changed {
            let v = crate::scan::stale_values(&index.read().expect("lock"), k);
            st.set_stale(k, v);
        }
        assert_eq!(st.counts("db").stale, 1, "image.tag pinned at install");
        let outcome = st.outcome("db").expect("stale values reported");
        assert_eq!(outcome.stale.len(), 1);
        assert!(!format!("{outcome:?}").contains(CANARY));
        st.set_stale(&ReleaseKey::new("db", "db"), Vec::new());
        assert!(st.outcome("db").is_none());
        assert_eq!(st.counts("db"), Counts::default());

        st.relist(
            WorkloadKind::StatefulSet,
            None,
            vec![sts(&pg("9.6"))],
            &index,
        );
        assert_eq!(st.counts("db").drifted, 1);
        // A relist of another kind or namespace keeps it; its own relist without it drops it.
        st.relist(WorkloadKind::Pod, None, Vec::new(), &index);
        st.relist(WorkloadKind::StatefulSet, Some("web"), Vec::new(), &index);
        assert_eq!(st.len(), 1);
        st.relist(WorkloadKind::StatefulSet, None, Vec::new(), &index);
        assert!(st.is_empty());
        assert_eq!(st.counts("db"), Counts::default());
    }

    #[test]
    fn gauges_follow_namespaces_and_drop_cleared_ones() {
        let mut registry = prometheus_client::registry::Registry::default();
        let m = crate::metrics::Metrics::register(&mut registry);
        m.inventory.set_namespace(
            "db",
            Counts {
                drifted: 2,
                stale: 1,
            },
        );
        m.inventory.set_namespace(
            "web",
            Counts {
                drifted: 1,
                stale: 0,
            },
        );
        m.inventory
            .set_last_sync(std::time::UNIX_EPOCH + std::time::Duration::from_secs(42));
        let text = crate::metrics::encode(&registry);
        for want in [
            r#"helm_guard_drifted_containers{namespace="db"} 2"#,
            r#"helm_guard_drifted_containers{namespace="web"} 1"#,
            r#"helm_guard_stale_image_values{namespace="db"} 1"#,
            "helm_guard_inventory_last_sync_timestamp_seconds 42",
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(!text.contains(r#"helm_guard_stale_image_values{namespace="web"}"#));
        m.inventory.set_namespace("db", Counts::default());
        let text = crate::metrics::encode(&registry);
        assert!(!text.contains(r#"namespace="db""#), "{text}");
    }

    #[test]
    fn view_is_small() {
        // What one kept workload costs: the view's inline size plus its heap (strings and
        // vectors at their capacity). Printed for the README; bounded here.
        let v = sts(&pg("15.4.0"));
        let heap = v.namespace.capacity()
            + v.name.capacity()
            + v.containers.capacity() * std::mem::size_of::<Container>()
            + v.image_owners.capacity() * std::mem::size_of::<crate::policy::ImageOwner>()
            + v.containers
                .iter()
                .map(|c| c.name.len() + 3 * c.image.as_str().len()) // raw, canonical, tagged
                .sum::<usize>()
            + v.image_owners
                .iter()
                .map(|o| o.container.len() + o.manager.len() + o.time.len())
                .sum::<usize>()
            + v.release_annotation
                .as_ref()
                .map_or(0, |r| r.namespace.len() + r.name.len());
        let inline = std::mem::size_of::<Kept>();
        println!("kept workload: {inline} B inline + {heap} B heap");
        assert!(inline + heap < 4096, "{inline} + {heap}");
    }
}
