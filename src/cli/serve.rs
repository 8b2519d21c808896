//! `serve`: wiring the release index (cluster watches or files), the inventory and reports,
//! the serving certificate, the HTTPS server and the drain on SIGTERM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::Context as _;
use tokio::task::JoinHandle;

use super::args::{ReportsArg, ServeArgs};
use crate::metrics::Metrics;
use crate::server::{self, AppState};
use crate::store::{Index, SharedIndex, load_files};
use crate::{events, lookup, reload, transport, watch};

/// Serves until SIGTERM, then drains. `cluster_rt` runs the cluster side (watches, inventory,
/// reports, Events) when the index comes from the cluster; without one it runs here.
pub(super) async fn serve(
    a: ServeArgs,
    request_log: Option<Arc<dyn server::RequestLog>>,
    cluster_rt: Option<tokio::runtime::Handle>,
) -> anyhow::Result<()> {
    let a = Arc::new(a);
    let ready = Arc::new(AtomicBool::new(false));
    let mut registry = prometheus_client::registry::Registry::default();
    let metrics = Metrics::register(&mut registry);
    let mut extras = server::Extras {
        metrics: metrics.clone(),
        registry: Arc::new(registry),
        fallback: None,
        events: None,
        request_log,
    };
    let mut background = Vec::new();
    let index = if a.releases.is_empty() {
        let side = cluster(a.clone(), ready.clone(), metrics.clone());
        let side = match cluster_rt {
            Some(rt) => rt
                .spawn(side)
                .await
                .context("the cluster runtime stopped")??,
            None => side.await?,
        };
        extras.fallback = Some(side.fallback);
        extras.events = Some(side.events);
        background.extend(side.tasks);
        side.index
    } else {
        files(&a, &metrics, &ready)?
    };
    let config = certificate(&a, &metrics, &mut background).await?;
    let state = AppState::with_extras(
        index,
        a.policy.settings(a.default_mode.into()),
        server::ServeLimits {
            max_body_bytes: a.max_body_bytes,
            deadline: Duration::from_millis(a.deadline_ms),
        },
        ready,
        extras,
    );
    let running = server::start_with(
        state,
        config,
        a.listen,
        Some(a.admin_listen),
        transport::Settings {
            handshake_timeout: Duration::from_millis(a.handshake_timeout_ms),
            header_timeout: Duration::from_millis(a.header_timeout_ms),
            idle_timeout: Duration::from_secs(a.idle_timeout_seconds),
            max_connections: a.max_connections.max(1),
            admin_max_connections: a.admin_max_connections.max(1),
        },
    )
    .await?;
    let (arenas, background_thread) = crate::allocator::settings();
    tracing::info!(
        listen = %running.addr, admin = ?running.admin_addr,
        allocator_arenas = arenas, allocator_background_thread = background_thread,
        "serving"
    );
    server::shutdown_signal().await;
    tracing::info!(
        grace_seconds = a.shutdown_grace_seconds,
        drain_seconds = a.drain_seconds,
        "shutting down: /readyz answers 503, clients are told to close"
    );
    let drained = running
        .drain(
            Duration::from_secs(a.shutdown_grace_seconds),
            Duration::from_secs(a.drain_seconds),
        )
        .await;
    transport::log_drained(drained);
    for t in background {
        t.abort();
    }
    Ok(())
}

/// What the cluster side hands the server.
struct ClusterSide {
    index: SharedIndex,
    fallback: Arc<lookup::Fallback>,
    events: events::EventQueue,
    /// Its tasks, aborted when the server has drained.
    tasks: Vec<JoinHandle<()>>,
}

