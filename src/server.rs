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
//! Each body is parsed once into a typed view ([`admission::prepare`]): small bodies on the async
//! worker (tens of microseconds, less than a hand-off), large ones on the blocking pool under
//! the deadline, so a pathological body can neither stall the async workers nor outlive the
//! webhook timeout. The decision itself is pure and takes microseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum_server::tls_rustls::RustlsConfig;
use tracing::{Level, warn};

use prometheus_client::registry::Registry;

use crate::admission::{self, NotChecked, Outcome, rfc3339};
use crate::events::{self, EventQueue};
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
    /// Where the `reviewed` lines go without tracing's formatter (`serve`'s JSON log writer);
    /// `None`: through tracing, like every other line.
    pub request_log: Option<Arc<dyn RequestLog>>,
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
            request_log: None,
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

/// Limits and defaults of the webhook server.
#[derive(Clone, Debug)]
pub struct ServeLimits {
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Answer (or give up) within this time; keep it below the webhook's `timeoutSeconds`.
    pub deadline: Duration,
}

impl Default for ServeLimits {
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
    /// The same settings for each mode (enforce, audit, off), built once.
    by_mode: [Settings; 3],
    limits: ServeLimits,
    ready: Arc<AtomicBool>,
    /// Set when shutdown begins: `/readyz` answers 503 from then on.
    draining: Arc<AtomicBool>,
    extras: Extras,
}

impl AppState {
    pub fn new(
        releases: SharedIndex,
        settings: Settings,
        limits: ServeLimits,
        ready: Arc<AtomicBool>,
    ) -> Self {
        Self::with_extras(releases, settings, limits, ready, Extras::default())
    }

    pub fn with_extras(
        releases: SharedIndex,
        settings: Settings,
        limits: ServeLimits,
        ready: Arc<AtomicBool>,
        extras: Extras,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                releases,
                by_mode: [Mode::Enforce, Mode::Audit, Mode::Off].map(|mode| Settings {
                    mode,
                    ..settings.clone()
                }),
                settings,
                limits,
                ready,
                draining: Arc::new(AtomicBool::new(false)),
                extras,
            }),
        }
    }
}

impl Inner {
    fn settings(&self, mode: Mode) -> &Settings {
        match mode {
            Mode::Enforce => &self.by_mode[0],
            Mode::Audit => &self.by_mode[1],
            Mode::Off => &self.by_mode[2],
        }
    }
}

