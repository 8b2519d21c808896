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

mod state;
pub use state::*;

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