/// The release index fed by the cluster: watches of the release records, the inventory and
/// reports when asked for, fallback lookups and Events. Everything it spawns runs on the
/// runtime that awaits it (`serve`'s cluster runtime). The serving thread never drives the
/// client itself: a fallback lookup runs its API calls as tasks of this runtime (`lookup`),
/// and Events go through a queue whose sender is a task here.
async fn cluster(
    a: Arc<ServeArgs>,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
) -> anyhow::Result<ClusterSide> {
    let a = &*a;
    let mut background = Vec::new();
    let client = kube::Client::try_default()
        .await
        .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?;
    let index: SharedIndex = Arc::new(RwLock::new(Index::default()));
    let feed = watch::Feed::new(
        index.clone(),
        a.policy.limits(),
        metrics.store.clone(),
        ready.clone(),
    );
    let config = watch::WatchConfig {
        namespaces: a.watch_namespaces.clone(),
        configmaps: a.configmap_releases,
        limits: a.policy.limits(),
    };
    background.extend(watch::spawn(&client, &config, &feed));
    if a.inventory || a.reports == ReportsArg::Openreports {
        inventory(a, &client, &feed, &index, &metrics, &mut background).await;
    }
    let fallback = Arc::new(lookup::Fallback::new(
        client.clone(),
        feed,
        lookup::FallbackConfig {
            timeout: Duration::from_millis(a.lookup_timeout_ms),
            configmaps: a.configmap_releases,
            ..lookup::FallbackConfig::default()
        },
        metrics.lookups.clone(),
    ));
    let (events, task) = events::EventQueue::spawn(
        client,
        events::reporter(a.pod_name.as_deref()),
        a.event_queue,
        metrics.events.clone(),
    );
    background.push(task);
    tracing::info!(namespaces = ?a.watch_namespaces, configmaps = a.configmap_releases, "watching release records");
    Ok(ClusterSide {
        index,
        fallback,
        events,
        tasks: background,
    })
}

/// The live drift inventory, and the OpenReports writer on top of it.
async fn inventory(
    a: &ServeArgs,
    client: &kube::Client,
    feed: &watch::Feed,
    index: &SharedIndex,
    metrics: &Metrics,
    background: &mut Vec<JoinHandle<()>>,
) {
    let changes = Arc::new(crate::inventory::Changes::default());
    feed.notify_changes(changes.clone());
    let (state, tasks) = crate::inventory::spawn(
        client,
        &crate::inventory::InventoryConfig {
            namespaces: a.watch_namespaces.clone(),
            helm_managers: a.policy.helm_managers.clone(),
        },
        index.clone(),
        changes,
        metrics.inventory.clone(),
    );
    background.extend(tasks);
    tracing::info!("drift inventory: watching the guarded workload kinds");
    if a.reports != ReportsArg::Openreports {
        return;
    }
    let lease = crate::reports::LeaseConfig {
        namespace: a.pod_namespace.clone(),
        identity: a
            .pod_name
            .clone()
            .unwrap_or_else(|| format!("helm-guard-{}", std::process::id())),
    };
    let interval = Duration::from_secs(a.reports_interval_seconds.max(1));
    match crate::reports::start(client, state, &lease, interval).await {
        Ok(tasks) => {
            background.extend(tasks);
            tracing::info!(lease_namespace = %lease.namespace, "reports: OpenReports written by the Lease holder");
        }
        // Said once; admission and the gauges go on.
        Err(error) => tracing::warn!(%error, "reports: not writing OpenReports"),
    }
}

/// The release index from files (`--releases`): ready at once.
fn files(a: &ServeArgs, metrics: &Metrics, ready: &AtomicBool) -> anyhow::Result<SharedIndex> {
    if a.inventory {
        tracing::warn!("--inventory needs the cluster; ignored with --releases");
    }
    let (loaded, report) =
        load_files(&a.releases, a.policy.limits()).context("loading releases")?;
    for skipped in &report.skipped {
        tracing::warn!(record = %skipped, "release record does not decode; skipped");
    }
    tracing::info!(
        records = report.records,
        releases = loaded.len(),
        "release store loaded from files"
    );
    metrics.store.set_releases(loaded.len());
    metrics.store.set_stale(false);
    ready.store(true, Ordering::Release);
    Ok(Arc::new(RwLock::new(loaded)))
}

/// The serving certificate, re-read periodically through its path, so a rotated Secret
/// (kubelet's atomic `..data` symlink swap) is picked up without a restart.
async fn certificate(
    a: &ServeArgs,
    metrics: &Metrics,
    background: &mut Vec<JoinHandle<()>>,
) -> anyhow::Result<axum_server::tls_rustls::RustlsConfig> {
    let reloader = reload::CertReloader::load(a.tls_cert.clone(), a.tls_key.clone())
        .await
        .context("loading the serving certificate")?;
    let config = reloader.config();
    tracing::info!(not_after = ?reloader.not_after(), "serving certificate loaded");
    if let Some(t) = reloader.not_after() {
        metrics.tls_not_after.set(t);
    }
    let expiry = metrics.tls_not_after.clone();
    background.push(tokio::spawn(reloader.run(
        reload::DEFAULT_INTERVAL,
        move |outcome| {
            if let reload::ReloadOutcome::Reloaded { not_after: Some(t) } = outcome {
                expiry.set(*t);
            }
        },
    )));
    Ok(config)
}
