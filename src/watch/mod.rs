//! The release store fed from the cluster: watches of Helm release Secrets (and ConfigMaps)
//! decoded once and applied to the shared [`Index`](crate::store::Index).
//!
//! ```text
//!  watcher(Secrets owner=helm) ─┐  decode off the lock        ┌─> Index::apply / delete
//!  watcher(ConfigMaps owner=helm)┼─ (decode threads, in order) ─┤   (in small batches under
//!  fallback lookups (lookup.rs) ─┘   → Arc<RevisionIndex>      │    the write lock, one
//!                                                              │    revision at a time)
//!                                                              └─> readiness, staleness, metrics
//! ```
//!
//! Each watch is a *source*: a resource kind and a namespace scope (all namespaces, or one
//! of `--watch-namespaces`). The watcher's `Init` / `InitApply` / `InitDone` sequence is a
//! relist, applied revision by revision as it arrives, so the index is swapped in place and
//! never held twice; at `InitDone`, revisions that source held before and did not list again
//! are deleted — and only
//! those, so a relist of Secrets never drops releases stored in ConfigMaps, and one
//! namespace's relist never touches another's. The feed remembers which sources hold each
//! revision (kubert keeps the same bookkeeping per namespace in `index::namespaced`), so a
//! revision present in both a Secret and a ConfigMap survives until both are gone.
//!
//! Readiness is gated on `InitDone`, not on the first event: kube's ListWatch emits `Init`
//! *before* its LIST call. The server turns ready once every watch has completed one list
//! and stays ready through later failures, serving the last known state while
//! `helm_guard_store_stale` is 1. A record that does not decode is skipped, logged by object
//! name (never content) and counted by reason; the watch goes on. Objects that do not even
//! deserialize as a Secret are kept as invalid ([`object`]) so they cannot fail a list page.
//!
//! A list (initial or relist) does not read superseded revisions ([`decode_listed`]): they
//! are most of the records and no decision is judged against them; the stale-value analysis
//! says when it needs one, and the fallback lookup reads the release's records then.
//!
//! This module owns the kube I/O (watch streams, their tasks, the decode hand-off to the
//! decode threads of [`pool`]); [`feed`] owns the synchronous bookkeeping they drive.

mod feed;
mod object;
mod pool;
mod reader;

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client, ResourceExt};
use tracing::{Instrument, info_span, warn};

pub use feed::{
    Feed, Holds, ObjectVersion, Record, ReleaseObject, SourceId, decode_listed, decode_object,
};
pub use object::{ConfigMapRecord, RecordObject, SecretRecord};

use crate::helm::record::kind_name;
use crate::helm::{DecodeLimits, RecordKind};

/// The label every Helm release record carries.
pub const OWNER_SELECTOR: &str = "owner=helm";
/// Records decoded concurrently per watch (on the decode threads); events stay in order.
const DECODE_PARALLELISM: usize = 4;

/// Live events (writes while serving) are decoded one at a time across all watches: a burst
/// of `helm upgrade`s then takes one core, not every core, and admission requests keep the
/// others (measured: 500 upgrades at once raised p99 by 55% with the whole pool, see
/// docs/performance.md). A list (cold start, relist) still uses the whole pool.
static LIVE_DECODES: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// What to watch.
#[derive(Clone, Debug)]
pub struct WatchConfig {
    /// Namespaces to watch; empty means all namespaces.
    pub namespaces: Vec<String>,
    /// Also watch ConfigMaps (`HELM_DRIVER=configmap`).
    pub configmaps: bool,
    /// Bounds on each record decoded.
    pub limits: DecodeLimits,
}

/// A watch event after decoding.
enum Decoded {
    Init,
    InitApply(Record),
    InitDone,
    Apply(Record),
    Delete { namespace: String, name: String },
}

async fn decode_event<K: ReleaseObject>(event: Event<K>, limits: DecodeLimits) -> Decoded {
    let off_pool = |obj: K, decode: fn(&K, DecodeLimits) -> Record| async move {
        let name = obj.name_any();
        let namespace = obj.namespace().unwrap_or_else(|| "default".into());
        pool::run(move || decode(&obj, limits))
            .await
            .unwrap_or(Record::Other { namespace, name })
    };
    match event {
        Event::Init => Decoded::Init,
        // A list defers what no decision reads (superseded revisions), where it arrives: a
        // hand-off to a decode thread would cost more than the check. Live events are read.
        Event::InitApply(obj) => match feed::unread_listed(&obj) {
            Some(record) => Decoded::InitApply(record),
            None => Decoded::InitApply(off_pool(obj, decode_object::<K>).await),
        },
        Event::InitDone => Decoded::InitDone,
        Event::Apply(obj) => {
            // A closed semaphore is impossible (never closed); decode anyway if it were.
            let _one_at_a_time = LIVE_DECODES.acquire().await;
            Decoded::Apply(off_pool(obj, decode_object::<K>).await)
        }
        Event::Delete(obj) => Decoded::Delete {
            namespace: obj.namespace().unwrap_or_else(|| "default".into()),
            name: obj.name_any(),
        },
    }
}

