//! Prometheus metrics: one struct of metric families per component, registered in one
//! [`Registry`] and rendered as text by the admin listener's `GET /metrics`.
//!
//! Linkerd's pattern: `Metrics::register(&mut registry)` creates and registers every family
//! and returns handles that are cheap to clone (each family is an `Arc` inside) and are
//! handed to the component that records them: [`AdmissionMetrics`] to the request handler,
//! [`StoreMetrics`] to the watches ([`crate::watch`]), [`LookupMetrics`] to the fallback
//! ([`crate::lookup`]), [`EventMetrics`] to the Event queue ([`crate::events`]).
//!
//! Label values are bounded: webhook, mode, verdict and actor come from closed sets; `kind`
//! is the request's kind reduced to the kinds the webhook is registered for, anything else
//! is `other`, so a malformed request cannot mint series.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, seconds: 0.5 ms to 2.5 s (the default internal deadline).
pub const DURATION_BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Every metric of the process.
#[derive(Clone, Debug)]
pub struct Metrics {
    pub admission: AdmissionMetrics,
    pub store: StoreMetrics,
    pub lookups: LookupMetrics,
    pub events: EventMetrics,
    pub inventory: InventoryMetrics,
    /// Expiry (Unix seconds) of the serving certificate.
    pub tls_not_after: Gauge,
    /// Stale persisted image values found in release revisions Helm was writing.
    pub stale_values: Counter,
}

impl Metrics {
    /// Creates every family and registers it under the `helm_guard_` prefix.
    pub fn register(registry: &mut Registry) -> Self {
        let reg = registry.sub_registry_with_prefix("helm_guard");
        Self {
            admission: AdmissionMetrics::register(reg),
            store: StoreMetrics::register(reg),
            lookups: LookupMetrics::register(reg),
            events: EventMetrics::register(reg),
            inventory: InventoryMetrics::register(reg),
            stale_values: {
                let c = Counter::default();
                // Not `stale_image_values`: that family is the inventory's gauge, and one
                // exposition cannot carry a counter and a gauge of the same name.
                reg.register(
                    "stale_image_values_written",
                    "Image values persisted by an earlier revision that a new release revision re-applies against the chart (one per value path)",
                    c.clone(),
                );
                c
            },
            tls_not_after: {
                let g = Gauge::default();
                reg.register(
                    "tls_cert_not_after_seconds",
                    "Expiry of the serving certificate, Unix seconds",
                    g.clone(),
                );
                g
            },
        }
    }

    /// Metrics registered in a registry nobody reads: for tests and tools.
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }
}

/// Renders a registry in the Prometheus/OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The `Content-Type` of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

// === admission ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    webhook: &'static str,
    mode: &'static str,
    kind: &'static str,
    verdict: &'static str,
    actor: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    webhook: &'static str,
}

/// Admission requests and their latency.
#[derive(Clone, Debug)]
pub struct AdmissionMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<WebhookLabels, Histogram>,
}

/// One admission request, as counted.
#[derive(Clone, Copy, Debug)]
pub struct Observation<'a> {
    /// `validate` | `mutate`.
    pub webhook: &'static str,
    /// `enforce` | `audit` | `off`.
    pub mode: &'static str,
    /// The request's kind (`Deployment`, …); anything unexpected is counted as `other`.
    pub kind: &'a str,
    /// `allowed` | `denied` | `warned` | `not-checked` | `error`.
    pub verdict: &'static str,
    /// The actor class (`helm`, `kubectl`, `exempt`, `other`, `helm-unverified`), or `none`
    /// when the request could not be read.
    pub actor: &'static str,
}

impl AdmissionMetrics {
    fn register(reg: &mut Registry) -> Self {
        let requests = Family::default();
        reg.register(
            "admission_requests",
            "Admission requests by webhook, mode, kind, verdict (allowed|denied|warned|not-checked|error) and actor class",
            requests.clone(),
        );
        let duration = Family::<WebhookLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(DURATION_BUCKETS)
        });
        reg.register(
            "admission_duration_seconds",
            "Time to answer an admission request, by webhook",
            duration.clone(),
        );
        Self { requests, duration }
    }

    /// Counts one answered request and its latency.
    pub fn observe(&self, o: Observation<'_>, elapsed: Duration) {
        self.requests
            .get_or_create(&RequestLabels {
                webhook: o.webhook,
                mode: o.mode,
                kind: kind_label(o.kind),
                verdict: o.verdict,
                actor: o.actor,
            })
            .inc();
        self.duration
            .get_or_create(&WebhookLabels { webhook: o.webhook })
            .observe(elapsed.as_secs_f64());
    }
}

/// The request kinds the webhook is registered for; anything else is `other`.
fn kind_label(kind: &str) -> &'static str {
    const KNOWN: [&str; 9] = [
        "Deployment",
        "StatefulSet",
        "DaemonSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "Pod",
        "Secret",
        "ConfigMap",
    ];
    KNOWN.into_iter().find(|k| *k == kind).unwrap_or("other")
}

// === store ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResourceLabels {
    resource: &'static str,
}

/// The release store and the watches feeding it.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    releases: Gauge,
    decode_failures: Family<ReasonLabels, Counter>,
    watch_restarts: Family<ResourceLabels, Counter>,
    stale: Gauge,
}

