//! The HTTPS webhook server: routes, limits, deadline, health. The listeners, their
//! timeouts and the drain on shutdown are src/transport.rs.
//!
//! Failure handling is deliberate per kind of failure, because a non-2xx answer hands the
//! outcome to the webhook's `failurePolicy` while a 200 answer decides it:
//!
//! | failure                         | answer                                                    |
//! |---------------------------------|-----------------------------------------------------------|
//! | body is not an AdmissionReview  | 200, `allowed: false`, code 400 (a real API server never sends one) |
//! | body larger than the limit      | 413: the failure policy decides (Ignore lets it through)  |
//! | internal deadline passed        | 503: the failure policy decides, before the API server's own timeout |
//! | unknown mode in the path        | 404: a misconfigured webhook should be loud               |
//!
//! The decision itself runs on the blocking pool under the deadline, so a pathological body
//! can neither stall the async workers nor outlive the webhook timeout.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use tracing::{Instrument, field, info, info_span, warn};

use prometheus_client::registry::Registry;

use crate::admission::{self, rfc3339};
use crate::events::EventQueue;
use crate::lookup::{self, Fallback};
use crate::metrics::{self, Metrics, Observation};
use crate::policy::{Mode, Settings, Webhook};
use crate::store::SharedIndex;
use crate::transport;

pub use crate::transport::Running;

/// Every route the router serves, `(method, path)`: the deploy kit is checked against it.
pub const ROUTES: &[(&str, &str)] = &[
    ("POST", "/validate"),
    ("POST", "/validate/enforce"),
    ("POST", "/validate/audit"),
    ("POST", "/validate/off"),
    ("POST", "/mutate"),
    ("POST", "/mutate/enforce"),
    ("POST", "/mutate/audit"),
    ("POST", "/mutate/off"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
];

/// Routes of the plain-HTTP admin listener (probes, metrics).
pub const ADMIN_ROUTES: &[(&str, &str)] =
    &[("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics")];

/// The cluster side of the server: metrics, fallback lookups, Events. `Default` is what a
/// file-backed server has: metrics kept (and exposed), no lookups, no Events.
#[derive(Clone)]
pub struct Extras {
    pub metrics: Metrics,
    pub registry: Arc<Registry>,
    pub fallback: Option<Arc<Fallback>>,
    pub events: Option<EventQueue>,
}

impl Default for Extras {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Metrics::register(&mut registry);
        Self {
            metrics,
            registry: Arc::new(registry),
            fallback: None,
            events: None,
        }
    }
}

/// Server failures.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// Binding or serving failed.
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// Limits and defaults of the webhook.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Answer (or give up) within this time; keep it below the webhook's `timeoutSeconds`.
    pub deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            deadline: Duration::from_millis(2500),
        }
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

struct Inner {
    releases: SharedIndex,
    /// Settings with the default mode; the path may override the mode.
    settings: Settings,
    limits: Limits,
    ready: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    draining: Arc<AtomicBool>,
    extras: Extras,
}

impl AppState {
    pub fn new(
        releases: SharedIndex,
        settings: Settings,
        limits: Limits,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self::with_extras(releases, settings, limits, ready, Extras::default())
    }

    pub fn with_extras(
        releases: SharedIndex,
        settings: Settings,
        limits: Limits,
        ready: Arc<AtomicBool>,
        extras: Extras,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                releases,
                settings,
                limits,
                ready,
                draining: Arc::new(AtomicBool::new(false)),
                extras,
            }),
        }
    }
}

/// The webhook router (served over TLS).
pub fn router(state: AppState) -> Router {
    let max_body = state.inner.limits.max_body_bytes;
    Router::new()
        .route("/validate", post(validate_default))
        .route("/validate/{mode}", post(validate_mode))
        .route("/mutate", post(mutate_default))
        .route("/mutate/{mode}", post(mutate_mode))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

/// The admin router (plain HTTP, for probes).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_handler))
        .with_state(state)
}

async fn metrics_handler(State(s): State<AppState>) -> Response {
    let body = metrics::encode(&s.inner.extras.registry);
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<AppState>) -> Response {
    if s.inner.draining.load(Ordering::Acquire) {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response()
    } else if s.inner.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "release store not synced\n",
        )
            .into_response()
    }
}

async fn validate_default(State(s): State<AppState>, body: Body) -> Response {
    let mode = s.inner.settings.mode;
    admit(s, Webhook::Validate, mode, body).await
}

async fn mutate_default(State(s): State<AppState>, body: Body) -> Response {
    let mode = s.inner.settings.mode;
    admit(s, Webhook::Mutate, mode, body).await
}

async fn validate_mode(
    State(s): State<AppState>,
    Path(mode): Path<String>,
    body: Body,
) -> Response {
    match Mode::parse(&mode) {
        Some(m) => admit(s, Webhook::Validate, m, body).await,
        None => (StatusCode::NOT_FOUND, "unknown mode\n").into_response(),
    }
}