/// The webhook router (served over TLS).
pub fn router(state: AppState) -> Router {
    let max_body = state.inner.limits.max_body_bytes;
    let mut router = Router::new()
        .route("/validate", post(validate_default))
        .route("/validate/{mode}", post(unknown_mode))
        .route("/mutate", post(mutate_default))
        .route("/mutate/{mode}", post(unknown_mode));
    // The known modes as routes of their own (a static segment is matched before `{mode}`):
    // no path parameter to extract and parse on every request.
    for webhook in [Webhook::Validate, Webhook::Mutate] {
        for mode in [Mode::Enforce, Mode::Audit, Mode::Off] {
            let path = format!("/{}/{}", webhook.as_str(), mode.as_str());
            router = router.route(
                &path,
                post(move |State(s): State<AppState>, body: Body| admit(s, webhook, mode, body)),
            );
        }
    }
    router
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

/// `/validate/{mode}` and `/mutate/{mode}` for a mode that is not one of the known ones
/// (those have routes of their own).
async fn unknown_mode() -> Response {
    (StatusCode::NOT_FOUND, "unknown mode\n").into_response()
}

/// Workload reviews up to this size are reviewed on the serving thread: parsing them takes
/// tens of microseconds, less than a hand-off to the blocking pool. Larger ones go to the
/// pool, under the deadline, so they can neither stall the thread nor outlive the webhook
/// timeout. So does every body the one-pass reading does not take — release records above
/// all, whose decode grows with the size of the gzipped release inside, not of the body.
const INLINE_MAX: usize = 64 << 10;

async fn admit(s: AppState, webhook: Webhook, mode: Mode, body: Body) -> Response {
    let started = Instant::now();
    let deadline_at = tokio::time::Instant::from_std(started) + s.inner.limits.deadline;
    let prepared = match prepare(&s, mode, body, deadline_at).await {
        Ok(p) => p,
        Err(refused) => {
            s.inner
                .observe(webhook, mode, started, ("", "error", "none"));
            return refused;
        }
    };
    // Fallback: only when the index lacks the release the request names (or the pending
    // revision a Helm write needs); bounded by its own timeout and the request deadline.
    // Boxed: the lookup's future is ~4 KiB, and held inline it made every request's future
    // that large, copied as axum boxes it.
    if let Some(fallback) = &s.inner.extras.fallback
        && let Some((key, want)) = prepared
            .facts()
            .and_then(|f| lookup::hint(f, &s.inner.settings.actors.helm_managers))
        && !fallback.satisfied(&key, want)
    {
        let _ = tokio::time::timeout_at(deadline_at, Box::pin(fallback.ensure(&key, want))).await;
    }
    let now = rfc3339(SystemTime::now());
    let reviewed = prepared.decide(webhook, &*s.inner.releases, s.inner.settings(mode), &now);
    s.inner.record(webhook, mode, started, &reviewed);
    (
        [(header::CONTENT_TYPE, "application/json")],
        reviewed.to_json(),
    )
        .into_response()
}

/// Reads the body within the deadline (an oversized Content-Length is refused before any of
/// it is read: no `100 Continue`) and parses it once: inline when small, on the blocking pool
/// under the deadline when large. A non-2xx answer when it cannot: the failure policy decides.
async fn prepare(
    s: &AppState,
    mode: Mode,
    body: Body,
    deadline_at: tokio::time::Instant,
) -> Result<admission::Prepared, Response> {
    let body = transport::read_body(body, s.inner.limits.max_body_bytes, deadline_at)
        .await
        .map_err(|error| {
            warn!(%error, "request body refused; failure policy decides");
            error.into_response()
        })?;
    let inline = body.len() <= INLINE_MAX;
    if inline && let Some(prepared) = admission::prepare_typed(&body, s.inner.settings(mode)) {
        return Ok(prepared);
    }
    let state = s.clone();
    let work = tokio::task::spawn_blocking(move || {
        let settings = state.inner.settings(mode);
        // A body the typed pass already declined here is not given it a second time.
        if inline {
            admission::prepare_careful(&body, settings)
        } else {
            admission::prepare(&body, settings)
        }
    });
    match tokio::time::timeout_at(deadline_at, work).await {
        Ok(Ok(p)) => Ok(p),
        Ok(Err(error)) => {
            warn!(%error, "review task failed");
            Err((StatusCode::INTERNAL_SERVER_ERROR, "review failed\n").into_response())
        }
        Err(_) => {
            let deadline_ms = s.inner.limits.deadline.as_millis() as u64;
            warn!(deadline_ms, "deadline passed; failure policy decides");
            Err((StatusCode::SERVICE_UNAVAILABLE, "deadline passed\n").into_response())
        }
    }
}

/// A log line about one request: its identity (uid, namespace, kind, name, operation) as
/// strings, then the line's own fields and message.
macro_rules! request_line {
    ($level:expr, $m:expr, $($rest:tt)+) => {
        tracing::event!(
            $level,
            uid = $m.uid.as_str(),
            namespace = $m.namespace.as_str(),
            kind = $m.kind.as_str(),
            name = $m.name.as_str(),
            operation = $m.operation,
            $($rest)+
        )
    };
}

/// The `info` line of a judged request that left a trace (a denial, drift, break-glass,
/// stale values): the line the audit trail rests on, written on every such request.
#[derive(Debug)]
pub struct ReviewedLine<'a> {
    pub meta: &'a admission::RequestMeta,
    pub webhook: &'static str,
    pub mode: &'static str,
    pub verdict: &'static str,
    pub actor: &'static str,
    pub drifts: usize,
    pub stale_values: usize,
}

impl ReviewedLine<'_> {
    /// The line as a tracing event (target `helm_guard::server`, message `reviewed`).
    pub fn trace(&self) {
        request_line!(
            Level::INFO,
            self.meta,
            webhook = self.webhook,
            mode = self.mode,
            verdict = self.verdict,
            actor = self.actor,
            dry_run = self.meta.dry_run,
            drifts = self.drifts,
            stale_values = self.stale_values,
            "reviewed"
        );
    }
}

