//! The cluster side: watch events into the release store, readiness and staleness, the
//! fallback lookup, Events and metrics.
//!
//! Two ways in. Watch-event streams are pushed straight into [`watch::drive`] (kubert's way
//! of testing an index: no API server). The kube client path — `kube::runtime::watcher`,
//! `Api::list`, kube's event `Recorder` — runs against [`FakeApi`], a small stand-in for the
//! Kubernetes API server over plain HTTP on 127.0.0.1 that speaks just enough of the real
//! list/watch protocol: lists with `metadata.resourceVersion`, chunked newline-delimited
//! watch streams (`ADDED`/`MODIFIED`/`DELETED`/`BOOKMARK`), a `410 Expired` watch error that
//! forces a relist, and event creation. It is not an API server: no validation, no
//! resourceVersion history, no field selectors.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use futures::StreamExt;
use futures::channel::mpsc as fmpsc;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::core::DeserializeGuard;
use kube::runtime::events::Reporter;
use kube::runtime::watcher::{self, Event};
use prometheus_client::registry::Registry;
use serde_json::{Value, json};

use helm_guard::demo::build::{History, ReleaseRecord, postgres_chart};
use helm_guard::events::EventQueue;
use helm_guard::helm::{DecodeLimits, RecordKind, ReleaseKey};
use helm_guard::lookup::{Fallback, FallbackConfig, LookupOutcome, Want};
use helm_guard::metrics::{self, Metrics, Observation};
use helm_guard::policy::{EventIntent, Mode, Releases, Settings};
use helm_guard::store::{Index, SharedIndex};
use helm_guard::values::coalesce::UpgradeValues;
use helm_guard::watch::{self, Feed, WatchConfig};

// === fixtures ===

fn history(name: &str, namespace: &str) -> History {
    History::install(
        name,
        namespace,
        &postgres_chart("12.0.0", "11.22.0"),
        json!({}),
    )
}

fn secret(r: &ReleaseRecord) -> DeserializeGuard<Secret> {
    DeserializeGuard(Ok(serde_json::from_value(r.secret()).expect("a Secret")))
}

fn config_map(r: &ReleaseRecord) -> DeserializeGuard<ConfigMap> {
    DeserializeGuard(Ok(
        serde_json::from_value(r.config_map()).expect("a ConfigMap")
    ))
}

/// A release Secret whose `data.release` is not a Helm record.
fn broken_secret_json(name: &str, namespace: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": format!("sh.helm.release.v1.{name}.v1"), "namespace": namespace,
                     "labels": {"owner": "helm", "name": name, "version": "1"}},
        // base64 of "CANARY secret, not gzip"
        "data": {"release": "Q0FOQVJZIHNlY3JldCwgbm90IGd6aXA="},
    })
}

fn broken_secret(name: &str, namespace: &str) -> DeserializeGuard<Secret> {
    DeserializeGuard(Ok(serde_json::from_value(broken_secret_json(
        name, namespace,
    ))
    .expect("a Secret")))
}

struct Harness {
    index: SharedIndex,
    feed: Arc<Feed>,
    ready: Arc<AtomicBool>,
    registry: Registry,
    metrics: Metrics,
}

fn harness() -> Harness {
    helm_guard::tls::install_provider();
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let index: SharedIndex = Arc::new(RwLock::new(Index::default()));
    let ready = Arc::new(AtomicBool::new(false));
    let feed = Feed::new(
        index.clone(),
        DecodeLimits::default(),
        metrics.store.clone(),
        ready.clone(),
    );
    Harness {
        index,
        feed,
        ready,
        registry,
        metrics,
    }
}

impl Harness {
    fn text(&self) -> String {
        metrics::encode(&self.registry)
    }
    fn keys(&self) -> Vec<String> {
        let idx = self.index.read().expect("lock");
        idx.keys().iter().map(ToString::to_string).collect()
    }
}

/// Polls `cond` for up to 10 s.
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

type WatchItem<K> = Result<Event<DeserializeGuard<K>>, watcher::Error>;

// === (a) watch events → index ===