/// Feeds the index from one watch stream until it ends (a `watcher` stream never does).
/// Errors are counted and the stream polled again: put a backoff on it.
pub async fn drive<K, S>(feed: Arc<Feed>, source: SourceId, events: S)
where
    K: ReleaseObject,
    S: Stream<Item = Result<Event<K>, watcher::Error>> + Send,
{
    let limits = feed.limits();
    let decoded = events
        .map(move |item| async move {
            match item {
                Ok(event) => Ok(decode_event(event, limits).await),
                Err(error) => Err(error),
            }
        })
        .buffered(DECODE_PARALLELISM);
    futures::pin_mut!(decoded);
    let mut failures = BTreeSet::new();
    while let Some(item) = decoded.next().await {
        match item {
            Err(error) => {
                warn!(%error, "release watch failed; serving the last known state, retrying");
                feed.failed(source, K::RESOURCE);
            }
            Ok(Decoded::Init) => {
                failures.clear();
                feed.begin_relist(source);
            }
            Ok(Decoded::InitApply(record)) => match record {
                Record::Revision(rev, version) => feed.relist_apply(source, rev, version),
                Record::Undecodable { object, error, .. } => {
                    feed.count_failure(&object, &error);
                    failures.insert(object);
                }
                Record::Other { .. } => {}
            },
            Ok(Decoded::InitDone) => {
                feed.finish_relist(source, std::mem::take(&mut failures));
                // The list's page buffers and gunzip outputs are free now: back to the
                // kernel before the watch counts as synced (milliseconds, once per list).
                crate::allocator::release_free_memory();
                feed.synced(source);
            }
            Ok(Decoded::Apply(record)) => {
                feed.resumed(source);
                feed.apply_record(source, record);
            }
            Ok(Decoded::Delete { namespace, name }) => {
                feed.resumed(source);
                feed.delete_record(source, &namespace, &name);
            }
        }
    }
}

/// The watch of one resource kind in one scope, with client-go's backoff on errors.
pub fn watch_stream<K: ReleaseObject>(
    client: Client,
    namespace: Option<&str>,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static {
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client, ns),
        None => Api::all(client),
    };
    let config = watcher::Config::default()
        .labels(OWNER_SELECTOR)
        .page_size(PAGE_SIZE);
    read_ahead(watcher(api, config).default_backoff())
}

/// Objects per list page. kube (and client-go) ask for 500; each page is held three times
/// over while it is read (the body, kube's copy of it, the objects), and once more ahead of
/// the decoder ([`read_ahead`]): 250 halves that peak for a few more requests.
const PAGE_SIZE: u32 = 250;

/// Events read ahead of the decoder: one list page's worth.
const READ_AHEAD: usize = PAGE_SIZE as usize;

/// Polls `events` in a task of its own, up to [`READ_AHEAD`] events ahead of the consumer, so
/// that kube fetches and parses the next list page while the records of the current one are
/// decoded (without it the two alternate on one core). Costs at most one more page of objects
/// in memory; the task ends when the consumer is dropped.
fn read_ahead<T: Send + 'static>(
    events: impl Stream<Item = T> + Send + 'static,
) -> impl Stream<Item = T> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel(READ_AHEAD);
    tokio::spawn(async move {
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            if tx.send(event).await.is_err() {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

fn watcher<K: ReleaseObject>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send + 'static {
    watcher::watcher(api, config)
}

/// Starts every watch `config` asks for, each in its own task and span.
pub fn spawn(
    client: &Client,
    config: &WatchConfig,
    feed: &Arc<Feed>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let scopes: Vec<Option<&str>> = if config.namespaces.is_empty() {
        vec![None]
    } else {
        config.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut plan = Vec::new();
    for ns in &scopes {
        plan.push((
            RecordKind::Secret,
            *ns,
            feed.add_source(RecordKind::Secret, *ns),
        ));
        if config.configmaps {
            plan.push((
                RecordKind::ConfigMap,
                *ns,
                feed.add_source(RecordKind::ConfigMap, *ns),
            ));
        }
    }
    let mut tasks: Vec<tokio::task::JoinHandle<()>> = plan
        .into_iter()
        .map(|(kind, ns, source)| {
            let span = info_span!(
                "watch",
                resource = kind_name(kind),
                namespace = ns.unwrap_or("*")
            );
            let feed = feed.clone();
            let client = client.clone();
            match kind {
                RecordKind::Secret => tokio::spawn(
                    drive(feed, source, watch_stream::<SecretRecord>(client, ns)).instrument(span),
                ),
                RecordKind::ConfigMap => tokio::spawn(
                    drive(feed, source, watch_stream::<ConfigMapRecord>(client, ns))
                        .instrument(span),
                ),
            }
        })
        .collect();
    // Superseded revisions a list left unread are read after the cold start, only for an
    // inventory attached to the feed (see `reader`).
    tasks.push(tokio::spawn(reader::run(
        client.clone(),
        feed.clone(),
        config.configmaps,
    )));
    tasks
}