impl StoreMetrics {
    fn register(reg: &mut Registry) -> Self {
        let releases = Gauge::default();
        reg.register(
            "releases_indexed",
            "Helm releases in the in-memory index",
            releases.clone(),
        );
        let decode_failures = Family::default();
        reg.register(
            "release_decode_failures",
            "Release records skipped because they could not be decoded, by reason",
            decode_failures.clone(),
        );
        let watch_restarts = Family::default();
        reg.register(
            "watch_restarts",
            "Errors of a release watch (each is followed by a backed-off retry), by resource",
            watch_restarts.clone(),
        );
        let stale = Gauge::default();
        reg.register(
            "store_stale",
            "1 while some release watch has not (re)completed its list since starting or failing; the last known state is served",
            stale.clone(),
        );
        Self {
            releases,
            decode_failures,
            watch_restarts,
            stale,
        }
    }

    pub fn set_releases(&self, n: usize) {
        self.releases.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// `reason` is [`crate::helm::DecodeError::label`].
    pub fn decode_failed(&self, reason: &'static str) {
        self.decode_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// `resource` is `secrets` or `configmaps`.
    pub fn watch_restarted(&self, resource: &'static str) {
        self.watch_restarts
            .get_or_create(&ResourceLabels { resource })
            .inc();
    }

    pub fn set_stale(&self, stale: bool) {
        self.stale.set(i64::from(stale));
    }
}

// === lookups ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

/// Fallback lookups of releases the index did not know.
#[derive(Clone, Debug)]
pub struct LookupMetrics {
    lookups: Family<ResultLabels, Counter>,
}

impl LookupMetrics {
    fn register(reg: &mut Registry) -> Self {
        let lookups = Family::default();
        reg.register(
            "fallback_lookups",
            "Fallback lookups of releases missing from the index, by result (found|missing|cached_missing|timeout|error|invalid)",
            lookups.clone(),
        );
        Self { lookups }
    }

    pub fn count(&self, result: &'static str) {
        self.lookups.get_or_create(&ResultLabels { result }).inc();
    }
}

// === events ===

/// Kubernetes Events emitted after responses.
#[derive(Clone, Debug)]
pub struct EventMetrics {
    events: Family<ResultLabels, Counter>,
}

impl EventMetrics {
    fn register(reg: &mut Registry) -> Self {
        let events = Family::default();
        reg.register(
            "events",
            "Kubernetes Events, by result (sent|dropped|failed)",
            events.clone(),
        );
        Self { events }
    }

    /// `result` is `sent`, `dropped` (queue full) or `failed` (the API refused or timed out).
    pub fn count(&self, result: &'static str) {
        self.events.get_or_create(&ResultLabels { result }).inc();
    }
}

// === inventory ===

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NamespaceLabels {
    namespace: String,
}

/// The live drift inventory ([`crate::inventory`]): one series per namespace with findings,
/// never per object; a namespace whose findings are gone loses its series.
#[derive(Clone, Debug)]
pub struct InventoryMetrics {
    drifted: Family<NamespaceLabels, Gauge>,
    stale: Family<NamespaceLabels, Gauge>,
    last_sync: Gauge,
}

impl InventoryMetrics {
    fn register(reg: &mut Registry) -> Self {
        let drifted = Family::default();
        reg.register(
            "drifted_containers",
            "Containers running an image their release does not render, or added by a writer that is not Helm (break-glass excluded), by namespace",
            drifted.clone(),
        );
        let stale = Family::default();
        reg.register(
            "stale_image_values",
            "Stale persisted image values in the newest revision of the namespace's releases, by namespace",
            stale.clone(),
        );
        let last_sync = Gauge::default();
        reg.register(
            "inventory_last_sync_timestamp_seconds",
            "When every watched workload kind last completed a list and was judged, Unix seconds",
            last_sync.clone(),
        );
        Self {
            drifted,
            stale,
            last_sync,
        }
    }

    /// Publishes a namespace's totals; zero removes its series.
    pub fn set_namespace(&self, namespace: &str, counts: crate::inventory::Counts) {
        let labels = NamespaceLabels {
            namespace: namespace.to_owned(),
        };
        for (family, n) in [(&self.drifted, counts.drifted), (&self.stale, counts.stale)] {
            if n == 0 {
                family.remove(&labels);
            } else {
                family
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
        }
    }

    pub fn set_last_sync(&self, at: std::time::SystemTime) {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_sync.set(i64::try_from(secs).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_named_as_documented() {
        let mut registry = Registry::default();
        let m = Metrics::register(&mut registry);
        m.admission.observe(
            Observation {
                webhook: "validate",
                mode: "enforce",
                kind: "Deployment",
                verdict: "denied",
                actor: "kubectl",
            },
            Duration::from_millis(3),
        );
        m.admission.observe(
            Observation {
                webhook: "mutate",
                mode: "audit",
                kind: "Frobnicator",
                verdict: "allowed",
                actor: "none",
            },
            Duration::from_micros(300),
        );
        m.store.set_releases(3);
        m.store.decode_failed("gzip");
        m.store.watch_restarted("secrets");
        m.store.set_stale(true);
        m.lookups.count("found");
        m.events.count("dropped");
        let text = encode(&registry);
        for want in [
            r#"helm_guard_admission_requests_total{webhook="validate",mode="enforce",kind="Deployment",verdict="denied",actor="kubectl"} 1"#,
            r#"kind="other""#,
            r#"helm_guard_admission_duration_seconds_bucket{le="0.005",webhook="validate"} 1"#,
            "helm_guard_releases_indexed 3",
            r#"helm_guard_release_decode_failures_total{reason="gzip"} 1"#,
            r#"helm_guard_watch_restarts_total{resource="secrets"} 1"#,
            "helm_guard_store_stale 1",
            r#"helm_guard_fallback_lookups_total{result="found"} 1"#,
            r#"helm_guard_events_total{result="dropped"} 1"#,
        ] {
            assert!(text.contains(want), "missing {want} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