#[tokio::test]
async fn watch_events_drive_the_index_and_relists_drop_what_is_gone() {
    let h = harness();
    let source = h.feed.add_source(RecordKind::Secret, None);
    let (tx, rx) = fmpsc::unbounded::<WatchItem<Secret>>();
    tokio::spawn(watch::drive(h.feed.clone(), source, rx));

    let mut db = history("db", "db");
    let web = history("web", "web");
    let cache = history("cache", "cache");
    let send = |e: WatchItem<Secret>| tx.unbounded_send(e).expect("driver alive");

    send(Ok(Event::Init));
    send(Ok(Event::InitApply(secret(&db.revisions[0]))));
    send(Ok(Event::InitApply(broken_secret("broken", "db"))));
    send(Ok(Event::InitApply(secret(&web.revisions[0]))));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!h.ready.load(Ordering::Acquire), "ready before InitDone");
    // A list is applied as it arrives (the index is never held twice); readiness waits.
    eventually("listed revisions applied before InitDone", || {
        h.keys() == ["db/db", "web/web"]
    })
    .await;
    assert!(!h.ready.load(Ordering::Acquire), "ready before InitDone");
    send(Ok(Event::InitApply(secret(&cache.revisions[0]))));
    send(Ok(Event::InitDone));
    eventually("ready", || h.ready.load(Ordering::Acquire)).await;
    assert_eq!(h.keys(), ["cache/cache", "db/db", "web/web"]);
    assert_eq!(
        h.feed.undecodable(),
        ["Secret db/sh.helm.release.v1.broken.v1"]
    );
    let text = h.text();
    assert!(
        text.contains(r#"helm_guard_release_decode_failures_total{reason="gzip"} 1"#)
            || text.contains(r#"helm_guard_release_decode_failures_total{reason="base64"} 1"#),
        "{text}"
    );
    assert!(!text.contains("CANARY"));
    assert!(text.contains("helm_guard_releases_indexed 3"));
    assert!(text.contains("helm_guard_store_stale 0"));

    // helm upgrade: the pending revision arrives as an Apply, then the status flip.
    db.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({}),
        UpgradeValues::ResetValues,
    );
    send(Ok(Event::Apply(secret(&db.revisions[1]))));
    let key = ReleaseKey::new("db", "db");
    eventually("pending revision", || {
        h.index
            .release(&key)
            .is_some_and(|v| v.pending.is_some_and(|p| p.revision == 2))
    })
    .await;
    db.complete();
    send(Ok(Event::Apply(secret(&db.revisions[0]))));
    send(Ok(Event::Apply(secret(&db.revisions[1]))));
    eventually("deployed revision 2", || {
        h.index
            .release(&key)
            .is_some_and(|v| v.deployed.is_some_and(|d| d.revision == 2) && v.pending.is_none())
    })
    .await;

    // kubectl delete secret: the release goes.
    send(Ok(Event::Delete(secret(&web.revisions[0]))));
    eventually("web deleted", || h.keys() == ["cache/cache", "db/db"]).await;

    // A failure: stale, still ready, the restart counted; the relist (without cache, whose
    // deletion was missed) drops it and clears staleness.
    send(Err(watcher::Error::NoResourceVersion));
    eventually("stale", || h.feed.is_stale()).await;
    assert!(
        h.ready.load(Ordering::Acquire),
        "ready survives a watch failure"
    );
    assert!(h.text().contains("helm_guard_store_stale 1"));
    assert!(
        h.text()
            .contains(r#"helm_guard_watch_restarts_total{resource="secrets"} 1"#)
    );
    send(Ok(Event::Init));
    for r in &db.revisions {
        send(Ok(Event::InitApply(secret(r))));
    }
    send(Ok(Event::InitDone));
    eventually("relist applied", || h.keys() == ["db/db"]).await;
    assert!(!h.feed.is_stale());
    assert!(
        h.feed.undecodable().is_empty(),
        "the broken record is gone too"
    );
    assert!(h.text().contains("helm_guard_releases_indexed 1"));
}

#[tokio::test]
async fn a_secret_relist_keeps_configmap_releases_and_readiness_waits_for_every_watch() {
    let h = harness();
    let secrets = h.feed.add_source(RecordKind::Secret, None);
    let cms = h.feed.add_source(RecordKind::ConfigMap, None);
    let (stx, srx) = fmpsc::unbounded::<WatchItem<Secret>>();
    let (ctx, crx) = fmpsc::unbounded::<WatchItem<ConfigMap>>();
    tokio::spawn(watch::drive(h.feed.clone(), secrets, srx));
    tokio::spawn(watch::drive(h.feed.clone(), cms, crx));
    let db = history("db", "db");
    let legacy = history("legacy", "old");

    stx.unbounded_send(Ok(Event::Init)).expect("alive");
    stx.unbounded_send(Ok(Event::InitApply(secret(&db.revisions[0]))))
        .expect("alive");
    stx.unbounded_send(Ok(Event::InitDone)).expect("alive");
    eventually("secrets listed", || h.keys() == ["db/db"]).await;
    assert!(
        !h.ready.load(Ordering::Acquire),
        "ConfigMaps have not listed yet"
    );

    ctx.unbounded_send(Ok(Event::Init)).expect("alive");
    ctx.unbounded_send(Ok(Event::InitApply(config_map(&legacy.revisions[0]))))
        .expect("alive");
    ctx.unbounded_send(Ok(Event::InitDone)).expect("alive");
    eventually("ready", || h.ready.load(Ordering::Acquire)).await;
    assert_eq!(h.keys(), ["db/db", "old/legacy"]);

    // An empty Secret relist drops Secret-backed releases only.
    stx.unbounded_send(Ok(Event::Init)).expect("alive");
    stx.unbounded_send(Ok(Event::InitDone)).expect("alive");
    eventually("secret relist", || h.keys() == ["old/legacy"]).await;
}

// === the fake API server ===

#[derive(Default)]
struct FakeState {
    /// Secrets by namespace/name.
    secrets: BTreeMap<String, Value>,
    rv: u64,
    watchers: Vec<fmpsc::UnboundedSender<Value>>,
}

/// A workload watch: its resource and its stream.
type WorkloadWatcher = (String, fmpsc::UnboundedSender<Value>);
/// `(namespace, apply|delete, field manager, x-replica)`.
type ReportWrite = (String, &'static str, String, String);

#[derive(Clone, Default)]
struct FakeApi {
    state: Arc<Mutex<FakeState>>,
    /// Cluster-wide Secret lists (the watcher's LIST).
    lists: Arc<AtomicUsize>,
    /// Watch requests.
    watches: Arc<AtomicUsize>,
    /// Namespaced Secret lists (the fallback's LIST).
    lookups: Arc<AtomicUsize>,
    /// Event creations and patches.
    event_posts: Arc<AtomicUsize>,
    event_patches: Arc<AtomicUsize>,
    /// While set, LIST requests wait.
    hold_lists: Arc<AtomicBool>,
    /// Lookups wait this long (ms).
    lookup_delay_ms: Arc<AtomicUsize>,
    /// Items per list page when set (the server may return fewer than `limit`); 0: no paging.
    page_size: Arc<AtomicUsize>,
    /// Workload objects by resource (`statefulsets`, `pods`, …), served as typed lists.
    workloads: Arc<Mutex<BTreeMap<String, Vec<Value>>>>,
    /// Workload list pages served.
    workload_pages: Arc<AtomicUsize>,
    /// Workload watches, by resource.
    workload_watchers: Arc<Mutex<Vec<WorkloadWatcher>>>,
    /// Whether `openreports.io/v1alpha1` is served (the CRDs are installed).
    reports_served: Arc<AtomicBool>,
    /// OpenReports `Report`s by namespace, as last applied.
    reports: Arc<Mutex<BTreeMap<String, Value>>>,
    /// Report writes (applies and deletes): `(namespace, verb, field manager, x-replica header)`.
    report_writes: Arc<Mutex<Vec<ReportWrite>>>,
    /// Leases by namespace/name.
    leases: Arc<Mutex<BTreeMap<String, Value>>>,
    /// While set, workload lists and watches answer 403 (RBAC without the reports component).
    forbid_workloads: Arc<AtomicBool>,
    /// Workload requests refused so.
    workload_refusals: Arc<AtomicUsize>,
}

impl FakeApi {
    async fn serve(&self) -> SocketAddr {
        let app = Router::new()
            .route("/api/v1/secrets", get(secrets_all))
            .route("/api/v1/namespaces/{ns}/secrets", get(secrets_in))
            .route("/api/v1/namespaces/{ns}/configmaps", get(configmaps_in))
            .route("/api/v1/configmaps", get(configmaps_in))
            .route("/api/v1/pods", get(pods_all))
            .route("/apis/apps/v1/{resource}", get(workloads_all))
            .route("/apis/batch/v1/{resource}", get(workloads_all))
            .route("/apis/openreports.io/v1alpha1", get(reports_discovery))
            .route("/apis/openreports.io/v1alpha1/reports", get(reports_list))
            .route(
                "/apis/openreports.io/v1alpha1/namespaces/{ns}/reports/{name}",
                patch(report_apply).delete(report_delete),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases",
                post(lease_create),
            )
            .route(
                "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}",
                get(lease_get).patch(lease_patch),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events",
                post(event_create),
            )
            .route(
                "/apis/events.k8s.io/v1/namespaces/{ns}/events/{name}",
                patch(event_patch),
            )
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        addr
    }

    fn client(addr: SocketAddr) -> kube::Client {
        let url = format!("http://{addr}").parse().expect("uri");
        kube::Client::try_from(kube::Config::new(url)).expect("client")
    }

    /// A client whose requests say which replica sent them (`x-replica`).
    fn client_as(addr: SocketAddr, replica: &str) -> kube::Client {
        let url = format!("http://{addr}").parse().expect("uri");
        let mut config = kube::Config::new(url);
        config.headers.push((
            axum::http::HeaderName::from_static("x-replica"),
            axum::http::HeaderValue::from_str(replica).expect("header"),
        ));
        kube::Client::try_from(config).expect("client")
    }

    fn notify(st: &mut FakeState, kind: &str, object: Value) {
        let event = json!({"type": kind, "object": object});
        st.watchers
            .retain(|w| w.unbounded_send(event.clone()).is_ok());
    }

    /// Creates or updates a Secret and tells the watchers.
    fn put(&self, mut obj: Value) {
        let mut st = self.state.lock().expect("lock");
        st.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
        let key = format!(
            "{}/{}",
            obj["metadata"]["namespace"].as_str().unwrap_or_default(),
            obj["metadata"]["name"].as_str().unwrap_or_default()
        );
        let kind = if st.secrets.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        st.secrets.insert(key, obj.clone());
        Self::notify(&mut st, kind, obj);
    }

    /// Creates or replaces a workload (`resource`: `statefulsets`, …) and tells its watchers.
    fn put_workload(&self, resource: &str, obj: Value) {
        let mut w = self.workloads.lock().expect("lock");
        let list = w.entry(resource.to_owned()).or_default();
        let same = |o: &Value| {
            o["metadata"]["namespace"] == obj["metadata"]["namespace"]
                && o["metadata"]["name"] == obj["metadata"]["name"]
        };
        let kind = if list.iter().any(same) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        list.retain(|o| !same(o));
        list.push(obj.clone());
        drop(w);
        let mut obj = obj;
        obj["metadata"]["resourceVersion"] = json!("8");
        let event = json!({"type": kind, "object": obj});
        self.workload_watchers
            .lock()
            .expect("lock")
            .retain(|(r, tx)| r != resource || tx.unbounded_send(event.clone()).is_ok());
    }

    /// Deletes a Secret; `tell` false simulates an event the watchers missed.
    fn delete(&self, namespace: &str, name: &str, tell: bool) {
        let mut st = self.state.lock().expect("lock");
        st.rv += 1;
        if let Some(mut obj) = st.secrets.remove(&format!("{namespace}/{name}")) {
            obj["metadata"]["resourceVersion"] = json!(st.rv.to_string());
            if tell {
                Self::notify(&mut st, "DELETED", obj);
            }
        }
    }

    /// Ends every watch with `410 Expired`, as the API server does when a watch falls
    /// behind its event history.
    fn expire_watches(&self) {
        let mut st = self.state.lock().expect("lock");
        let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": "too old resource version", "reason": "Expired", "code": 410});
        Self::notify(&mut st, "ERROR", status);
        st.watchers.clear();
    }

    /// One page of `items` from the offset in `continue` (an opaque token to the client).
    fn page(&self, items: Vec<Value>, q: &HashMap<String, String>) -> (Vec<Value>, Option<String>) {
        let size = self.page_size.load(Ordering::SeqCst);
        if size == 0 {
            return (items, None);
        }
        let from: usize = q
            .get("continue")
            .and_then(|c| c.strip_prefix("off+/="))
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let next = (from + size < items.len()).then(|| format!("off+/={}", from + size));
        (items.into_iter().skip(from).take(size).collect(), next)
    }

    fn list_body(&self, namespace: Option<&str>, selector: &str) -> Value {
        let st = self.state.lock().expect("lock");
        let wanted: Vec<(&str, &str)> = selector
            .split(',')
            .filter_map(|t| t.split_once('='))
            .collect();
        let items: Vec<Value> = st
            .secrets
            .values()
            .filter(|o| namespace.is_none_or(|ns| o["metadata"]["namespace"] == ns))
            .filter(|o| {
                wanted
                    .iter()
                    .all(|(k, v)| o["metadata"]["labels"][*k].as_str() == Some(*v))
            })
            .cloned()
            .collect();
        json!({"apiVersion": "v1", "kind": "SecretList",
               "metadata": {"resourceVersion": st.rv.to_string()}, "items": items})
    }
}

fn json_response(v: &Value) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

async fn secrets_all(
    State(api): State<FakeApi>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    if q.get("watch").map(String::as_str) == Some("true") {
        api.watches.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = fmpsc::unbounded::<Value>();
        {
            let mut st = api.state.lock().expect("lock");
            // A bookmark first, as the API server sends them with allowWatchBookmarks.
            let rv = st.rv.to_string();
            let _ = tx.unbounded_send(json!({"type": "BOOKMARK", "object": {
                "kind": "Secret", "apiVersion": "v1", "metadata": {"resourceVersion": rv}}}));
            st.watchers.push(tx);
        }
        let lines =
            rx.map(|event| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{event}\n"))));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(lines))
            .unwrap_or_default();
    }
    api.lists.fetch_add(1, Ordering::SeqCst);
    while api.hold_lists.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut body = api.list_body(None, &selector);
    let items = body["items"].as_array().cloned().unwrap_or_default();
    let (items, next) = api.page(items, &q);
    body["items"] = json!(items);
    if let Some(next) = next {
        body["metadata"]["continue"] = json!(next);
    }
    json_response(&body)
}

async fn pods_all(
    State(api): State<FakeApi>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    workload_list(&api, "pods", &q)
}

async fn workloads_all(
    State(api): State<FakeApi>,
    Path(resource): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    workload_list(&api, &resource, &q)
}

/// A typed list (`StatefulSetList`) whose items carry no kind, as the API server lists them;
/// or, with `watch=true`, the resource's watch stream.
fn workload_list(api: &FakeApi, resource: &str, q: &HashMap<String, String>) -> Response {
    if api.forbid_workloads.load(Ordering::SeqCst) {
        api.workload_refusals.fetch_add(1, Ordering::SeqCst);
        return (
            StatusCode::FORBIDDEN,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "Forbidden", "code": 403,
                   "message": format!("{resource} is forbidden: cannot list resource")})
            .to_string(),
        )
            .into_response();
    }
    if q.get("watch").map(String::as_str) == Some("true") {
        let (tx, rx) = fmpsc::unbounded::<Value>();
        api.workload_watchers
            .lock()
            .expect("lock")
            .push((resource.to_owned(), tx));
        let lines =
            rx.map(|event| Ok::<_, std::convert::Infallible>(Bytes::from(format!("{event}\n"))));
        return Response::builder()
            .header("content-type", "application/json")
            .body(Body::from_stream(lines))
            .unwrap_or_default();
    }
    api.workload_pages.fetch_add(1, Ordering::SeqCst);
    let all = api
        .workloads
        .lock()
        .expect("lock")
        .get(resource)
        .cloned()
        .unwrap_or_default();
    let kind = all
        .first()
        .and_then(|o| o["kind"].as_str())
        .unwrap_or("Object")
        .to_owned();
    let api_version = all
        .first()
        .and_then(|o| o["apiVersion"].as_str())
        .unwrap_or("v1")
        .to_owned();
    let stripped: Vec<Value> = all
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let (items, next) = api.page(stripped, q);
    let mut meta = json!({"resourceVersion": "7"});
    if let Some(next) = next {
        meta["continue"] = json!(next);
    }
    json_response(
        &json!({"apiVersion": api_version, "kind": format!("{kind}List"),
        "metadata": meta, "items": items}),
    )
}

async fn secrets_in(
    State(api): State<FakeApi>,
    Path(ns): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    api.lookups.fetch_add(1, Ordering::SeqCst);
    let delay = api.lookup_delay_ms.load(Ordering::SeqCst) as u64;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let selector = q.get("labelSelector").cloned().unwrap_or_default();
    json_response(&api.list_body(Some(&ns), &selector))
}

async fn configmaps_in() -> Response {
    json_response(&json!({"apiVersion": "v1", "kind": "ConfigMapList",
        "metadata": {"resourceVersion": "1"}, "items": []}))
}

async fn reports_discovery(State(api): State<FakeApi>) -> Response {
    if !api.reports_served.load(Ordering::SeqCst) {
        return (
            StatusCode::NOT_FOUND,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "NotFound", "code": 404})
            .to_string(),
        )
            .into_response();
    }
    json_response(&json!({"kind": "APIResourceList", "apiVersion": "v1",
        "groupVersion": "openreports.io/v1alpha1",
        "resources": [{"name": "reports", "singularName": "report", "namespaced": true,
            "kind": "Report", "verbs": ["get", "list", "watch", "create", "patch", "delete"]}]}))
}