async fn mutate_mode(State(s): State<AppState>, Path(mode): Path<String>, body: Body) -> Response {
    match Mode::parse(&mode) {
        Some(m) => admit(s, Webhook::Mutate, m, body).await,
        None => (StatusCode::NOT_FOUND, "unknown mode\n").into_response(),
    }
}

async fn admit(s: AppState, webhook: Webhook, mode: Mode, body: Body) -> Response {
    let span = info_span!(
        "admission",
        webhook = webhook.as_str(),
        mode = mode.as_str(),
        uid = field::Empty,
        namespace = field::Empty,
        kind = field::Empty,
        name = field::Empty,
        operation = field::Empty,
        verdict = field::Empty,
        actor = field::Empty,
    );
    let started = Instant::now();
    let deadline = s.inner.limits.deadline;
    let deadline_at = tokio::time::Instant::now() + deadline;
    async move {
        // The body is read within the deadline; an oversized Content-Length is refused before
        // any of it is read (no `100 Continue`).
        let body =
            match transport::read_body(body, s.inner.limits.max_body_bytes, deadline_at).await {
                Ok(body) => body,
                Err(error) => {
                    warn!(%error, "request body refused; failure policy decides");
                    return error.into_response();
                }
            };
        // Fallback: only when the index lacks the release the request names (or the pending
        // revision a Helm write needs); bounded by its own timeout and the request deadline.
        if let Some(fallback) = &s.inner.extras.fallback
            && let Some((key, want)) = lookup::hint(&body, &s.inner.settings.actors.helm_managers)
        {
            let _ = tokio::time::timeout_at(deadline_at, fallback.ensure(&key, want)).await;
        }
        let work = {
            let s = s.clone();
            let body = body.clone();
            tokio::task::spawn_blocking(move || {
                let mut settings = s.inner.settings.clone();
                settings.mode = mode;
                let now = rfc3339(SystemTime::now());
                admission::review_body(webhook, &body, &*s.inner.releases, &settings, &now)
            })
        };
        let observe = |kind: &str, verdict: &'static str, actor: &'static str| {
            s.inner.extras.metrics.admission.observe(
                Observation {
                    webhook: webhook.as_str(),
                    mode: mode.as_str(),
                    kind,
                    verdict,
                    actor,
                },
                started.elapsed(),
            );
        };
        let reviewed = match tokio::time::timeout_at(deadline_at, work).await {
            Ok(Ok(r)) => r,
            Ok(Err(error)) => {
                warn!(%error, "review task failed");
                observe("", "error", "none");
                return (StatusCode::INTERNAL_SERVER_ERROR, "review failed\n").into_response();
            }
            Err(_) => {
                warn!(
                    deadline_ms = deadline.as_millis() as u64,
                    "deadline passed; failure policy decides"
                );
                observe("", "error", "none");
                return (StatusCode::SERVICE_UNAVAILABLE, "deadline passed\n").into_response();
            }
        };
        let span = tracing::Span::current();
        let m = &reviewed.meta;
        span.record("uid", m.uid.as_str());
        span.record("namespace", m.namespace.as_str());
        span.record("kind", m.kind.as_str());
        span.record("name", m.name.as_str());
        span.record("operation", m.operation);
        match &reviewed.verdict {
            Some(v) => {
                span.record("verdict", v.outcome().label());
                span.record("actor", v.actor);
                info!(dry_run = m.dry_run, drifts = v.drifts.len(), "reviewed");
                // Queued, never awaited; nothing for dry runs.
                if let Some(events) = &s.inner.extras.events {
                    events.emit_for_review(&body, &v.events, m.dry_run);
                }
                observe(&m.kind, v.outcome().label(), v.actor);
                if v.stale_pins > 0 {
                    s.inner
                        .extras
                        .metrics
                        .stale_values
                        .inc_by(v.stale_pins as u64);
                }
            }
            None => {
                span.record("verdict", "error");
                let message = reviewed.review["response"]["status"]["message"]
                    .as_str()
                    .unwrap_or_default();
                warn!(message, "unreadable admission request");
                observe(&m.kind, "error", "none");
            }
        }
        let body = serde_json::to_vec(&reviewed.review).unwrap_or_default();
        ([(header::CONTENT_TYPE, "application/json")], body).into_response()
    }
    .instrument(span)
    .await
}

/// Binds the TLS listener (and the admin listener) and serves in background tasks, with the
/// default timeouts and limits.
pub async fn start(
    state: AppState,
    tls: RustlsConfig,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
) -> Result<Running, ServerError> {
    start_with(state, tls, listen, admin, transport::Settings::default()).await
}

/// [`start`] with explicit timeouts and limits.
pub async fn start_with(
    state: AppState,
    tls: RustlsConfig,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    settings: transport::Settings,
) -> Result<Running, ServerError> {
    let draining = state.inner.draining.clone();
    let admin = admin.map(|a| (admin_router(state.clone()), a));
    transport::start(router(state), tls, listen, admin, settings, draining).await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