/// Writes [`ReviewedLine`]s itself. In the request path the tracing event, its field
/// visitors and formatter cost ~1 µs of a ~27 µs request in place (measured: the same
/// server with the line written directly is as fast as with it switched off); the sink
/// writes the same bytes — `cli::json_line` tests they are equal — in one pass. It is
/// used only while an `info` event of this module with the line's fields is enabled, so
/// `RUST_LOG` (field-name directives included) filters it as it would the event.
pub trait RequestLog: Send + Sync {
    fn reviewed(&self, line: &ReviewedLine<'_>);
}

impl Inner {
    /// Counts a request: `(kind, verdict, actor)`.
    fn observe(
        &self,
        webhook: Webhook,
        mode: Mode,
        started: Instant,
        (kind, verdict, actor): (&str, &'static str, &'static str),
    ) {
        self.extras.metrics.admission.observe(
            Observation {
                webhook: webhook.as_str(),
                mode: mode.as_str(),
                kind,
                verdict,
                actor,
            },
            started.elapsed(),
        );
    }

    /// Logs, counts and queues the Events of a reviewed request. A denial, audited drift,
    /// break-glass or stale values leave an `info` line; what was simply allowed, `debug`.
    fn record(
        &self,
        webhook: Webhook,
        mode: Mode,
        started: Instant,
        reviewed: &admission::Reviewed,
    ) {
        let m = &reviewed.meta;
        let label = reviewed.outcome.label();
        let (webhook_name, mode_name) = (webhook.as_str(), mode.as_str());
        match &reviewed.outcome {
            Outcome::Judged(v) => {
                if !v.allowed || !v.warnings.is_empty() || !v.drifts.is_empty() || v.stale_pins > 0
                {
                    let line = ReviewedLine {
                        meta: m,
                        webhook: webhook_name,
                        mode: mode_name,
                        verdict: label,
                        actor: v.actor,
                        drifts: v.drifts.len(),
                        stale_values: v.stale_pins,
                    };
                    match &self.extras.request_log {
                        Some(log)
                            if tracing::enabled!(
                                kind: tracing::metadata::Kind::EVENT,
                                Level::INFO,
                                { uid, namespace, kind, name, operation, webhook, mode, verdict,
                                  actor, dry_run, drifts, stale_values, message }
                            ) =>
                        {
                            log.reviewed(&line)
                        }
                        _ => line.trace(),
                    }
                } else {
                    request_line!(
                        Level::DEBUG,
                        m,
                        webhook = webhook_name,
                        mode = mode_name,
                        verdict = label,
                        actor = v.actor,
                        "reviewed"
                    );
                }
                self.emit_events(m, &v.events);
                self.observe(webhook, mode, started, (&m.kind, label, v.actor));
                if v.stale_pins > 0 {
                    self.extras.metrics.stale_values.inc_by(v.stale_pins as u64);
                }
            }
            Outcome::NotChecked(NotChecked::NotGuarded) => {
                request_line!(Level::DEBUG, m, verdict = label, "not checked: not guarded");
                self.observe(webhook, mode, started, (&m.kind, label, "none"));
            }
            Outcome::NotChecked(NotChecked::Unreadable(error)) => {
                request_line!(
                    Level::WARN, m, verdict = label, %error, "not checked: unreadable object"
                );
                self.observe(webhook, mode, started, (&m.kind, label, "none"));
            }
            Outcome::Invalid(error) => {
                warn!(uid = %m.uid, verdict = label, %error, "invalid admission request");
                self.observe(webhook, mode, started, (&m.kind, label, "none"));
            }
        }
    }

    /// Queued, never awaited; nothing for dry runs.
    fn emit_events(&self, m: &admission::RequestMeta, intents: &[crate::policy::EventIntent]) {
        if let Some(events) = &self.extras.events
            && !intents.is_empty()
        {
            let object = events::request_ref(
                &m.api_version,
                &m.kind,
                &m.namespace,
                &m.name,
                m.object_uid.clone(),
            );
            events.emit(&object, intents, m.dry_run);
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A request's future is moved into a box by axum on every request: a rare, large await
    /// held inline (the fallback lookup's was ~4 KiB) made every request copy it.
    #[test]
    fn a_request_future_stays_small() {
        let state = AppState::new(
            SharedIndex::default(),
            Settings::new(Mode::Enforce),
            ServeLimits::default(),
            Arc::default(),
        );
        let future = admit(state, Webhook::Validate, Mode::Enforce, Body::empty());
        let size = std::mem::size_of_val(&future);
        assert!(size <= 1024, "admit's future is {size} bytes");
    }
}