async fn reports_list(State(api): State<FakeApi>) -> Response {
    let items: Vec<Value> = api
        .reports
        .lock()
        .expect("lock")
        .values()
        .cloned()
        .collect();
    json_response(
        &json!({"apiVersion": "openreports.io/v1alpha1", "kind": "ReportList",
        "metadata": {"resourceVersion": "1"}, "items": items}),
    )
}

fn replica(headers: &axum::http::HeaderMap) -> String {
    headers
        .get("x-replica")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

async fn report_apply(
    State(api): State<FakeApi>,
    Path((ns, _name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let report: Value = serde_json::from_slice(&body).unwrap_or_default();
    api.report_writes.lock().expect("lock").push((
        ns.clone(),
        "apply",
        q.get("fieldManager").cloned().unwrap_or_default(),
        replica(&headers),
    ));
    api.reports.lock().expect("lock").insert(ns, report.clone());
    json_response(&report)
}

async fn report_delete(
    State(api): State<FakeApi>,
    Path((ns, _name)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Response {
    let gone = api.reports.lock().expect("lock").remove(&ns);
    api.report_writes
        .lock()
        .expect("lock")
        .push((ns, "delete", String::new(), replica(&headers)));
    match gone {
        Some(_) => json_response(
            &json!({"kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Success", "code": 200}),
        ),
        None => (
            StatusCode::NOT_FOUND,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "NotFound", "code": 404})
            .to_string(),
        )
            .into_response(),
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "reason": "NotFound", "code": 404})
        .to_string(),
    )
        .into_response()
}

async fn lease_get(
    State(api): State<FakeApi>,
    Path((ns, name)): Path<(String, String)>,
) -> Response {
    match api
        .leases
        .lock()
        .expect("lock")
        .get(&format!("{ns}/{name}"))
    {
        Some(l) => json_response(l),
        None => not_found(),
    }
}

async fn lease_create(State(api): State<FakeApi>, Path(ns): Path<String>, body: Bytes) -> Response {
    let mut lease: Value = serde_json::from_slice(&body).unwrap_or_default();
    let name = lease["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    lease["metadata"]["namespace"] = json!(ns);
    lease["metadata"]["resourceVersion"] = json!("1");
    let mut leases = api.leases.lock().expect("lock");
    let key = format!("{ns}/{name}");
    if leases.contains_key(&key) {
        return (
            StatusCode::CONFLICT,
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "reason": "AlreadyExists", "code": 409})
            .to_string(),
        )
            .into_response();
    }
    leases.insert(key, lease.clone());
    (
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        lease.to_string(),
    )
        .into_response()
}

/// Apply and strategic-merge patches of a Lease, as a merge of `spec`. Server-side apply's
/// one rule that matters here is kept: an apply that sets `holderIdentity` while another field
/// manager's value is there is a 409 conflict (what makes two replicas unable to both take an
/// orphaned Lease at once).
async fn lease_patch(
    State(api): State<FakeApi>,
    Path((ns, name)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let patch: Value = serde_json::from_slice(&body).unwrap_or_default();
    let apply = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.starts_with("application/apply-patch"));
    let manager = q.get("fieldManager").cloned().unwrap_or_default();
    let mut leases = api.leases.lock().expect("lock");
    let lease = leases.entry(format!("{ns}/{name}")).or_insert_with(|| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": name, "namespace": ns, "resourceVersion": "1"}, "spec": {}})
    });
    if !lease["spec"].is_object() {
        lease["spec"] = json!({});
    }
    let new_holder = patch["spec"]["holderIdentity"].as_str().map(str::to_owned);
    if apply && let Some(holder) = &new_holder {
        let current = lease["spec"]["holderIdentity"].as_str().unwrap_or_default();
        let owner = lease["metadata"]["x-holder-manager"]
            .as_str()
            .unwrap_or_default();
        if !current.is_empty() && current != holder && owner != manager {
            return (
                StatusCode::CONFLICT,
                [(axum::http::header::CONTENT_TYPE, "application/json")],
                json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                       "reason": "Conflict", "code": 409,
                       "message": "Apply failed with 1 conflict: conflict with another manager: .spec.holderIdentity"})
                .to_string(),
            )
                .into_response();
        }
    }
    if new_holder.is_some() || patch["spec"].get("holderIdentity").is_some() {
        lease["metadata"]["x-holder-manager"] = json!(manager);
    }
    if let (Some(spec), Some(p)) = (lease["spec"].as_object_mut(), patch["spec"].as_object()) {
        for (k, v) in p {
            spec.insert(k.clone(), v.clone());
        }
    }
    let mut out = lease.clone();
    if let Some(m) = out["metadata"].as_object_mut() {
        m.remove("x-holder-manager");
    }
    json_response(&out)
}

async fn event_create(State(api): State<FakeApi>, body: Bytes) -> Response {
    api.event_posts.fetch_add(1, Ordering::SeqCst);
    (
        StatusCode::CREATED,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

async fn event_patch(State(api): State<FakeApi>, body: Bytes) -> Response {
    api.event_patches.fetch_add(1, Ordering::SeqCst);
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

// === (b), (c) the kube watcher against the stand-in API server ===

#[tokio::test]
async fn kube_watcher_lists_watches_and_relists_after_410_gone() {
    let h = harness();
    let api = FakeApi::default();
    let db = history("db", "db");
    let web = history("web", "web");
    api.put(db.revisions[0].secret());
    api.put(broken_secret_json("broken", "db"));
    api.hold_lists.store(true, Ordering::SeqCst);
    let addr = api.serve().await;
    let client = FakeApi::client(addr);

    let config = WatchConfig {
        namespaces: Vec::new(),
        configmaps: false,
        limits: DecodeLimits::default(),
    };
    let tasks = watch::spawn(&client, &config, &h.feed);
    assert_eq!(
        tasks.len(),
        2,
        "one watch and the reader of unread revisions"
    );

    // (c) kube emits Init before its LIST: while the LIST hangs, not ready.
    eventually("LIST sent", || api.lists.load(Ordering::SeqCst) >= 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !h.ready.load(Ordering::Acquire),
        "ready before the list completed"
    );
    assert!(h.text().contains("helm_guard_store_stale 1"));
    api.hold_lists.store(false, Ordering::SeqCst);
    eventually("ready", || h.ready.load(Ordering::Acquire)).await;
    assert_eq!(h.keys(), ["db/db"]);
    assert_eq!(h.feed.undecodable().len(), 1);

    // The watch stream: ADDED, then DELETED.
    eventually("watching", || api.watches.load(Ordering::SeqCst) >= 1).await;
    api.put(web.revisions[0].secret());
    eventually("web added", || h.keys() == ["db/db", "web/web"]).await;
    api.delete("web", "sh.helm.release.v1.web.v1", true);
    eventually("web deleted", || h.keys() == ["db/db"]).await;

    // A deletion the watch misses, then 410 Gone: the relist drops the release; readiness
    // holds throughout, staleness shows and clears.
    api.put(web.revisions[0].secret());
    eventually("web added again", || h.keys() == ["db/db", "web/web"]).await;
    api.delete("web", "sh.helm.release.v1.web.v1", false);
    let lists_before = api.lists.load(Ordering::SeqCst);
    api.expire_watches();
    eventually("stale after 410", || h.feed.is_stale()).await;
    assert!(h.ready.load(Ordering::Acquire));
    eventually("relisted", || {
        api.lists.load(Ordering::SeqCst) > lists_before
    })
    .await;
    eventually("web dropped by the relist", || h.keys() == ["db/db"]).await;
    eventually("fresh again", || !h.feed.is_stale()).await;
    let text = h.text();
    assert!(
        text.contains(r#"helm_guard_watch_restarts_total{resource="secrets"} 1"#),
        "{text}"
    );
    assert!(text.contains("helm_guard_store_stale 0"));
    for t in tasks {
        t.abort();
    }
}

// === (d) fallback lookups ===

#[tokio::test]
async fn fallback_lookups_are_shared_bounded_and_negatively_cached() {
    let h = harness();
    let api = FakeApi::default();
    let db = history("db", "db");
    for r in &db.revisions {
        api.put(r.secret());
    }
    let addr = api.serve().await;
    let fallback = Arc::new(Fallback::new(
        FakeApi::client(addr),
        h.feed.clone(),
        FallbackConfig {
            // A safety net, not a measurement: a busy machine must not fail the test.
            timeout: Duration::from_millis(5000),
            configmaps: false,
            ..FallbackConfig::default()
        },
        h.metrics.lookups.clone(),
    ));
    api.lookup_delay_ms.store(50, Ordering::SeqCst);

    let key = ReleaseKey::new("db", "db");
    let outcomes = futures::future::join_all((0..16).map(|_| {
        let f = fallback.clone();
        let key = key.clone();
        async move { f.ensure(&key, Want::Release).await }
    }))
    .await;
    assert_eq!(
        api.lookups.load(Ordering::SeqCst),
        1,
        "one list for 16 requests"
    );
    assert!(
        outcomes
            .iter()
            .all(|o| *o == LookupOutcome::Found { revisions: 1 }),
        "{outcomes:?}"
    );
    assert!(h.index.release(&key).is_some(), "applied to the index");
    assert_eq!(
        fallback.ensure(&key, Want::Release).await,
        LookupOutcome::Known
    );

    // A release that does not exist: looked up once, then cached.
    let ghost = ReleaseKey::new("db", "ghost");
    assert_eq!(
        fallback.ensure(&ghost, Want::Release).await,
        LookupOutcome::Missing
    );
    assert_eq!(
        fallback.ensure(&ghost, Want::Release).await,
        LookupOutcome::CachedMissing
    );
    assert_eq!(api.lookups.load(Ordering::SeqCst), 2);
    // A Helm write never trusts a cached "missing" (a fresh install is missing until its
    // pending revision exists).
    assert_eq!(
        fallback.ensure(&ghost, Want::Pending).await,
        LookupOutcome::Missing
    );
    assert_eq!(api.lookups.load(Ordering::SeqCst), 3);

    // Names that cannot be releases never reach a selector.
    assert_eq!(
        fallback
            .ensure(&ReleaseKey::new("db", "x,owner!=helm"), Want::Release)
            .await,
        LookupOutcome::Invalid
    );

    // Bounded: a slow API server costs the timeout, not more.
    api.lookup_delay_ms.store(600_000, Ordering::SeqCst);
    let started = std::time::Instant::now();
    assert_eq!(
        fallback
            .ensure(&ReleaseKey::new("db", "slow"), Want::Release)
            .await,
        LookupOutcome::TimedOut
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the timeout bounds it"
    );
    let text = h.text();
    for want in [
        r#"helm_guard_fallback_lookups_total{result="found"} 1"#,
        r#"helm_guard_fallback_lookups_total{result="missing"} 2"#,
        r#"helm_guard_fallback_lookups_total{result="cached_missing"} 1"#,
        r#"helm_guard_fallback_lookups_total{result="timeout"} 1"#,
    ] {
        assert!(text.contains(want), "missing {want}:\n{text}");
    }
}

// === (e) Events ===

fn drift_review(dry_run: bool) -> Vec<u8> {
    json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "apps", "version": "v1", "kind": "StatefulSet"},
        "resource": {"group": "apps", "version": "v1", "resource": "statefulsets"},
        "namespace": "db", "name": "db-postgresql", "operation": "UPDATE", "dryRun": dry_run,
        "userInfo": {"username": "alice"},
        "object": {"metadata": {"name": "db-postgresql", "namespace": "db", "uid": "0a1b"}},
        "oldObject": {"metadata": {"name": "db-postgresql", "namespace": "db", "uid": "0a1b"}}}})
    .to_string()
    .into_bytes()
}

/// The reference of a review's object, as the server builds it from its one parse.
fn review_ref(body: &[u8]) -> k8s_openapi::api::core::v1::ObjectReference {
    let m = helm_guard::admission::prepare(body, &Settings::new(Mode::Audit)).meta;
    helm_guard::events::request_ref(&m.api_version, &m.kind, &m.namespace, &m.name, m.object_uid)
}

#[tokio::test]
async fn events_are_sent_after_the_fact_aggregated_and_never_for_dry_runs() {
    let h = harness();
    let api = FakeApi::default();
    let addr = api.serve().await;
    let reporter = Reporter {
        controller: "helm-guard".into(),
        instance: Some("helm-guard-0".into()),
    };
    let (events, _task) = EventQueue::spawn(
        FakeApi::client(addr),
        reporter,
        16,
        h.metrics.events.clone(),
    );
    let intents = [EventIntent {
        reason: "ImageDrift",
        note: "postgresql runs bitnami/postgresql:11.22.0, chart renders 15.4.0".into(),
        warning: true,
        target: None,
    }];
    assert_eq!(
        events.emit(&review_ref(&drift_review(true)), &intents, true),
        0
    );
    assert_eq!(
        events.emit(&review_ref(&drift_review(false)), &intents, false),
        1
    );
    eventually("event created", || {
        api.event_posts.load(Ordering::SeqCst) == 1
    })
    .await;
    // The same reason on the same object again: kube's recorder turns it into a series.
    events.emit(&review_ref(&drift_review(false)), &intents, false);
    eventually("event aggregated", || {
        api.event_patches.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(api.event_posts.load(Ordering::SeqCst), 1, "no second Event");
    eventually("counted", || {
        h.text()
            .contains(r#"helm_guard_events_total{result="sent"} 2"#)
    })
    .await;
}

// === (f) metrics ===

#[tokio::test]
async fn metrics_expose_every_documented_series() {
    let h = harness();
    h.metrics.admission.observe(
        Observation {
            webhook: "validate",
            mode: "enforce",
            kind: "StatefulSet",
            verdict: "denied",
            actor: "kubectl",
        },
        Duration::from_millis(2),
    );
    h.metrics.store.decode_failed("gzip");
    h.metrics.store.watch_restarted("configmaps");
    h.metrics.lookups.count("found");
    h.metrics.events.count("dropped");
    let text = h.text();
    for family in [
        "# TYPE helm_guard_admission_requests counter",
        "# TYPE helm_guard_admission_duration_seconds histogram",
        "# TYPE helm_guard_releases_indexed gauge",
        "# TYPE helm_guard_release_decode_failures counter",
        "# TYPE helm_guard_watch_restarts counter",
        "# TYPE helm_guard_store_stale gauge",
        "# TYPE helm_guard_fallback_lookups counter",
        "# TYPE helm_guard_events counter",
        r#"helm_guard_admission_requests_total{webhook="validate",mode="enforce",kind="StatefulSet",verdict="denied",actor="kubectl"} 1"#,
        r#"helm_guard_admission_duration_seconds_count{webhook="validate"} 1"#,
        "helm_guard_store_stale 1",
    ] {
        assert!(text.contains(family), "missing {family}:\n{text}");
    }
}

// === (f) scan from the cluster ===

#[tokio::test]
async fn scan_lists_releases_and_workloads_in_pages() {
    helm_guard::tls::install_provider();
    let api = FakeApi::default();
    api.page_size.store(2, Ordering::SeqCst);
    // db/db: rev 1 superseded, rev 2 deployed (PG15); web/web and a broken record beside.
    let mut db = history("db", "db");
    db.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({}),
        UpgradeValues::ResetValues,
    );
    db.complete();
    for r in &db.revisions {
        api.put(r.secret());
    }
    api.put(history("web", "web").revisions[0].secret());
    api.put(broken_secret_json("broken", "db"));
    let pg = |tag: &str| format!("docker.io/bitnami/postgresql:{tag}");
    let exporter = "docker.io/bitnami/postgres-exporter:0.15.0";
    let sts = |ns: &str, image: &str| {
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db-postgresql", "namespace": ns,
                "annotations": {"meta.helm.sh/release-name": ns, "meta.helm.sh/release-namespace": ns},
                "managedFields": [{"manager": "kubectl-set", "operation": "Update", "time": "2026-11-27T08:00:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers":
                        {"k:{\"name\":\"postgresql\"}": {"f:image": {}}}}}}}}]},
            "spec": {"template": {"spec": {"containers": [
                {"name": "postgresql", "image": image}, {"name": "metrics", "image": exporter}]}}}})
    };
    let pod = |i: u32, image: &str| {
        json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("db-postgresql-{i}"), "namespace": "db",
                "ownerReferences": [{"kind": "StatefulSet", "name": "db-postgresql", "controller": true}]},
            "spec": {"containers": [{"name": "postgresql", "image": image}, {"name": "metrics", "image": exporter}]}})
    };
    {
        let mut w = api.workloads.lock().expect("lock");
        // db drifted back to 11 by hand; web (same chart, never upgraded) as rendered.
        w.insert(
            "statefulsets".into(),
            vec![sts("db", &pg("11.22.0")), sts("web", &pg("11.22.0"))],
        );
        // Three Pods (two pages): two follow the drifted template, one was edited in place.
        w.insert(
            "pods".into(),
            vec![
                pod(0, &pg("11.22.0")),
                pod(1, &pg("11.22.0")),
                pod(2, &pg("9.6")),
            ],
        );
    }
    let addr = api.serve().await;
    let client = FakeApi::client(addr);
    let mut err = Vec::new();
    let mut progress = helm_guard::scan::Progress::new();
    let inv = helm_guard::scan::cluster::collect(
        &client,
        &helm_guard::scan::Scope::All,
        DecodeLimits::default(),
        true,
        &mut progress,
        &mut err,
    )
    .await
    .expect("scan");
    let stderr = String::from_utf8_lossy(&err);
    assert!(
        stderr.contains("Secret db/sh.helm.release.v1.broken.v1"),
        "named: {stderr}"
    );
    assert!(!stderr.contains("CANARY"), "{stderr}");
    assert_eq!(inv.skipped_records, 1);
    assert_eq!(
        inv.index.keys().len(),
        2,
        "each release decoded, across pages"
    );
    assert_eq!(inv.workloads.len(), 5);
    // statefulsets: 1 page; pods: 2 pages (3 items, 2 per page). Only the kinds the releases
    // render (and their Pods) are listed.
    assert_eq!(api.workload_pages.load(Ordering::SeqCst), 3);

    let outcome =
        helm_guard::scan::evaluate(&inv, &helm_guard::scan::Scope::All, &["helm".to_owned()]);
    assert_eq!((outcome.workloads, outcome.releases), (5, 2));
    let found: Vec<(String, String, String)> = outcome
        .findings
        .iter()
        .map(|f| {
            (
                f.workload.to_string(),
                f.container.clone(),
                f.live_image.clone(),
            )
        })
        .collect();
    assert_eq!(
        found,
        [
            (
                "StatefulSet db/db-postgresql".to_owned(),
                "postgresql".to_owned(),
                pg("11.22.0")
            ),
            (
                "Pod db/db-postgresql-2".to_owned(),
                "postgresql".to_owned(),
                pg("9.6")
            ),
        ]
    );
    assert_eq!(outcome.findings[0].manager.as_deref(), Some("kubectl-set"));

    // An unreachable API server: an error, not a partial scan.
    let gone = FakeApi::client("127.0.0.1:9".parse().expect("addr"));
    let e = helm_guard::scan::cluster::collect(
        &gone,
        &helm_guard::scan::Scope::All,
        DecodeLimits::default(),
        false,
        &mut helm_guard::scan::Progress::new(),
        &mut Vec::new(),
    )
    .await
    .expect_err("unreachable");
    assert!(e.to_string().contains("/api/v1/secrets"), "{e}");
}

// === (g) the live inventory: gauges and Reports ===

const CANARY: &str = "CANARY-inventory-password";

fn pg(tag: &str) -> String {
    format!("docker.io/bitnami/postgresql:{tag}")
}

fn live_sts(ns: &str, image: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db-postgresql", "namespace": ns, "resourceVersion": "7",
            "annotations": {"meta.helm.sh/release-name": ns, "meta.helm.sh/release-namespace": ns},
            "managedFields": [{"manager": "kubectl-set", "operation": "Update", "time": "2026-11-27T08:00:00Z",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers":
                    {"k:{\"name\":\"postgresql\"}": {"f:image": {}}}}}}}}]},
        "spec": {"template": {"spec": {"containers": [
            {"name": "postgresql", "image": image},
            {"name": "metrics", "image": "docker.io/bitnami/postgres-exporter:0.15.0"}]}}}})
}

fn canary_history(name: &str) -> History {
    History::install(
        name,
        name,
        &postgres_chart("12.0.0", "11.22.0"),
        json!({"auth": {"postgresPassword": CANARY}}),
    )
}

/// The release watch, the inventory over it, and (unless `None`) a Report writer with a
/// fixed leadership answer.
async fn inventory(h: &Harness, client: &kube::Client) -> helm_guard::inventory::SharedState {
    let changes = Arc::new(helm_guard::inventory::Changes::default());
    h.feed.notify_changes(changes.clone());
    let config = WatchConfig {
        namespaces: Vec::new(),
        configmaps: false,
        limits: DecodeLimits::default(),
    };
    watch::spawn(client, &config, &h.feed);
    let (state, _) = helm_guard::inventory::spawn(
        client,
        &helm_guard::inventory::InventoryConfig {
            namespaces: Vec::new(),
            helm_managers: vec!["helm".into()],
        },
        h.index.clone(),
        changes,
        h.metrics.inventory.clone(),
    );
    state
}

#[tokio::test]
async fn inventory_gauges_and_reports_follow_drift_restores_and_new_revisions() {
    let h = harness();
    let api = FakeApi::default();
    api.reports_served.store(true, Ordering::SeqCst);
    let mut db = canary_history("db");
    api.put(db.revisions[0].secret());
    api.put(canary_history("web").revisions[0].secret());
    api.put(broken_secret_json("broken", "db"));
    // Drift that existed before start.
    api.put_workload("statefulsets", live_sts("db", &pg("9.6")));
    api.put_workload("statefulsets", live_sts("web", &pg("11.22.0")));
    let addr = api.serve().await;
    let client = FakeApi::client(addr);
    let state = inventory(&h, &client).await;
    let (_leader_tx, leader) = tokio::sync::watch::channel(true);
    tokio::spawn(helm_guard::reports::run(
        helm_guard::reports::Writer::new(client.clone()),
        state.clone(),
        leader,
        Duration::from_millis(20),
    ));

    let drifted =
        |ns: &str, n: u32| format!("helm_guard_drifted_containers{{namespace=\"{ns}\"}} {n}");
    eventually("pre-existing drift in the gauge", || {
        h.text().contains(&drifted("db", 1))
    })
    .await;
    let text = h.text();
    assert!(
        !text.contains("namespace=\"web\""),
        "web runs its chart: {text}"
    );
    assert!(
        !text.contains("helm_guard_inventory_last_sync_timestamp_seconds 0\n"),
        "a full sync happened: {text}"
    );
    // The broken record is named and skipped; the rest is judged.
    assert_eq!(
        h.feed.undecodable(),
        ["Secret db/sh.helm.release.v1.broken.v1"]
    );
    eventually("the db Report", || {
        api.reports.lock().expect("lock").contains_key("db")
    })
    .await;
    {
        let reports = api.reports.lock().expect("lock");
        let report = &reports["db"];
        assert_eq!(report["kind"], "Report");
        assert_eq!(report["metadata"]["name"], "helm-guard");
        assert_eq!(report["results"][0]["rule"], "image-drift");
        assert_eq!(report["results"][0]["properties"]["liveImage"], pg("9.6"));
        assert_eq!(report["summary"]["fail"], 1);
        assert!(!reports.contains_key("web"));
        for r in reports.values() {
            assert!(!r.to_string().contains(CANARY));
        }
        let writes = api.report_writes.lock().expect("lock");
        assert!(
            writes
                .iter()
                .all(|w| w.2 == "helm-guard" || w.1 == "delete"),
            "{writes:?}"
        );
    }
    assert!(!h.text().contains(CANARY));

    // The same object again, then drift in web: web's Report is written, db's is not again.
    let db_writes = |api: &FakeApi| {
        api.report_writes
            .lock()
            .expect("lock")
            .iter()
            .filter(|w| w.0 == "db")
            .count()
    };
    assert_eq!(db_writes(&api), 1);
    api.put_workload("statefulsets", live_sts("db", &pg("9.6")));
    api.put_workload("statefulsets", live_sts("web", &pg("10.0")));
    eventually("the web Report", || {
        api.reports.lock().expect("lock").contains_key("web")
    })
    .await;
    eventually("web in the gauge", || h.text().contains(&drifted("web", 1))).await;
    assert_eq!(db_writes(&api), 1, "nothing changed in db: nothing written");

    // Restoring the chart's image clears the gauge series and deletes the Report.
    api.put_workload("statefulsets", live_sts("db", &pg("11.22.0")));
    eventually("db cleared", || {
        !h.text().contains("namespace=\"db\"")
            && !api.reports.lock().expect("lock").contains_key("db")
    })
    .await;

    // Drift to 15.4.0, then helm upgrade deploys a revision rendering 15.4.0: cleared again.
    api.put_workload("statefulsets", live_sts("db", &pg("15.4.0")));
    eventually("db drifts again", || h.text().contains(&drifted("db", 1))).await;
    db.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({}),
        UpgradeValues::ResetValues,
    );
    db.complete();
    for r in &db.revisions {
        api.put(r.secret());
    }
    eventually("the new revision clears db", || {
        !h.text().contains("namespace=\"db\"")
            && !api.reports.lock().expect("lock").contains_key("db")
    })
    .await;
    assert!(h.text().contains(&drifted("web", 1)), "web untouched");
}

#[tokio::test]
async fn only_the_lease_holder_writes_reports_and_absent_crds_are_an_error() {
    let h = harness();
    let api = FakeApi::default();
    api.put(canary_history("db").revisions[0].secret());
    api.put_workload("statefulsets", live_sts("db", &pg("9.6")));
    let addr = api.serve().await;

    // Without the CRDs: said, and nothing else happens.
    let client = FakeApi::client(addr);
    let state = inventory(&h, &client).await;
    let lease = |id: &str| helm_guard::reports::LeaseConfig {
        namespace: "helm-guard".into(),
        identity: id.into(),
    };
    let absent = helm_guard::reports::start(
        &client,
        state.clone(),
        &lease("a"),
        Duration::from_millis(20),
    )
    .await
    .expect_err("no CRDs");
    assert!(absent.to_string().contains("not installed"), "{absent}");
    assert!(api.leases.lock().expect("lock").is_empty());

    // Two replicas with the CRDs: only the Lease holder writes.
    api.reports_served.store(true, Ordering::SeqCst);
    let mut tasks = Vec::new();
    for id in ["a", "b"] {
        let client = FakeApi::client_as(addr, id);
        tasks.extend(
            helm_guard::reports::start(
                &client,
                state.clone(),
                &lease(id),
                Duration::from_millis(20),
            )
            .await
            .expect("reports start"),
        );
    }
    eventually("a Report", || {
        api.reports.lock().expect("lock").contains_key("db")
    })
    .await;
    let holder =
        api.leases.lock().expect("lock")["helm-guard/helm-guard-reports"]["spec"]["holderIdentity"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
    assert!(holder == "a" || holder == "b", "{holder}");
    let writers: std::collections::BTreeSet<String> = api
        .report_writes
        .lock()
        .expect("lock")
        .iter()
        .map(|w| w.3.clone())
        .collect();
    assert_eq!(writers, std::collections::BTreeSet::from([holder]));
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn inventory_without_workload_rbac_fails_soft_and_recovers_when_granted() {
    let h = harness();
    let api = FakeApi::default();
    api.forbid_workloads.store(true, Ordering::SeqCst);
    api.put(canary_history("db").revisions[0].secret());
    api.put_workload("statefulsets", live_sts("db", &pg("9.6")));
    let addr = api.serve().await;
    let client = FakeApi::client(addr);
    let _state = inventory(&h, &client).await;
    // The release store (what admission reads) syncs and turns ready regardless.
    eventually("ready", || h.ready.load(Ordering::Acquire)).await;
    assert_eq!(h.keys(), ["db/db"]);
    eventually("every kind refused", || {
        api.workload_refusals.load(Ordering::SeqCst) >= helm_guard::inventory::KINDS.len()
    })
    .await;
    assert!(!h.text().contains("helm_guard_drifted_containers{"));
    // RBAC granted later: the watches' backoff retries pick it up without a restart.
    api.forbid_workloads.store(false, Ordering::SeqCst);
    eventually("drift after the grant", || {
        h.text()
            .contains(r#"helm_guard_drifted_containers{namespace="db"} 1"#)
    })
    .await;
}

/// A log sink for one test (a current-thread runtime: every task logs on this thread).
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("lock").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "current_thread")]
async fn the_canary_reaches_no_log_line_gauge_or_report_of_the_inventory() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let h = harness();
    let api = FakeApi::default();
    api.reports_served.store(true, Ordering::SeqCst);
    // The canary in the values of a deployed release, of a pending upgrade, and in a
    // broken record; drift and a stale pin so that findings carry everything they can.
    let mut db = History::install(
        "db",
        "db",
        &postgres_chart("12.0.0", "11.22.0"),
        json!({"image": {"tag": "11.22.0"}, "auth": {"postgresPassword": CANARY}}),
    );
    db.begin_upgrade(
        &postgres_chart("14.0.0", "15.4.0"),
        json!({"auth": {"postgresPassword": CANARY}}),
        UpgradeValues::ReuseValues,
    );
    db.complete();
    for r in &db.revisions {
        api.put(r.secret());
    }
    api.put(broken_secret_json("broken", "db"));
    api.put_workload("statefulsets", live_sts("db", &pg("9.6")));
    let addr = api.serve().await;
    let client = FakeApi::client(addr);
    let state = inventory(&h, &client).await;
    let (_leader_tx, leader) = tokio::sync::watch::channel(true);
    tokio::spawn(helm_guard::reports::run(
        helm_guard::reports::Writer::new(client.clone()),
        state,
        leader,
        Duration::from_millis(20),
    ));
    eventually("the db Report with drift and the stale pin", || {
        api.reports
            .lock()
            .expect("lock")
            .get("db")
            .is_some_and(|r| {
                r["summary"]["fail"] == 1 && r["summary"]["warn"].as_u64().unwrap_or(0) >= 1
            })
    })
    .await;
    // The writer logs after the API server has answered: wait for the line, not the Report.
    eventually("the report logged", || {
        String::from_utf8_lossy(&sink.0.lock().expect("lock")).contains("report synced")
    })
    .await;
    let logs = String::from_utf8_lossy(&sink.0.lock().expect("lock")).into_owned();
    assert!(
        logs.contains("sh.helm.release.v1.broken.v1"),
        "the broken record is named: {logs}"
    );
    assert!(!logs.contains(CANARY), "{logs}");
    assert!(!h.text().contains(CANARY));
    for r in api.reports.lock().expect("lock").values() {
        assert!(!r.to_string().contains(CANARY));
    }
}

// === (h) the binary in cluster mode ===

/// The next stdout line of a child (JSON log lines), or `None` once it has closed or after
/// `secs` seconds without one.
async fn next_line(
    rx: &Arc<Mutex<std::sync::mpsc::Receiver<String>>>,
    secs: u64,
) -> Option<String> {
    let rx = rx.clone();
    tokio::task::spawn_blocking(move || {
        rx.lock()
            .expect("lock")
            .recv_timeout(Duration::from_secs(secs))
            .ok()
    })
    .await
    .expect("reader")
}

/// A child process killed and reaped if the test ends before it waits for it.
struct Reaped(Option<std::process::Child>);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `serve` as shipped, against [`FakeApi`] through a kubeconfig: the cluster side (watches,
/// Events, the fallback's API calls) runs on its own runtime and the requests on the
/// serving thread, so this is the test that the two meet — the index the watch fills
/// answers a review, the Event of the audited drift reaches the API, a release the watch
/// never delivered is looked up — and that SIGTERM still drains and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_in_cluster_mode_answers_from_the_watched_index_and_sends_events() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let api = FakeApi::default();
    // The release's values hold a password: it must reach no log line, answer or error.
    for r in &canary_history("db").revisions {
        api.put(r.secret());
    }
    let addr = api.serve().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!("apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n    server: http://{addr}\ncontexts:\n- name: c\n  context:\n    cluster: c\n    user: u\nusers:\n- name: u\n  user: {{}}\n"),
    )
    .expect("kubeconfig");
    let bundle = helm_guard::tls::generate(&["localhost".to_owned()], 1).expect("certs");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &bundle.cert_pem).expect("cert");
    std::fs::write(&key, &bundle.key_pem).expect("key");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_helm-guard"));
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("HELM_GUARD_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--default-mode", "audit", "--configmap-releases", "false"])
        .args([
            "--pod-name",
            "helm-guard-0",
            "--shutdown-grace-seconds",
            "0",
        ])
        .arg("--tls-cert")
        .arg(&cert)
        .arg("--tls-key")
        .arg(&key)
        .env("KUBECONFIG", &kubeconfig)
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn serve");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout");
    let mut child = Reaped(Some(child));
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let rx = Arc::new(Mutex::new(rx));
    let (mut listen, mut ready, mut logs) = (None, false, Vec::new());
    while listen.is_none() || !ready {
        let line = next_line(&rx, 30)
            .await
            .unwrap_or_else(|| panic!("serve stopped logging: {logs:?}"));
        let v: Value = serde_json::from_str(&line).expect("JSON log line");
        if v["message"] == "serving" {
            listen = v["listen"].as_str().map(str::to_owned);
        }
        ready |= v["message"] == "every release watch has listed: ready";
        logs.push(line);
    }
    let port = listen
        .as_deref()
        .and_then(|l| l.rsplit(':').next())
        .expect("port")
        .to_owned();

    // `kubectl set image` of release `release`'s StatefulSet to PostgreSQL 9.6, answered.
    let set_image = |name: &str, release: &str, uid: &str| {
        let edit = helm_guard::demo::fixtures::Edit::kubectl_set_image(
            helm_guard::workload::WorkloadKind::StatefulSet,
            "db",
            name,
            release,
            &[("postgresql", "docker.io/bitnami/postgresql:11.22.0")],
            &[("postgresql", "docker.io/bitnami/postgresql:9.6.24")],
        );
        serde_json::to_vec(&edit.review(uid)).expect("json")
    };
    helm_guard::tls::install_provider();
    let client = helm_guard::demo::client::WebhookClient::new(
        bundle.ca_pem.as_bytes(),
        &format!("https://localhost:{port}"),
    )
    .expect("client");
    let answer = |body: Vec<u8>| {
        let client = &client;
        async move {
            let (status, body) = client.post_json("/validate", body).await.expect("request");
            assert_eq!(status.as_u16(), 200);
            serde_json::from_slice::<Value>(&body).expect("review")
        }
    };

    let v = answer(set_image("db-postgresql", "db", "c-1")).await;
    assert!(!v.to_string().contains(CANARY), "{v}");
    assert_eq!(v["response"]["allowed"], true, "audit lets it through: {v}");
    let warnings = v["response"]["warnings"].to_string();
    assert!(
        warnings.contains("9.6.24") && warnings.contains("11.22.0"),
        "the drift is judged against the watched release: {v}"
    );
    eventually("the Event reaches the API", || {
        api.event_posts.load(Ordering::SeqCst) == 1
    })
    .await;

    // A release the watch never delivered: looked up (on the cluster runtime), not found,
    // judged as a missing release (allowed by default).
    let v = answer(set_image("ghost-postgresql", "ghost", "c-2")).await;
    assert_eq!(v["response"]["allowed"], true, "{v}");
    assert_eq!(api.lookups.load(Ordering::SeqCst), 1, "one lookup: {v}");

    let child = child.0.take().expect("running");
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let status = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("wait");
    let stderr = String::from_utf8_lossy(&status.stderr).into_owned();
    assert!(status.status.success(), "exits 0 after draining: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    while let Some(line) = next_line(&rx, 5).await {
        logs.push(line);
    }
    let logs = logs.join("\n");
    assert!(logs.contains("shutting down"), "{logs}");
    assert!(!logs.contains(CANARY) && !stderr.contains(CANARY));
}
